"""Hostile inputs and files around the batch job: odd file names, overlapping folders, symlinks,
oversized files, a planted results log, crafted records, interrupted appends, reruns."""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import agents.batch_reverse as br
import agents.browser.results as results_mod
from agents.batch.errors import EXIT_OK, EXIT_SOME_FAILED, SetupError
from agents.batch.plan import WorkItem, plan_work
from agents.batch.runner import prepare_reference, run_batch
from agents.config import ArpoConfig
from agents.browser.edit_strip import edits_strip_for_report
from agents.eval.arpo_source import load_results
from agents.browser.html_text import href
from agents.images import FoundImage, discover_images, display_name
from agents.browser.results import LOCK_FILE, ResultsLog, UnsafePathError, append_line_durably, exclusive_output
from core import durable_files
from core.durable_files import make_dirs_durably
from tests.agents.batch_doubles import ScriptedOptimise


def _cfg(**job) -> ArpoConfig:
    return ArpoConfig.model_validate({"job": {"summary_refresh_s": 0, **job}})


def _png(path: Path, value: int = 0, size: int = 8) -> Path:
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(path, format="PNG")
    return path


async def _run(images, out, optimise=None, **job):
    return await run_batch(_cfg(**job), images, out, roles=None, concurrency=2, progress_stream=io.StringIO(),
                           optimise_fn=optimise or ScriptedOptimise(steps=1), graph=object())


def _jsonl(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]


# --------------------------------------------------------------------------- file names

async def test_a_non_utf8_file_name_is_processed_and_recorded_safely(tmp_path, capsys):
    images = tmp_path / "imgs"
    images.mkdir()
    _png(Path(os.fsdecode(bytes(images) + b"/caf\xe9.png")), 1)
    _png(images / "\x1b[31mred\x1b[0m.png", 2)
    out = tmp_path / "out"
    outcome = await _run(images, out)
    # Old code: the surrogate in the name made the record unwritable (exit 3, every rerun).
    assert (outcome.done, outcome.failed) == (2, 0)
    sources = sorted(r["source"] for r in _jsonl(out))
    assert sources == ["\\x1b[31mred\\x1b[0m.png", "caf\\xe9.png"]
    assert all(r["output_dir"].isascii() for r in _jsonl(out))
    assert br.main(["--dir", str(images), "--out", str(out), "--dry-run"]) == EXIT_OK
    printed = capsys.readouterr().out
    assert "caf\\xe9.png" in printed and "\x1b" not in printed  # no raw escape sequence reaches the terminal


def test_display_name_escapes_controls_and_bidi_overrides():
    assert display_name("a\nb\u202ec.png") == "a\\x0ab\\u202ec.png"
    assert display_name("plain/ünïcode.png") == "plain/ünïcode.png"


# --------------------------------------------------------------------------- folders

@pytest.mark.parametrize("relation", ["same", "parent"])
async def test_out_equal_to_or_containing_dir_is_refused(tmp_path, relation):
    images = tmp_path / "data" / "imgs"
    images.mkdir(parents=True)
    _png(images / "a.png")
    out = images if relation == "same" else tmp_path / "data"
    with pytest.raises(SetupError, match="image folder"):
        await _run(images, out)
    assert br.main(["--dir", str(images), "--out", str(out), "--dry-run"]) == br.EXIT_SETUP_ERROR
    assert not (images / "results.jsonl").exists() and not (out / "results.jsonl").exists()


async def test_out_inside_dir_is_skipped_on_rerun(tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    _png(images / "a.png")
    out = images / "out"
    assert (await _run(images, out)).done == 1
    again = await _run(images, out)
    assert (again.total, again.skipped, again.done) == (1, 1, 0)  # the job's own reference.png is not a new image


def test_the_lock_is_taken_before_ray_or_any_model_starts(tmp_path, monkeypatch, capsys):
    images = tmp_path / "imgs"
    images.mkdir()
    _png(images / "a.png")
    out = tmp_path / "out"

    def must_not_start(cfg):
        raise AssertionError("Ray and the roles must not start while another job holds --out")
    monkeypatch.setattr(br, "start_ray_and_roles", must_not_start)
    with exclusive_output(out):
        assert br.main(["--dir", str(images), "--out", str(out)]) == br.EXIT_SETUP_ERROR
    assert "another batch job" in capsys.readouterr().err


# --------------------------------------------------------------------------- symlinks and sizes

def test_symlinks_leaving_the_image_folder_are_refused_and_never_read(tmp_path):
    images, elsewhere = tmp_path / "imgs", tmp_path / "secret"
    images.mkdir()
    elsewhere.mkdir()
    _png(elsewhere / "private.png", 7)
    _png(images / "inside.png", 3)
    (images / "leak.png").symlink_to(elsewhere / "private.png")
    (images / "alias.png").symlink_to(images / "inside.png")
    found = {f.rel: f for f in discover_images(images)}
    assert found["leak.png"].refused and "outside the image folder" in found["leak.png"].refused
    assert found["alias.png"].refused is None
    items = {it.source.rel: it for it in plan_work(images, tmp_path / "out")}
    assert items["leak.png"].read_error and items["leak.png"].image_id.startswith("unusable-")
    assert items["alias.png"].duplicates == ["inside.png"]  # same content: one work item


def test_an_oversized_file_is_refused_before_it_is_hashed(tmp_path, monkeypatch):
    images = tmp_path / "imgs"
    images.mkdir()
    _png(images / "big.png", 1, size=64)
    import agents.image_id

    monkeypatch.setattr(agents.image_id, "content_id", lambda path: pytest.fail(f"{path} was hashed"))
    (item,) = plan_work(images, tmp_path / "out", max_file_bytes=100)
    assert "job.max_file_bytes" in item.read_error and "big.png" in item.read_error


def test_the_reference_is_stored_shrunk_to_the_configured_side(tmp_path):
    src = _png(tmp_path / "wide.png", 9, size=8)
    Image.fromarray(np.zeros((300, 900, 3), np.uint8)).save(src)
    item = WorkItem("id", FoundImage(path=src, rel="wide.png"), tmp_path / "out" / "images" / "wide-id")
    ref = prepare_reference(item, max_pixels=10**7, max_side=256)
    assert Image.open(ref).size == (256, 85)


# --------------------------------------------------------------------------- the results log

def test_a_symlink_planted_at_the_results_log_is_refused(tmp_path):
    target = tmp_path / "elsewhere.txt"
    target.write_text("")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "results.jsonl").symlink_to(target)
    with pytest.raises(UnsafePathError):
        append_line_durably(tmp_path / "out" / "results.jsonl", {"image_id": "x"})
    with pytest.raises(UnsafePathError):
        ResultsLog(tmp_path / "out" / "results.jsonl")
    assert target.read_text() == ""


def test_a_failed_append_is_undone_so_the_next_one_stays_a_line(tmp_path, monkeypatch):
    log = tmp_path / "results.jsonl"
    append_line_durably(log, {"image_id": "a"})
    real_write = os.write
    calls = {"n": 0}

    def half_then_fail(fd, data):
        calls["n"] += 1
        if calls["n"] == 1:
            real_write(fd, bytes(data[: len(data) // 2]))
            raise OSError(28, "No space left on device")
        return real_write(fd, data)
    monkeypatch.setattr(results_mod.os, "write", half_then_fail)
    with pytest.raises(OSError):
        append_line_durably(log, {"image_id": "b"})
    append_line_durably(log, {"image_id": "c"})
    # Old code: the fragment of b and the line of c merged into one corrupt line, skipped forever.
    assert [json.loads(x)["image_id"] for x in log.read_text().splitlines()] == ["a", "c"]


def test_an_append_after_a_torn_last_line_starts_a_new_line(tmp_path):
    log = tmp_path / "results.jsonl"
    log.write_text('{"image_id": "a"}\n{"image_id": "b", "sta')
    append_line_durably(log, {"image_id": "c"})
    lines = log.read_text().splitlines()
    assert json.loads(lines[-1]) == {"image_id": "c"} and len(lines) == 3


async def test_reruns_do_not_pile_up_identical_error_records(tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    _png(images / "good.png")
    (images / "broken.png").write_bytes(b"\x89PNG not really")
    out = tmp_path / "out"
    for _ in range(3):
        outcome = await _run(images, out)
        assert outcome.exit_code == EXIT_SOME_FAILED
    errors = [r for r in _jsonl(out) if r["status"] == "error"]
    assert len(errors) == 1 and "broken.png" in errors[0]["error"]


def test_new_folders_are_made_durable(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(durable_files, "fsync_dir", lambda folder: synced.append(Path(folder)))
    make_dirs_durably(tmp_path / "out" / "images" / "a", tmp_path / "out")
    assert synced == [tmp_path / "out", tmp_path / "out" / "images"]


# --------------------------------------------------------------------------- records read back

def test_a_crafted_record_cannot_make_the_report_read_outside_out(tmp_path):
    outside = tmp_path / "victim"
    outside.mkdir()
    (outside / "edits.json").write_text(json.dumps([{"images": ["x.png"], "edit": "SECRET", "prompt": "p"}]))
    out = tmp_path / "out"
    out.mkdir()
    assert edits_strip_for_report(out, {"image_id": "x", "output_dir": "../victim"}) == ""
    assert edits_strip_for_report(out, {"image_id": "x", "output_dir": str(outside)}) == ""


@pytest.mark.parametrize("link, expected", [("//evil.example/x.png", "./evil.example/x.png"),
                                            ("/etc/passwd", "./etc/passwd"),
                                            ("javascript:alert(1)", "javascript%3Aalert%281%29"),
                                            ("images/a b.png", "images/a%20b.png")])
def test_href_only_makes_relative_links(link, expected):
    assert href(link) == expected


def test_the_evaluation_reads_another_jobs_log_without_repairing_it(tmp_path):
    log = tmp_path / "results.jsonl"
    text = json.dumps({"image_id": "a", "status": "done"}) + "\n" + '{"image_id": "b", "sta'
    log.write_text(text)
    (tmp_path / LOCK_FILE).write_text("")
    assert set(load_results(tmp_path)) == {"a"}
    assert log.read_text() == text  # a running job's half-written line is left alone


def test_temp_files_of_a_killed_write_are_removed_under_the_lock(tmp_path):
    from agents.batch.runner import remove_stale_temp_files

    out = tmp_path / "out"
    (out / "images" / "a").mkdir(parents=True)
    stale = [out / ".results.csv.abc.tmp", out / "images" / "a" / ".00_seed0.png.x1y2.tmp"]
    for p in stale:
        p.write_bytes(b"partial")
    keep = [out / "images" / "a" / "00_seed0.png", out / ".batch.lock"]
    for p in keep:
        p.write_bytes(b"x")
    assert remove_stale_temp_files(out) == 2
    assert not any(p.exists() for p in stale) and all(p.exists() for p in keep)
