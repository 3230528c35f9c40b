"""The progress bar (agents/progress.py): counts, rate, ETA, TTY redraw vs plain periodic lines, and
log lines printed around the bar."""
from __future__ import annotations

import io
import logging
import os

import pytest

from agents.progress import ConsoleHandler, Progress, format_duration


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
    # 2 of 4 finished in 10 s: 2 left at 5 s each
    assert p.line() == "images 2/4 | done 1 | failed 1 | running 1 | queued 1 | 2.00 it/s | 10s | ETA 10s | 2 already finished"


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


def test_eta_unknown_until_an_image_finishes_then_from_the_finishing_rate():
    clock = Clock()
    p = Progress(total=10, stream=io.StringIO(), is_tty=False, clock=clock)
    for _ in range(4):
        p.started()
    clock.t += 30
    assert p.eta_s() is None and "ETA --" in p.line()
    p.finished(ok=True)
    clock.t += 30  # 1 image per 60 s so far, 9 left
    assert p.eta_s() == pytest.approx(540) and "ETA 9m00s" in p.line()
    assert [format_duration(s) for s in (0, 59.4, 61, 3600 * 2 + 7 * 60)] == ["0s", "59s", "1m01s", "2h07m"]


def test_bar_fills_with_finished_images_and_fits_the_terminal():
    clock = Clock()
    p = Progress(total=4, stream=io.StringIO(), is_tty=True, clock=clock, width=lambda: 200)
    assert p.bar().startswith("[" + "." * 20 + "] 0/4")
    p.started()
    clock.t += 2
    p.finished(ok=True, iterations=4)
    bar = p.bar()
    assert bar.startswith("[" + "#" * 5 + "." * 15 + "] 1/4 | done 1 | failed 0 | running 0 | 2.00 it/s | ETA 6s")
    narrow = Progress(total=4, stream=io.StringIO(), is_tty=True, clock=clock, width=lambda: 30)
    assert len(narrow.bar()) == 29  # never wraps: a wrapped line cannot be redrawn with \r


def test_log_lines_clear_the_bar_and_redraw_it():
    clock, stream = Clock(), io.StringIO()
    p = Progress(total=2, stream=stream, is_tty=True, redraw_s=0, clock=clock, width=lambda: 200)
    handler = ConsoleHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    p.started()
    handler.emit(logging.LogRecord("x", logging.WARNING, __file__, 1, "careful", None, None))
    text = stream.getvalue()
    # bar, then erase the line, the warning on a line of its own, and the bar again
    before, after = text.split("WARNING careful\n")
    assert before.endswith("\r\x1b[K") and "[" in before and after.startswith("\r[") and "running 1" in after
    p.close()
    plain = io.StringIO()
    ConsoleHandler(plain).emit(logging.LogRecord("x", logging.ERROR, __file__, 1, "boom", None, None))
    assert plain.getvalue() == "boom\n"  # no bar on this stream: nothing to clear


def test_pseudo_terminal_gets_carriage_return_redraws_a_pipe_plain_lines():
    """Progress decides by the stream itself: a real pty is a terminal, a pipe is not."""
    master, slave = os.openpty()
    try:
        with os.fdopen(slave, "w", closefd=True) as tty:
            clock = Clock()
            p = Progress(total=3, stream=tty, redraw_s=0.1, clock=clock)
            assert p.is_tty
            for _ in range(3):
                p.started()
                clock.t += 1
            p.finished(ok=True)
            p.close()
            tty.flush()
        data = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO once the slave side is closed and drained
                break
            if not chunk:
                break
            data += chunk
    finally:
        os.close(master)
    text = data.decode()
    assert text.count("\r[") >= 4 and "\x1b[K" in text and "done 1" in text
    read_fd, write_fd = os.pipe()
    with os.fdopen(write_fd, "w") as pipe:
        clock = Clock()
        p = Progress(total=3, stream=pipe, interval_s=5, clock=clock)
        assert not p.is_tty
        p.started()
        clock.t += 6
        p.finished(ok=True)
        p.close()
    with os.fdopen(read_fd) as fh:
        piped = fh.read()
    assert "\r" not in piped and "\x1b" not in piped and "[#" not in piped
    assert piped.count("\n") == 3 and "ETA" in piped
