"""The results browser: the output folder's files and writes (results), the batch report and per-image pages
(report), the HTML environment and helpers (html_render, html_text), and the edits strip on a result's page
(edit_strip). The templates live in agents/templates/ (shared with the interactive page)."""
