"""Small helpers shared by the command lines (``python -m ...`` and the ``expectdiff-*`` console scripts)."""
from __future__ import annotations

import sys
from pathlib import Path


def prog_name(module: str) -> str:
    """The program name for help and usage texts: the console script's name when run as one
    (``expectdiff-reverse``), else ``python -m <module>``."""
    invoked = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return invoked if invoked.startswith("expectdiff-") else f"python -m {module}"
