"""Writes each finished image, and keeps results.csv and the results browser in step with the log.

Per finished image the work is constant, however many images are done: the per-image
folder's files (result.json, final_prompt.txt, scores.csv, the detail page index.html),
one line appended to report_rows.js, then the results.jsonl line (a line in the log means
the folder is complete). Only results.csv is rebuilt from every record: at most every
``refresh_s`` seconds (a deferred rewrite catches the last change) and by ``flush``, which
also rewrites the small report_summary.js (counts of running / total images).
"""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Optional

from agents.batch.plan import WorkItem
from agents.report import ReportHeader, ReportWriter
from agents.results import RESULTS_CSV, ResultsLog, make_dirs_durably, write_csv, write_image_outputs


class BatchWriter:
    """The per-image folder first, then the log line (a line in the log means the folder is complete).

    Creating it rebuilds the browser's rows from the log (once per run: a row appended by a
    run killed before its log line is dropped) and writes report.html.
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

    def record(self, item: WorkItem, record: dict) -> None:
        if self._repeats_latest_error(record):
            return  # the same file failing the same way on every rerun adds no line
        make_dirs_durably(item.folder, self.out_dir)
        write_image_outputs(item.folder, record)
        self.report.add_page(record)  # the detail page is part of the folder: before the log line
        self.report.add_row(record)
        self.results.append(record)  # last: a line in the log means the folder is complete
        self._refresh_soon()

    def _repeats_latest_error(self, record: dict) -> bool:
        latest = self.results.get(record["image_id"])
        return (record.get("status") == "error" and latest is not None and latest.get("status") == "error"
                and all(latest.get(k) == record.get(k) for k in ("error", "source", "settings_fingerprint")))

    def _refresh_soon(self) -> None:
        loop = asyncio.get_running_loop()
        wait = self._last_refresh + self.refresh_s - loop.time()
        if wait <= 0:
            self.flush()
        elif self._pending is None:
            self._pending = loop.call_later(wait, self.flush)

    def flush(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        try:
            self._last_refresh = asyncio.get_running_loop().time()
        except RuntimeError:
            pass
        write_csv(self.out_dir / RESULTS_CSV, self.results.records())
        self.report.refresh()
