"""Safe output names, atomic writes, the JSONL log with crash recovery, CSV (agents/browser/results.py)."""
from __future__ import annotations

import csv
import io
import json
import os

import pytest

from agents.browser import results as R
from tests.agents.batch_doubles import make_result


# ------------------------------------------------------------------ names

@pytest.mark.parametrize("rel", [
    "../../x.png", "../../../etc/passwd.png", "/abs/olute.png", "a/../../b.jpg", "..", ".", "",
    "C:\\Windows\\evil.png", "~/home.png", "ünïcødé/画像.png", "emoji🙂.webp", "x" * 5000 + ".png",
    "dir/.hidden.png", "name with spaces & <tags>.PNG", "nul\x00byte.png", "a/b/c/d.jpeg",
])
def test_image_dir_never_escapes_out(tmp_path, rel):
    out = tmp_path / "out"
    folder = R.image_output_dir(out, rel, "0123456789abcdef0123")
    assert folder.parent == (out / R.IMAGES_SUBDIR).resolve()
    name = folder.name
    assert name and len(name) <= 80 and not name.startswith(".")
    assert all(c.isascii() and (c.isalnum() or c in "._-") for c in name)
    assert name.endswith("-0123456789ab")
    folder.mkdir(parents=True)  # a valid single path component on this filesystem


def test_names_are_readable_and_distinct_per_id(tmp_path):
    assert R.image_dir_name("cats/Tabby Cat.JPG", "abcdef123456789") == "cats__Tabby-Cat-abcdef123456"
    assert R.image_dir_name("a.png", "id1") != R.image_dir_name("a.png", "id2")
    assert R.image_dir_name("画像.png", "ff00") == "image-ff00"


def test_contained_path_refuses_escape(tmp_path):
    with pytest.raises(R.UnsafePathError):
        R.contained_path(tmp_path, "..", "x")
    with pytest.raises(R.UnsafePathError):
        R.contained_path(tmp_path, "/etc/passwd")
    assert R.contained_path(tmp_path, "a", "b") == (tmp_path / "a" / "b").resolve()


# ------------------------------------------------------------------ atomic writes

def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "f.json"
    R.atomic_write_json(target, {"a": 1})
    R.atomic_write_json(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    assert sorted(os.listdir(target.parent)) == ["f.json"]


def test_atomic_write_failure_keeps_old_file(tmp_path, monkeypatch):
    target = tmp_path / "f.txt"
    R.atomic_write_text(target, "old")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(R.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        R.atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["f.txt"]  # the temporary file was removed


# ------------------------------------------------------------------ JSONL log

def _rec(i, status="done", **kw):
    return {"image_id": f"id{i}", "source": f"img{i}.png", "status": status, **kw}


def test_log_appends_and_reads_back(tmp_path):
    path = tmp_path / "results.jsonl"
    log = R.ResultsLog(path)
    log.append(_rec(1))
    log.append(_rec(2, "error", error="boom"))
    lines = path.read_text().splitlines()
    assert [json.loads(x)["image_id"] for x in lines] == ["id1", "id2"]
    again = R.ResultsLog(path)
    assert again.finished_ids() == {"id1"}  # errors are not finished: a rerun retries them
    assert [r["image_id"] for r in again.records()] == ["id1", "id2"]


def test_log_last_record_per_id_wins(tmp_path):
    log = R.ResultsLog(tmp_path / "r.jsonl")
    log.append(_rec(1, "error", error="transient"))
    log.append(_rec(2))
    log.append(_rec(1, "done"))
    again = R.ResultsLog(tmp_path / "r.jsonl")
    assert [(r["image_id"], r["status"]) for r in again.records()] == [("id1", "done"), ("id2", "done")]
    assert again.finished_ids() == {"id1", "id2"}


def test_log_moves_a_partial_last_line_aside_and_appends_cleanly(tmp_path, caplog):
    path = tmp_path / "r.jsonl"
    log = R.ResultsLog(path)
    log.append(_rec(1))
    log.append(_rec(2))
    full = path.read_bytes()
    path.write_bytes(full + b'{"image_id": "id3", "sta')  # crash in the middle of a write, or a hand edit
    reopened = R.ResultsLog(path)
    aside = list(tmp_path.glob("r.jsonl.torn-*"))
    # kept, not deleted, and the warning says where (and does not only blame a crash)
    assert len(aside) == 1 and aside[0].read_bytes() == b'{"image_id": "id3", "sta'
    assert f"moved to {aside[0]}" in caplog.text and "hand edit" in caplog.text
    assert reopened.finished_ids() == {"id1", "id2"}
    assert path.read_bytes() == full  # cut back to the last complete line
    reopened.append(_rec(3))
    assert [json.loads(x)["image_id"] for x in path.read_text().splitlines()] == ["id1", "id2", "id3"]


def test_log_keeps_complete_last_record_missing_only_its_newline(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(_rec(1)) + "\n" + json.dumps(_rec(2)))
    log = R.ResultsLog(path)
    assert log.finished_ids() == {"id1", "id2"}
    assert path.read_text().endswith("\n")
    log.append(_rec(3))
    assert len(path.read_text().splitlines()) == 3


def test_log_reports_a_corrupt_middle_line_without_destroying_it(tmp_path, caplog):
    path = tmp_path / "r.jsonl"
    content = json.dumps(_rec(1)) + "\nnot json at all\n" + json.dumps(_rec(2)) + "\n"
    path.write_text(content)
    log = R.ResultsLog(path)
    assert log.skipped_lines == [2] and "line 2" in caplog.text
    assert log.finished_ids() == {"id1", "id2"}
    assert path.read_text() == content


def test_the_log_keeps_finished_records_on_disk_not_in_memory(tmp_path):
    """A long job's driver must not grow with the images it finished (docs/scale.md measured 44 KB per
    finished image while the log held every record): appending a 40 KB record keeps well under 1 KB."""
    import tracemalloc

    def history(i):  # about 40 KB of iterations, like a finished image's, its own objects for each image
        return [f"{i}:{j}:" + "x" * 400 for j in range(100)]

    path = tmp_path / "r.jsonl"
    log = R.ResultsLog(path)
    log.append(_rec(0, iterations=history(0)))  # first-use allocations out of the measurement
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(1, 201):
            log.append(_rec(i, iterations=history(i), settings_fingerprint=f"fp{i % 2}"))
        per_appended = (tracemalloc.get_traced_memory()[0] - before) / 200
        before = tracemalloc.get_traced_memory()[0]
        reopened = R.ResultsLog(path)  # a rerun opening the log of a long job
        per_read = (tracemalloc.get_traced_memory()[0] - before) / 201
    finally:
        tracemalloc.stop()
    assert per_appended < 1024, f"{per_appended:.0f} bytes kept per appended record"
    assert per_read < 1024, f"{per_read:.0f} bytes kept per record read on opening"
    # ... and everything still reads back, from the file, in first-seen order
    assert len(reopened) == len(log) == 201 and log.get("id7")["iterations"] == history(7)
    assert log.summary("id7").status == "done" and log.summary("id7").fingerprint == "fp1"
    assert log.finished_ids("fp0") == {f"id{i}" for i in range(2, 201, 2)}
    assert [r["image_id"] for r in log.records()][:3] == ["id0", "id1", "id2"]


def test_reads_follow_the_latest_line_and_survive_appends_during_iteration(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(_rec(1, "error", error="first")))  # no newline at the end
    log = R.ResultsLog(path)
    log.append(_rec(2))
    log.append(_rec(1, "done"))  # a retried image: its latest record counts, where its id first appeared
    assert log.get("id1")["status"] == "done" and "id1" in log and "id9" not in log and log.get("id9") is None
    seen = []
    for record in log.records():
        seen.append((record["image_id"], record["status"]))
        if len(seen) == 1:
            log.append(_rec(3))  # a record finishing while the CSV is rebuilt
    assert seen == [("id1", "done"), ("id2", "done")]
    assert [r["image_id"] for r in R.ResultsLog(path).records()] == ["id1", "id2", "id3"]


def test_many_records_are_read_in_one_pass_over_the_log(tmp_path, monkeypatch):
    """A start-up pass over a large batch (the captions' reconcile) opens the log once, not once per image."""
    log = R.ResultsLog(tmp_path / "r.jsonl")
    for i in range(5):
        log.append(_rec(i, "error", error="first"))
    log.append(_rec(3, "done"))
    opened = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    got = dict(log.get_many(["id3", "id0", "id9", "id3"]))  # unknown and repeated ids
    assert {i: r["status"] for i, r in got.items()} == {"id3": "done", "id0": "error"}
    assert len(opened) == 1
    assert list(log.get_many(["id9"])) == [] and len(opened) == 1  # nothing to read: the log is not opened


def test_a_log_edited_under_a_live_job_says_so(tmp_path):
    path = tmp_path / "r.jsonl"
    log = R.ResultsLog(path)
    log.append(_rec(1))
    path.write_text("x" * len(path.read_text()))  # someone rewrote the file in place
    with pytest.raises(RuntimeError, match="no longer reads back.*edited"):
        log.get("id1")


def test_log_refuses_record_without_id(tmp_path):
    with pytest.raises(ValueError, match="image_id"):
        R.ResultsLog(tmp_path / "r.jsonl").append({"status": "done"})


def test_exclusive_output_refuses_second_writer(tmp_path):
    with R.exclusive_output(tmp_path / "out"):
        with pytest.raises(R.OutputFolderBusy, match="another batch job"):
            with R.exclusive_output(tmp_path / "out"):
                pass
    with R.exclusive_output(tmp_path / "out"):  # released afterwards
        pass


# ------------------------------------------------------------------ CSV and per-image files

def _full_record():
    record = make_result("abc", "x/y.png", iterations=2).model_dump(mode="json")
    record["prompt"]["style"] = ['=HYPERLINK("evil")']
    record["iterations"][1]["rendered"] = "-a cat, oil"
    record.update(output_dir="images/x__y-abc", duplicate_sources=["copy.png"])
    return record


def test_csv_round_trip_and_formula_guard(tmp_path):
    path = tmp_path / "results.csv"
    R.write_csv(path, [_full_record(), {"image_id": "bad", "source": "b.png", "status": "error", "error": "b.png: not a readable image"}])
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    assert [r["image_id"] for r in rows] == ["abc", "bad"]
    assert rows[0]["final_content"] == "a cat, detail 0" and rows[0]["iterations"] == "2"
    assert rows[0]["final_style"].startswith("'=")  # not run as a formula by a spreadsheet
    assert rows[0]["duplicate_sources"] == "copy.png"
    assert rows[1]["status"] == "error" and "not a readable image" in rows[1]["error"] and rows[1]["best_clip_i"] == ""


def test_per_image_outputs(tmp_path):
    R.write_image_outputs(tmp_path, _full_record())
    assert json.loads((tmp_path / R.RESULT_JSON).read_text()) == _full_record()
    text = (tmp_path / R.FINAL_PROMPT_TXT).read_text()
    assert text.startswith("a cat, detail 0, oil painting\n") and "# content\na cat, detail 0\n" in text
    assert '# style\n=HYPERLINK("evil")' in text
    scores = list(csv.reader(io.StringIO((tmp_path / R.SCORES_CSV).read_text())))
    assert scores[0] == ["iteration", "clip_t", "clip_i", "prompt"]
    assert scores[1] == ["0", "0.2", "0.5", "a cat"]
    assert scores[2][0] == "1" and float(scores[2][1]) == pytest.approx(0.21) and scores[2][3] == "'-a cat, oil"


def test_a_second_torn_line_gets_its_own_file(tmp_path):
    path = tmp_path / "r.jsonl"
    for fragment in (b'{"a', b'{"b'):
        path.write_bytes(json.dumps(_rec(1)).encode() + b"\n" + fragment)
        R.ResultsLog(path)
    assert sorted(p.read_bytes() for p in tmp_path.glob("r.jsonl.torn-*")) == [b'{"a', b'{"b']


def test_a_read_only_log_leaves_a_torn_line_where_it_is(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(json.dumps(_rec(1)).encode() + b"\n" + b'{"x')
    assert R.ResultsLog(path, repair=False).finished_ids() == {"id1"}
    assert path.read_bytes().endswith(b'{"x') and not list(tmp_path.glob("r.jsonl.torn-*"))


def test_a_failed_csv_append_leaves_no_torn_row(tmp_path, monkeypatch):
    """Disk full half-way through a row: the file is cut back to its last whole row at once."""
    path = tmp_path / "results.csv"
    R.write_csv(path, [_rec(1)])
    before = path.read_bytes()
    real_write = R.os.write

    def half_then_full(fd, data):
        if fd_is_csv[0] == fd:
            real_write(fd, bytes(data[: len(data) // 2]))
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    fd_is_csv = [None]
    real_open = R.open_no_follow

    def remember(p, flags):
        fd = real_open(p, flags)
        fd_is_csv[0] = fd
        return fd

    monkeypatch.setattr(R, "open_no_follow", remember)
    monkeypatch.setattr(R.os, "write", half_then_full)
    with pytest.raises(OSError, match="No space"):
        R.append_csv_row(path, _rec(2))
    monkeypatch.undo()
    assert path.read_bytes() == before
