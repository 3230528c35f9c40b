"""Small helpers shared by the command lines (``python -m ...`` and the ``expectdiff-*`` console scripts)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, TypeVar

T = TypeVar("T")


def prog_name(module: str) -> str:
    """The program name for help and usage texts: the console script's name when run as one
    (``expectdiff-reverse``), else ``python -m <module>``."""
    invoked = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return invoked if invoked.startswith("expectdiff-") else f"python -m {module}"


def parse_or_status(parse: Callable[[], T]) -> "T | int":
    """``parse()`` (an argparse call), or the exit status argparse chose instead of returning: 0 after
    ``--help``, 2 after bad arguments. The commands return their status rather than raise ``SystemExit``,
    so that ``main(argv)`` can be called as a function (tests, console scripts)."""
    try:
        return parse()
    except SystemExit as exc:
        return int(exc.code or 0)
