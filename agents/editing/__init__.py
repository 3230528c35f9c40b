"""Editing a recovered prompt (thesis §4.2.3): the edit language and its application to a result's prompt
(prompt_edit), and regenerating with the edited prompt (edit; ``python -m agents.edit`` is its command)."""
