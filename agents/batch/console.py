"""What the batch job prints, and where its logs go.

By default the console shows the progress bar (agents.progress) and warnings and errors
only; everything else is kept in ``OUT/logs/``:

* ``job.log`` — the driver's own log (this process: the job, the agent, Ray's driver-side
  messages), INFO and up (DEBUG with ``--verbose``), appended on every run;
* ``<role>.log`` — one per model role (``t2i.log``, ``llm.log``, ...; an actor shared by
  several roles: ``llm+vlm.log``): what the Ray actor and everything it starts (vLLM's
  engine core, transformers) print or log. Only on a local Ray: a cluster's worker nodes
  may not see the output folder, so there the roles keep Ray's own logging (the driver's
  console / ``ray job logs``, and each node's ``/tmp/ray/session_latest/logs``).

``--verbose`` restores everything on the console: DEBUG logging, Ray's messages, and the
roles' output forwarded by Ray (``log_to_driver``); ``job.log`` is still written (the
driver's records, Ray's included, not the roles' output).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, TextIO

from agents.progress import ConsoleHandler

LOG_DIR = "logs"
JOB_LOG = "job.log"
CONSOLE_FORMAT = "%(levelname)s %(name)s: %(message)s"
FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: Loggers whose warnings are routine on every start (e.g. Ray's note that token
#: authentication is on): on the quiet console only their errors show; job.log keeps all.
QUIET_UNTIL_ERROR = ("ray",)


def log_dir(out_dir: Path) -> Path:
    return Path(out_dir) / LOG_DIR


class _QuietLibraries(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        return not any(record.name == n or record.name.startswith(n + ".") for n in QUIET_UNTIL_ERROR)


class JobLogging:
    """The batch job's logging setup, for the span of one ``main`` call (``with JobLogging(...)``).

    Installs a console handler on the root logger (WARNING and up; everything when
    ``verbose``), :meth:`open_job_log` adds ``OUT/logs/job.log``, and :meth:`adopt_ray_logger`
    sends Ray's driver-side logger (which prints to stderr by itself) into the same
    handlers. Leaving restores what was there before.
    """

    def __init__(self, verbose: bool = False, stream: Optional[TextIO] = None):
        self.verbose = verbose
        self.console = ConsoleHandler(stream, logging.DEBUG if verbose else logging.WARNING)
        self.console.setFormatter(logging.Formatter(CONSOLE_FORMAT))
        if not verbose:
            self.console.addFilter(_QuietLibraries())
        self.file_handler: Optional[logging.Handler] = None
        self._root_level: Optional[int] = None
        self._ray_state: Optional[tuple[list, bool, int]] = None
        self._captured_warnings = False

    @property
    def quiet(self) -> bool:
        return not self.verbose

    def __enter__(self) -> "JobLogging":
        root = logging.getLogger()
        self._root_level = root.level
        root.setLevel(logging.DEBUG if self.verbose else logging.INFO)
        root.addHandler(self.console)
        # Python warnings: through the console filter and into job.log (unless someone captures them already)
        self._captured_warnings = getattr(logging, "_warnings_showwarning", None) is None
        if self._captured_warnings:
            logging.captureWarnings(True)
        return self

    def open_job_log(self, out_dir: Path) -> Path:
        """Append the driver's log to ``OUT/logs/job.log`` (call while holding the output folder's lock)."""
        path = log_dir(out_dir) / JOB_LOG
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.file_handler is None:
            self.file_handler = logging.FileHandler(path, encoding="utf-8", errors="backslashreplace")
            self.file_handler.setLevel(logging.DEBUG if self.verbose else logging.INFO)
            self.file_handler.setFormatter(logging.Formatter(FILE_FORMAT))
            logging.getLogger().addHandler(self.file_handler)
        return path

    def adopt_ray_logger(self) -> None:
        """Route the ``ray`` logger (its own stderr handler, not propagating) through ours:
        job.log gets it; the console all of it when verbose, else only its errors. Call after
        importing ray, before ``ray.init``."""
        if self._ray_state is not None:
            return
        ray_logger = logging.getLogger("ray")
        self._ray_state = (list(ray_logger.handlers), ray_logger.propagate, ray_logger.level)
        for handler in list(ray_logger.handlers):
            ray_logger.removeHandler(handler)
        ray_logger.propagate = True

    def __exit__(self, *exc_info) -> None:
        root = logging.getLogger()
        root.removeHandler(self.console)
        if self.file_handler is not None:
            root.removeHandler(self.file_handler)
            self.file_handler.close()
            self.file_handler = None
        if self._root_level is not None:
            root.setLevel(self._root_level)
        if self._ray_state is not None:
            handlers, propagate, level = self._ray_state
            ray_logger = logging.getLogger("ray")
            for handler in handlers:
                ray_logger.addHandler(handler)
            ray_logger.propagate, ray_logger.level = propagate, level
            self._ray_state = None
        if self._captured_warnings:
            logging.captureWarnings(False)
