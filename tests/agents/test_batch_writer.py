"""The results writer keeps results.csv one row per image at a cost per image that does not grow with the batch."""
from __future__ import annotations

import asyncio
import csv
import io
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import pytest

import agents.batch.writer as writer_mod
from agents.batch.writer import REBUILD_SPACING, BatchWriter
from agents.browser.report import ReportHeader
from agents.browser.results import RESULTS_CSV, RESULTS_JSONL, ResultsLog, UnsafePathError


def _record(i: int, status: str = "done") -> dict:
    return {"image_id": f"id{i:04d}", "source": f"{i}.png", "status": status,
            "error": None if status == "done" else f"{i}.png: optimisation failed: boom",
            "prompt": {"content": [f"thing {i}"], "style": ["photo"], "rendered": f"thing {i}, photo"},
            "iterations": [], "output_dir": f"images/{i}", "settings_fingerprint": "fp"}


def _writer(out: Path) -> BatchWriter:
    return BatchWriter(out, ResultsLog(out / RESULTS_JSONL), ReportHeader(profile="t", random_weight_roles=[], total=9), refresh_s=0)


def _rows(out: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO((out / RESULTS_CSV).read_text())))


def _write(writer: BatchWriter, out: Path, records: list[dict]) -> None:
    async def go():
        for r in records:
            writer.record(SimpleNamespace(folder=out / r["output_dir"]), r)
    asyncio.run(go())


def test_new_images_are_appended_without_rebuilding_the_csv(tmp_path):
    writer = _writer(tmp_path)  # the start-up rebuild: a header only
    assert _rows(tmp_path) == [] and (tmp_path / RESULTS_CSV).read_text().startswith("image_id,")
    with mock.patch.object(writer_mod, "write_csv", wraps=writer_mod.write_csv) as rebuild:
        _write(writer, tmp_path, [_record(i) for i in range(40)])  # refresh_s=0: a refresh after every image
        assert rebuild.call_count == 0  # each refresh used to rewrite every row: cost growing with the batch
        writer.flush()
        assert rebuild.call_count == 0  # nothing stale: the appended rows are the file
    assert [r["image_id"] for r in _rows(tmp_path)] == [f"id{i:04d}" for i in range(40)]
    assert _rows(tmp_path)[3]["final_prompt"] == "thing 3, photo"


def test_a_retried_image_keeps_one_row_its_latest(tmp_path):
    _write(_writer(tmp_path), tmp_path, [_record(0), _record(1, "error"), _record(2)])
    writer = _writer(tmp_path)  # the next run
    _write(writer, tmp_path, [_record(1), _record(3)])  # 1 retried and done; 3 new (waits for the rebuild: stale)
    writer.flush()
    rows = _rows(tmp_path)
    assert [r["image_id"] for r in rows] == ["id0000", "id0001", "id0002", "id0003"]
    assert rows[1]["status"] == "done" and rows[1]["error"] == ""


def test_a_row_torn_by_a_crash_is_rebuilt_when_the_writer_starts(tmp_path):
    _write(_writer(tmp_path), tmp_path, [_record(0), _record(1)])
    with (tmp_path / RESULTS_CSV).open("a") as fh:
        fh.write('id0002,2.png,do')  # a kill in the middle of an append: no log line for it
    _writer(tmp_path)
    assert [r["image_id"] for r in _rows(tmp_path)] == ["id0000", "id0001"]


def test_mid_run_rebuilds_are_spaced_by_their_own_duration(tmp_path):
    _write(_writer(tmp_path), tmp_path, [_record(i, "error") for i in range(3)])
    clock = iter(range(0, 10_000, 1))  # every monotonic() call advances 1 s: a rebuild "takes" 1 s
    with mock.patch.object(writer_mod, "_now", side_effect=lambda: float(next(clock))):
        writer = _writer(tmp_path)  # its start-up rebuild took 1 s: the next waits REBUILD_SPACING s
        with mock.patch.object(writer_mod, "write_csv", wraps=writer_mod.write_csv) as rebuild:
            _write(writer, tmp_path, [_record(0)])  # a retried image: stale, but too soon to rebuild
            assert rebuild.call_count == 0
            for _ in range(REBUILD_SPACING):
                writer.refresh()
            assert rebuild.call_count == 1  # once the spacing has passed
            _write(writer, tmp_path, [_record(1)])
            writer.flush()  # the end of a run always catches up
            assert rebuild.call_count == 2
    assert [r["status"] for r in _rows(tmp_path)] == ["done", "done", "error"]


def test_a_symlink_planted_at_results_csv_is_not_written_through(tmp_path):
    writer = _writer(tmp_path)
    target = tmp_path / "elsewhere.txt"
    target.write_text("keep\n")
    (tmp_path / RESULTS_CSV).unlink()
    (tmp_path / RESULTS_CSV).symlink_to(target)
    with pytest.raises(UnsafePathError, match="symlink"):
        _write(writer, tmp_path, [_record(0)])
    assert target.read_text() == "keep\n"
