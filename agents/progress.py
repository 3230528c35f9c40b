"""The batch job's progress line on stderr: images done / failed / running / queued and
optimisation iterations per second.

On a terminal the line is redrawn in place (at most every ``redraw_s``); otherwise (a
log file, ``ray job logs``) a plain line is printed every ``interval_s`` and when the
run ends, so logs stay readable.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, Optional, TextIO


class Progress:
    """Counts fed by the batch runner's events; ``tick`` redraws when it is time."""

    def __init__(self, total: int, skipped: int = 0, stream: Optional[TextIO] = None, is_tty: Optional[bool] = None,
                 interval_s: float = 10.0, redraw_s: float = 0.2, clock: Callable[[], float] = time.monotonic):
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

    # output -------------------------------------------------------------------
    def rate(self) -> float:
        elapsed = self._clock() - self._start
        return self.iterations / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        elapsed = self._clock() - self._start
        text = (f"images {self.done + self.failed}/{self.total} | done {self.done} | failed {self.failed} | "
                f"running {self.running} | queued {self.queued} | {self.rate():.2f} it/s | {elapsed:.0f}s")
        if self.skipped:
            text += f" | {self.skipped} already finished"
        return text

    def tick(self, force: bool = False) -> None:
        now = self._clock()
        if not force and now - self._last_draw < self._interval:
            return
        self._last_draw = now
        if self.is_tty:
            self.stream.write("\r" + self.line() + "\x1b[K")
            self._drawn_inline = True
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def close(self, note: str = "") -> None:
        """Print the final state on its own line."""
        if self.is_tty and self._drawn_inline:
            self.stream.write("\r\x1b[K")
        self.stream.write(self.line() + (f" | {note}" if note else "") + "\n")
        self.stream.flush()
