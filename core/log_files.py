"""Send a whole process's output to a log file: used by a model role's Ray actor, so what
vLLM, transformers and the role server print lands in ``OUT/logs/<role>.log``, not on the
console of the job that started it.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def redirect_output(log_file: str | os.PathLike, level: int = logging.INFO) -> None:
    """Append this process's stdout and stderr to ``log_file`` from now on.

    File descriptors 1 and 2 are pointed at the file (``os.dup2``), so native code and child
    processes started later (a vLLM engine-core process) write there too; ``sys.stdout`` and
    ``sys.stderr`` keep writing to those descriptors, line-buffered. Python logging gets a
    root handler on stderr at ``level`` when it has none, so the server's own records are
    kept. The file is opened for appending (a restarted actor or a rerun adds to it), never
    through a symlink.
    """
    path = Path(log_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0), 0o644)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
    finally:
        os.close(fd)
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if _writes_to(stream, 1 if name == "stdout" else 2):
            try:
                stream.reconfigure(line_buffering=True)
            except (AttributeError, ValueError):
                pass
        else:  # replaced by someone (e.g. a capturing wrapper): write to the descriptor ourselves
            setattr(sys, name, open(1 if name == "stdout" else 2, "w", buffering=1, encoding="utf-8",
                                    errors="backslashreplace", closefd=False))
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()  # sys.stderr, i.e. the file
        handler.setFormatter(logging.Formatter(FILE_FORMAT))
        root.addHandler(handler)
    if root.getEffectiveLevel() > level:
        root.setLevel(level)


def _writes_to(stream, fd: int) -> bool:
    try:
        return stream.fileno() == fd
    except (AttributeError, OSError, ValueError):
        return False
