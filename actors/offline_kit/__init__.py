"""Offline model kit: tiny random-weight models in each real on-disk format.

Each module builds one role's model under a folder and returns that role's config
section (a dict for agents.config.ArpoConfig); ``python -m actors.offline_kit`` builds
them all and writes a config profile pointing every role at them. Their outputs are
meaningless (random weights): they exist to exercise the real loading and serving code
paths offline, and for plumbing and speed measurements only.
"""
