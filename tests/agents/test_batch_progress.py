"""The progress line (agents/progress.py): counts, rate, TTY redraw vs plain periodic lines."""
from __future__ import annotations

import io

from agents.progress import Progress


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_counts_and_rate():
    clock = Clock()
    p = Progress(total=4, skipped=2, stream=io.StringIO(), is_tty=False, interval_s=1000, clock=clock)
    p.started()
    p.started()
    clock.t += 10
    p.finished(ok=True, iterations=15)
    p.finished(ok=False, iterations=5)
    p.started()
    assert (p.done, p.failed, p.running, p.queued) == (1, 1, 1, 1)
    assert p.rate() == 2.0
    assert p.line() == "images 2/4 | done 1 | failed 1 | running 1 | queued 1 | 2.00 it/s | 10s | 2 already finished"


def test_plain_lines_are_periodic_when_not_a_tty():
    clock, stream = Clock(), io.StringIO()
    p = Progress(total=3, stream=stream, is_tty=False, interval_s=5, clock=clock)
    p.started()  # first event draws
    p.started()  # within the interval: no new line
    clock.t += 6
    p.tick()
    p.close("bye")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3 and "\r" not in stream.getvalue() and "\x1b" not in stream.getvalue()
    assert lines[-1].endswith("| bye") and "running 2" in lines[-1]


def test_tty_redraws_in_place():
    clock, stream = Clock(), io.StringIO()
    p = Progress(total=2, stream=stream, is_tty=True, redraw_s=0.1, clock=clock)
    p.started()
    clock.t += 1
    p.finished(ok=True, iterations=3)
    p.close()
    text = stream.getvalue()
    assert text.count("\r") >= 2 and text.endswith("\n") and text.count("\n") == 1
    assert "done 1" in text.splitlines()[-1].split("\r")[-1]
