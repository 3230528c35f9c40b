"""Exit statuses of the batch job and the error that means "cannot start"."""
from __future__ import annotations

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_SETUP_ERROR = 2
EXIT_FATAL = 3
EXIT_INTERRUPTED = 130


class SetupError(RuntimeError):
    """Something the job needs before the first image is missing or broken (exit status 2)."""
