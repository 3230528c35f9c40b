"""The batch job's progress on stderr: one bar (images done / failed / running, optimisation
iterations per second, ETA), and a logging handler that prints warnings and errors around it.

On a terminal the bar is redrawn in place (carriage return, at most every ``redraw_s``,
cut to the terminal's width so it never wraps); otherwise (a log file, ``ray job submit``,
``ray job logs``) a plain line without carriage returns or escape sequences is printed
every ``interval_s`` and when the run ends, so logs stay readable.

:class:`ConsoleHandler` writes log records to the same stream: on a terminal it clears
the bar first and redraws it after, so a warning never lands in the middle of the bar.
"""
from __future__ import annotations

import logging
import shutil
import sys
import threading
import time
from typing import Callable, Optional, TextIO

BAR_WIDTH = 20

# The bar drawn in place on each stream (by id), so a log line can clear it and redraw it.
_inline: dict[int, "Progress"] = {}
_lock = threading.RLock()


def format_duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class Progress:
    """Counts fed by the batch runner's events; ``tick`` redraws when it is time."""

    def __init__(self, total: int, skipped: int = 0, stream: Optional[TextIO] = None, is_tty: Optional[bool] = None,
                 interval_s: float = 10.0, redraw_s: float = 0.2, clock: Callable[[], float] = time.monotonic,
                 width: Optional[Callable[[], int]] = None):
        self.stream = stream if stream is not None else sys.stderr
        self.is_tty = bool(getattr(self.stream, "isatty", lambda: False)()) if is_tty is None else is_tty
        self.total = total  # images this run works on (skipped ones excluded)
        self.skipped = skipped  # already finished by an earlier run
        self.queued = total
        self.running = 0
        self.done = 0
        self.failed = 0
        self.iterations = 0
        self._clock = clock
        self._width = width or (lambda: shutil.get_terminal_size((100, 24)).columns)
        self._start = clock()
        self._last_draw = float("-inf")
        self._interval = interval_s if not self.is_tty else redraw_s
        self._drawn_inline = False

    # events -------------------------------------------------------------------
    def started(self) -> None:
        self.queued -= 1
        self.running += 1
        self.tick()

    def finished(self, ok: bool, iterations: int = 0, was_running: bool = True) -> None:
        if was_running:
            self.running -= 1
        else:  # failed before it started (e.g. unreadable file)
            self.queued -= 1
        if ok:
            self.done += 1
        else:
            self.failed += 1
        self.iterations += iterations
        self.tick()

    def iteration(self, n: int = 1) -> None:
        """Live iteration events, when the agent reports them."""
        self.iterations += n
        self.tick()

    # figures ------------------------------------------------------------------
    def elapsed(self) -> float:
        return self._clock() - self._start

    def rate(self) -> float:
        """Optimisation iterations per second since the start."""
        elapsed = self.elapsed()
        return self.iterations / elapsed if elapsed > 0 else 0.0

    def eta_s(self) -> Optional[float]:
        """Seconds until every image is finished at the rate images have finished so far; None before the first."""
        finished = self.done + self.failed
        remaining = self.total - finished
        if remaining <= 0:
            return 0.0
        elapsed = self.elapsed()
        if finished == 0 or elapsed <= 0:
            return None
        return remaining * elapsed / finished

    def _eta_text(self) -> str:
        eta = self.eta_s()
        return "ETA --" if eta is None else f"ETA {format_duration(eta)}"

    def line(self) -> str:
        """The plain line (logs, ``ray job submit``): every count, the rate, elapsed time and ETA."""
        text = (f"images {self.done + self.failed}/{self.total} | done {self.done} | failed {self.failed} | "
                f"running {self.running} | queued {self.queued} | {self.rate():.2f} it/s | "
                f"{format_duration(self.elapsed())} | {self._eta_text()}")
        if self.skipped:
            text += f" | {self.skipped} already finished"
        return text

    def bar(self) -> str:
        """The terminal bar, cut to the terminal's width."""
        finished = self.done + self.failed
        filled = BAR_WIDTH if self.total <= 0 else min(BAR_WIDTH, BAR_WIDTH * finished // self.total)
        text = (f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {finished}/{self.total} | done {self.done} | "
                f"failed {self.failed} | running {self.running} | {self.rate():.2f} it/s | {self._eta_text()}")
        if self.skipped:
            text += f" | {self.skipped} already finished"
        return text[:max(10, self._width() - 1)]

    # output -------------------------------------------------------------------
    def tick(self, force: bool = False) -> None:
        now = self._clock()
        if not force and now - self._last_draw < self._interval:
            return
        self._last_draw = now
        with _lock:
            if self.is_tty:
                self._draw_inline()
            else:
                self.stream.write(self.line() + "\n")
            self.stream.flush()

    def _draw_inline(self) -> None:
        self.stream.write("\r" + self.bar() + "\x1b[K")
        self._drawn_inline = True
        _inline[id(self.stream)] = self

    def clear_inline(self) -> bool:
        """Erase the bar from the terminal line (before a log line); True when it was drawn."""
        if not (self.is_tty and self._drawn_inline):
            return False
        self.stream.write("\r\x1b[K")
        return True

    def close(self, note: str = "") -> None:
        """Print the final state on its own line (the plain line, with every count)."""
        with _lock:
            if self.is_tty and self._drawn_inline:
                self.stream.write("\r\x1b[K")
            self._drawn_inline = False
            if _inline.get(id(self.stream)) is self:
                del _inline[id(self.stream)]
            self.stream.write(self.line() + (f" | {note}" if note else "") + "\n")
            self.stream.flush()


class ConsoleHandler(logging.Handler):
    """Log records on ``stream`` (stderr by default, looked up at emit time), around a bar drawn there."""

    def __init__(self, stream: Optional[TextIO] = None, level: int = logging.NOTSET):
        super().__init__(level)
        self._stream = stream

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stderr

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            stream = self.stream
            with _lock:
                bar = _inline.get(id(stream))
                redraw = bar is not None and bar.clear_inline()
                stream.write(message + "\n")
                if redraw:
                    bar._draw_inline()
                stream.flush()
        except Exception:  # noqa: BLE001 - logging must never break the job
            self.handleError(record)
