"""Profile check: a profile's settings run on this CPU through miniature twins (python -m agents.profile_check)."""
