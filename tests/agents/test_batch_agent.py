"""run_batch with the real agent: real graph, real SQLite checkpointer, scripted role doubles.

The reference image is the doubles' World reference, saved in several formats (different
bytes, hence different image ids, same pixels) so every work item passes the doubles'
checks. A failing role call makes that image's record an error; a rerun resumes its
checkpoint thread and finishes it.
"""
from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from agents.batch.errors import EXIT_OK, EXIT_SOME_FAILED
from agents.batch.runner import run_batch
from agents.config import ArpoConfig
from tests.agents.doubles import World, call_counts, fragment_sum, make_roles
from tests.agents.test_report import read_browser

GOOD = {"red ball": 0.05, "green grass": 0.03, "oil painting": 0.02}


def _world() -> World:
    return World(fragment_sum(GOOD, unknown=-0.01))


def _roles(world: World, fail_at=None):
    replies = ['["red ball", "blue car"]', '["green grass", "a dog"]', '["oil painting", "a hat"]'] * 20
    return make_roles(world, {None: replies}, fail_at=fail_at)


def _cfg() -> ArpoConfig:
    return ArpoConfig.model_validate({"agent": {"framework": "vanilla", "max_steps": 3, "seeds": [0]},
                                      "job": {"summary_refresh_s": 0}})


def _images(folder: Path, world: World) -> None:
    folder.mkdir()
    ref = Image.fromarray(world.reference)
    ref.save(folder / "ref.png")
    ref.save(folder / "ref.bmp")
    ref.save(folder / "ref.tiff")
    (folder / "notes.png").write_text("not an image")


def _jsonl(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


async def test_batch_with_real_agent_graph(tmp_path):
    world = _world()
    _images(tmp_path / "imgs", world)
    out = tmp_path / "out"
    roles = _roles(world)
    outcome = await run_batch(_cfg(), tmp_path / "imgs", out, roles, concurrency=3, progress_stream=io.StringIO())
    assert (outcome.done, outcome.failed, outcome.exit_code) == (3, 1, EXIT_SOME_FAILED)
    assert (out / "checkpoints.sqlite").is_file()
    records = {r["source"]: r for r in _jsonl(out)}
    for source in ("ref.png", "ref.bmp", "ref.tiff"):
        rec = records[source]
        assert rec["status"] == "done" and rec["stop_reason"]
        assert rec["prompt"]["rendered"].startswith("a black and white cat")
        assert rec["iterations"] and all((out / p).is_file() for it in rec["iterations"] for p in it["images"])
        assert rec["best_clip_i"] == max(it["clip_i"] for it in rec["iterations"])
        assert set(rec["prompt"]["content"][1:]) <= set(GOOD)  # only fragments the doubles' world rewards were kept
    assert records["notes.png"]["status"] == "error"
    rows, _, pages = read_browser(out)  # every image a detail page shows exists
    assert len(rows) == 4
    for rec in records.values():  # the real graph's per-candidate scores and outcomes reach the page
        if rec["status"] == "done":
            text = "".join(pages[rec["image_id"]].text)
            assert "Iteration 0" in text and ("kept: CLIP-T" in text or "dropped: CLIP-T" in text)

    # a rerun finds everything good done and calls no model
    before = call_counts(roles)
    again = await run_batch(_cfg(), tmp_path / "imgs", out, roles, concurrency=3, progress_stream=io.StringIO())
    assert (again.skipped, again.done, again.failed) == (3, 0, 1)
    assert call_counts(roles) == before


async def test_batch_failed_node_then_rerun_resumes_thread(tmp_path):
    world = _world()
    _images(tmp_path / "imgs", world)
    (tmp_path / "imgs" / "notes.png").unlink()
    out = tmp_path / "out"
    roles = _roles(world, fail_at={"t2i": {"generate": 4}})  # one image's second iteration fails once
    first = await run_batch(_cfg(), tmp_path / "imgs", out, roles, concurrency=1, progress_stream=io.StringIO())
    assert (first.done, first.failed) == (2, 1)
    failed = [r for r in _jsonl(out) if r["status"] == "error"][0]
    assert "InjectedFailure" in failed["error"] and failed["iterations"]  # partial history kept
    inits_before = roles.captioner.calls["caption"]
    second = await run_batch(_cfg(), tmp_path / "imgs", out, roles, concurrency=1, progress_stream=io.StringIO())
    assert (second.skipped, second.done, second.failed, second.exit_code) == (2, 1, 0, EXIT_OK)
    assert roles.captioner.calls["caption"] == inits_before  # resumed from the checkpoint, not restarted
    latest = {r["image_id"]: r for r in _jsonl(out)}
    assert latest[failed["image_id"]]["status"] == "done"


async def test_batch_cancelled_midway_then_rerun_completes(tmp_path):
    world = _world()
    _images(tmp_path / "imgs", world)
    (tmp_path / "imgs" / "notes.png").unlink()
    out = tmp_path / "out"
    roles = _roles(world)
    task = asyncio.create_task(run_batch(_cfg(), tmp_path / "imgs", out, roles, concurrency=1, progress_stream=io.StringIO()))
    while not (out / "results.jsonl").exists() or roles.t2i.calls["generate"] < 5:
        await asyncio.sleep(0.001)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    finished = _jsonl(out)
    assert 1 <= len(finished) < 3
    kept = {r["output_dir"]: (out / r["output_dir"] / "result.json").read_bytes() for r in finished}
    second = await run_batch(_cfg(), tmp_path / "imgs", out, _roles(world), concurrency=2, progress_stream=io.StringIO())
    assert second.exit_code == EXIT_OK and second.skipped == len(finished) and second.done == 3 - len(finished)
    assert all((out / d / "result.json").read_bytes() == data for d, data in kept.items())
    assert sorted(r["status"] for r in _jsonl(out)) == ["done"] * 3


def _threads(out: Path) -> dict[str, int]:
    """Checkpoints per thread id in the job's SQLite store."""
    import sqlite3

    with sqlite3.connect(out / "checkpoints.sqlite") as db:
        return dict(db.execute("SELECT thread_id, COUNT(*) FROM checkpoints GROUP BY thread_id").fetchall())


@pytest.mark.parametrize("keep", [False, True])
async def test_a_recorded_image_releases_its_checkpoints_a_failed_one_keeps_them(tmp_path, keep):
    world = _world()
    _images(tmp_path / "imgs", world)
    (tmp_path / "imgs" / "notes.png").unlink()
    out = tmp_path / "out"
    cfg = _cfg().model_copy(deep=True)
    cfg.job.checkpoint.keep_finished_threads = keep
    roles = _roles(world, fail_at={"t2i": {"generate": 4}})  # one image's second iteration fails once
    first = await run_batch(cfg, tmp_path / "imgs", out, roles, concurrency=1, progress_stream=io.StringIO())
    assert (first.done, first.failed) == (2, 1)
    failed = next(r for r in _jsonl(out) if r["status"] == "error")["image_id"]
    threads = _threads(out)
    # the failed image's steps stay for the rerun to resume; the done ones are gone unless kept
    assert [t for t in threads if t.endswith(failed)] and threads[next(t for t in threads if t.endswith(failed))] > 1
    assert len(threads) == (3 if keep else 1)
    inits_before = roles.captioner.calls["caption"]
    second = await run_batch(cfg, tmp_path / "imgs", out, roles, concurrency=1, progress_stream=io.StringIO())
    assert (second.skipped, second.done, second.failed) == (2, 1, 0)
    assert roles.captioner.calls["caption"] == inits_before  # resumed from the kept checkpoint
    assert len(_threads(out)) == (3 if keep else 0)
