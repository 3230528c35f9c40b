"""``python -m agents.edit`` (also ``expectdiff-edit``) — edit a result's prompt and regenerate (agents.editing.edit)."""
import sys

from agents.editing.edit import main

if __name__ == "__main__":
    sys.exit(main())
