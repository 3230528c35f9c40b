"""Writes each finished image, and keeps results.csv and the results browser in step with the log.

Per finished image the work is constant, however many images are done: the per-image
folder's files (result.json, final_prompt.txt, scores.csv, the detail page index.html),
one line appended to report_rows.js, then the results.jsonl line (a line in the log means
the folder is complete), then the image's row appended to results.csv. The periodic
refresh (at most every ``refresh_s`` seconds; a deferred one catches the last change) rewrites
only the small report_summary.js.

results.csv holds one row per image (its latest record). It is rebuilt from the log when the
writer starts (under the output folder's lock: a row torn by a crash, or one a later record
replaced, is dropped) and at the end if it went stale: when an image recorded before (a failed
image retried) gets a new record, its old row stays until a rebuild. Those rebuilds read every
record, so during a run they are spaced at least ``REBUILD_SPACING`` times their own duration
apart: whatever the batch size, they take at most ~2% of the event loop the optimisations share.
(The scale simulation found the old every-refresh rebuild growing to 10.6 ms CPU per image at
8,192 images: docs/scale.md.)
"""
from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Optional

from agents.batch.plan import WorkItem
from agents.browser.report import ReportHeader, ReportWriter
from agents.browser.results import RESULTS_CSV, ResultsLog, append_csv_row, write_csv, write_image_outputs
from core.durable_files import make_dirs_durably

#: A mid-run results.csv rebuild waits at least this many times the last rebuild's duration.
REBUILD_SPACING = 50


def _now() -> float:
    return time.monotonic()


class BatchWriter:
    """The per-image folder first, then the log line (a line in the log means the folder is complete).

    Creating it rebuilds the browser's rows and results.csv from the log (once per run: a row
    appended by a run killed before its log line is dropped) and writes report.html.
    """

    def __init__(self, out_dir: Path, results: ResultsLog, header: ReportHeader, refresh_s: float):
        self.out_dir = out_dir
        self.results = results
        self.header = header
        self.refresh_s = refresh_s
        self.report = ReportWriter(out_dir, header)
        self.report.start(results.records())
        self._last_refresh = float("-inf")
        self._pending: Optional[asyncio.TimerHandle] = None
        self._csv_stale = False
        self._next_rebuild = float("-inf")  # _now() before which a mid-run rebuild waits
        self._rebuild_csv()

    def record(self, item: WorkItem, record: dict) -> None:
        if self._repeats_latest_error(record):
            return  # the same file failing the same way on every rerun adds no line
        recorded_before = record["image_id"] in self.results
        make_dirs_durably(item.folder, self.out_dir)
        write_image_outputs(item.folder, record)
        self.report.add_page(record)  # the detail page is part of the folder: before the log line
        self.report.add_row(record)
        self.results.append(record)  # a line in the log means the folder is complete
        if recorded_before:
            self._csv_stale = True  # its old row is replaced at the next rebuild
        elif not self._csv_stale:
            try:
                append_csv_row(self.out_dir / RESULTS_CSV, record)
            except OSError:  # cut back to its last whole row; the record is in the log: rebuilt at the next refresh
                self._csv_stale = True
                raise
        self._refresh_soon()

    def _repeats_latest_error(self, record: dict) -> bool:
        summary = self.results.summary(record["image_id"])
        if record.get("status") != "error" or summary is None or summary.status != "error":
            return False
        latest = self.results.get(record["image_id"])  # read back from the log: the log keeps no records in memory
        return latest is not None and all(latest.get(k) == record.get(k) for k in ("error", "source", "settings_fingerprint"))

    def _refresh_soon(self) -> None:
        loop = asyncio.get_running_loop()
        wait = self._last_refresh + self.refresh_s - loop.time()
        if wait <= 0:
            self.refresh()
        elif self._pending is None:
            self._pending = loop.call_later(wait, self.refresh)

    def refresh(self) -> None:
        """The periodic summary: report_summary.js, and results.csv if stale and its spacing allows."""
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        try:
            self._last_refresh = asyncio.get_running_loop().time()
        except RuntimeError:
            pass
        if self._csv_stale and _now() >= self._next_rebuild:
            self._rebuild_csv()
        self.report.refresh()

    def flush(self) -> None:
        """Bring every summary up to date now (the end of a run, or an interruption)."""
        self.refresh()
        if self._csv_stale:
            self._rebuild_csv()

    def _rebuild_csv(self) -> None:
        started = _now()
        # While stale, appends wait for this rebuild: it writes every record's latest row.
        write_csv(self.out_dir / RESULTS_CSV, self.results.records())
        self._csv_stale = False
        finished = _now()
        self._next_rebuild = finished + REBUILD_SPACING * (finished - started)
