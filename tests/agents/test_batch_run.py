"""run_batch end to end with a scripted optimise: outputs, error records, exit status,
concurrency, interruption and resume (agents/batch_reverse.py)."""
from __future__ import annotations

import asyncio
import csv
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from agents.batch.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_FAILED, SetupError
from agents.batch.plan import plan_work
from agents.batch.runner import run_batch
from agents.config import ArpoConfig
from agents.image_id import content_id
from agents.browser.results import exclusive_output
from tests.agents.batch_doubles import ScriptedOptimise, write_image_folder
from tests.agents.test_report import read_browser

GRAPH = object()  # run_batch passes it through to optimise; no real graph is built


def _cfg(**job) -> ArpoConfig:
    return ArpoConfig.model_validate({"job": {"summary_refresh_s": 0, **job}})


def _jsonl(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


async def _run(images, out, opt, concurrency=2, **kw):
    return await run_batch(_cfg(), images, out, roles=None, concurrency=concurrency, optimise_fn=opt, graph=GRAPH,
                           progress_stream=io.StringIO(), **kw)


async def test_batch_good_and_bad_files(tmp_path):
    files = write_image_folder(tmp_path / "imgs")
    out = tmp_path / "out"
    opt = ScriptedOptimise(steps=3)
    outcome = await _run(tmp_path / "imgs", out, opt)
    assert (outcome.total, outcome.done, outcome.failed, outcome.skipped) == (5, 3, 2, 0)
    assert outcome.exit_code == EXIT_SOME_FAILED and not outcome.interrupted

    records = {r["source"]: r for r in _jsonl(out)}
    assert sorted(records) == ["a.png", "cut.jpg", "fake.png", "sub/B.JPG", "sub/c.webp"]
    assert records["fake.png"]["status"] == "error" and records["fake.png"]["error"].startswith("fake.png: not a readable image")
    assert records["cut.jpg"]["status"] == "error" and "cut.jpg" in records["cut.jpg"]["error"]
    assert "truncated" in records["cut.jpg"]["error"] or "decode" in records["cut.jpg"]["error"]
    a = records["a.png"]
    assert a["image_id"] == content_id(files["a"]) and a["duplicate_sources"] == ["sub/a_copy.png"]
    assert a["status"] == "done" and a["best_iteration"] == 2 and len(a["iterations"]) == 3

    for rec in records.values():  # every image has its folder with result.json, inside out/images
        folder = out / rec["output_dir"]
        assert folder.parent == out.resolve() / "images" or folder.parent == out / "images"
        assert json.loads((folder / "result.json").read_text()) == rec
    for source in ("a.png", "sub/B.JPG", "sub/c.webp"):
        rec = records[source]
        ref = Image.open(out / rec["reference"])
        assert ref.format == "PNG" and ref.mode == "RGB" and ref.size == (16, 16)
        for it in rec["iterations"]:
            assert len(it["images"]) == 1 and (out / it["images"][0]).is_file()
        assert (out / rec["output_dir"] / "final_prompt.txt").read_text().startswith(rec["prompt"]["rendered"])
        assert (out / rec["output_dir"] / "scores.csv").is_file()

    rows = list(csv.DictReader(io.StringIO((out / "results.csv").read_text())))
    assert sorted(r["source"] for r in rows) == sorted(records)
    rows, summary, pages = read_browser(out)  # every image a page shows exists
    assert sorted(rows) == sorted(r["image_id"] for r in records.values()) and summary["total"] == 5
    assert sorted(r["st"] for r in rows.values()) == ["done"] * 3 + ["error"] * 2
    for source in ("a.png", "sub/B.JPG", "sub/c.webp"):
        srcs = [attrs["src"] for tag, attrs in pages[records[source]["image_id"]].tags if tag == "img"]
        assert len(srcs) == 1 + 3  # reference + 3 iterations
    assert "fake.png: not a readable image" in "".join(pages[records["fake.png"]["image_id"]].text)
    assert "fake.png: not a readable image" in rows[records["fake.png"]["image_id"]]["err"]
    assert not list(out.rglob("*.tmp"))  # no temporary files left behind


async def test_batch_all_good_is_exit_0_and_respects_concurrency(tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    for i in range(7):
        Image.new("RGB", (8, 8), (i * 30, 0, 0)).save(images / f"{i}.png")
    opt = ScriptedOptimise(steps=2, step_delay_s=0.01)
    outcome = await _run(images, tmp_path / "out", opt, concurrency=3)
    assert outcome.exit_code == EXIT_OK and outcome.done == 7
    assert opt.max_running == 3  # up to, and not over, the limit


async def test_batch_optimise_failures_become_error_records(tmp_path):
    files = write_image_folder(tmp_path / "imgs")
    a, b = content_id(files["a"]), content_id(files["b"])
    opt = ScriptedOptimise(fail_ids={a}, error_status_ids={b})
    outcome = await _run(tmp_path / "imgs", tmp_path / "out", opt)
    assert (outcome.done, outcome.failed) == (1, 4)
    records = {r["image_id"]: r for r in _jsonl(tmp_path / "out")}
    assert records[a]["error"] == f"a.png: optimisation failed: RuntimeError: scripted failure for {a}"
    assert records[b]["status"] == "error" and "propose" in records[b]["error"]
    assert records[b]["source"] == "sub/B.JPG"


async def test_batch_interrupted_then_resumed(tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    for i in range(6):
        Image.new("RGB", (8, 8), (i * 40, 10, 10)).save(images / f"img{i}.png")
    ids = [content_id(images / f"img{i}.png") for i in range(6)]
    out = tmp_path / "out"
    opt = ScriptedOptimise(steps=4, step_delay_s=0.005)
    for blocked in ids[2:]:  # only the first two may finish in the first run
        opt.gates[blocked] = asyncio.Event()
    stop = asyncio.Event()

    async def stop_after_two():
        def waiting_at_gate():
            return [i for i in ids[2:] if opt.progress.get(i) == 4]

        while len(opt.completed) < 2 or len(waiting_at_gate()) < 2:
            await asyncio.sleep(0.005)
        stop.set()

    stopper = asyncio.create_task(stop_after_two())
    first = await _run(images, out, opt, concurrency=4, stop=stop)
    await stopper
    assert first.interrupted and first.exit_code == EXIT_INTERRUPTED
    assert (first.done, first.failed) == (2, 0)
    assert sorted(r["image_id"] for r in _jsonl(out)) == sorted(ids[:2])
    at_gate = [i for i in ids[2:] if opt.progress.get(i) == 4]  # all iterations "checkpointed", not finished
    assert len(at_gate) >= 2
    assert read_browser(out)[1]["interrupted"] is True

    finished_files = {p: (p.read_bytes(), p.stat().st_mtime_ns)
                      for rec in _jsonl(out) for p in (out / rec["output_dir"]).iterdir()}
    log_before = (out / "results.jsonl").read_bytes()

    for gate in opt.gates.values():
        gate.set()
    opt.calls.clear()
    second = await _run(images, out, opt, concurrency=4)
    assert second.exit_code == EXIT_OK and (second.skipped, second.done, second.failed) == (2, 4, 0)
    assert sorted(opt.calls) == sorted(ids[2:])  # finished images were not run again
    for image_id in at_gate:  # interrupted ones continued from their saved progress
        assert opt.started_at[image_id] == [0, 4]
    for path, (data, mtime) in finished_files.items():  # and their files were not touched
        assert path.read_bytes() == data and path.stat().st_mtime_ns == mtime
    log_after = (out / "results.jsonl").read_bytes()
    assert log_after.startswith(log_before)
    assert sorted(r["image_id"] for r in _jsonl(out)) == sorted(ids)
    assert all(r["status"] == "done" for r in _jsonl(out))
    assert read_browser(out)[1]["interrupted"] is False


async def test_batch_cancelled_task_keeps_finished_results_and_resumes(tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    for i in range(4):
        Image.new("RGB", (8, 8), (0, i * 50, 0)).save(images / f"{i}.png")
    out = tmp_path / "out"
    opt = ScriptedOptimise(steps=3, step_delay_s=0.02)
    task = asyncio.create_task(_run(images, out, opt, concurrency=1))
    while len(opt.completed) < 1:
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.03)  # the second image is now half-way
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    done_first = [r["image_id"] for r in _jsonl(out)]
    assert len(done_first) == 1
    assert len(list(csv.DictReader(io.StringIO((out / "results.csv").read_text())))) == 1  # summaries caught up
    second = await _run(images, out, opt, concurrency=2)
    assert second.exit_code == EXIT_OK and second.skipped == 1 and second.done == 3
    assert len(_jsonl(out)) == 4


async def test_batch_rerun_retries_failed_images(tmp_path):
    files = write_image_folder(tmp_path / "imgs")
    a = content_id(files["a"])
    out = tmp_path / "out"
    first = await _run(tmp_path / "imgs", out, ScriptedOptimise(fail_ids={a}))
    assert first.failed == 3
    second = await _run(tmp_path / "imgs", out, ScriptedOptimise())
    assert (second.skipped, second.done, second.failed) == (2, 1, 2)  # a retried; the unreadable files fail again
    latest = {r["image_id"]: r["status"] for r in _jsonl(out)}  # the log keeps both lines for a; the last counts
    assert latest[a] == "done" and [r["image_id"] for r in _jsonl(out)].count(a) == 2
    rows = {r["image_id"]: r for r in csv.DictReader(io.StringIO((out / "results.csv").read_text()))}
    assert rows[a]["status"] == "done" and len(rows) == 5


async def test_batch_output_inside_image_folder_is_not_rescanned(tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    Image.new("RGB", (8, 8)).save(images / "only.png")
    out = images / "results"
    assert (await _run(images, out, ScriptedOptimise())).done == 1
    assert [i.source.rel for i in plan_work(images, out)] == ["only.png"]
    again = await _run(images, out, ScriptedOptimise())
    assert (again.total, again.skipped, again.done) == (1, 1, 0)


async def test_batch_bomb_limit_from_config(tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    Image.new("RGB", (64, 64)).save(images / "big.png")
    Image.new("RGB", (8, 8)).save(images / "small.png")
    outcome = await run_batch(_cfg(max_image_pixels=1000), images, tmp_path / "out", roles=None, optimise_fn=ScriptedOptimise(),
                              graph=GRAPH, progress_stream=io.StringIO())
    records = {r["source"]: r for r in _jsonl(tmp_path / "out")}
    assert outcome.failed == 1 and "decompression bomb" in records["big.png"]["error"]
    assert records["small.png"]["status"] == "done"


async def test_batch_setup_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SetupError, match="no image files found"):
        await _run(tmp_path / "empty", tmp_path / "out", ScriptedOptimise())
    with pytest.raises(SetupError, match="no such image folder"):
        await _run(tmp_path / "missing", tmp_path / "out", ScriptedOptimise())
    write_image_folder(tmp_path / "imgs")
    with exclusive_output(tmp_path / "busy"):
        with pytest.raises(SetupError, match="another batch job"):
            await _run(tmp_path / "imgs", tmp_path / "busy", ScriptedOptimise())


async def test_batch_unreadable_file_is_an_error_record(tmp_path, monkeypatch):
    images = tmp_path / "imgs"
    images.mkdir()
    Image.new("RGB", (8, 8)).save(images / "locked.png")
    Image.new("RGB", (8, 8), (9, 9, 9)).save(images / "fine.png")
    import agents.image_id

    real = agents.image_id.content_id

    def content_id_or_denied(path):  # as reading a file without permission fails (root would not fail)
        if Path(path).name == "locked.png":
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(agents.image_id, "content_id", content_id_or_denied)
    outcome = await _run(images, tmp_path / "out", ScriptedOptimise())
    records = {r["source"]: r for r in _jsonl(tmp_path / "out")}
    assert (outcome.failed, outcome.done) == (1, 1)
    assert records["locked.png"]["error"] == "locked.png: cannot read file: Permission denied"
    assert records["locked.png"]["image_id"].startswith("unusable-")


async def test_each_images_object_store_references_are_released_when_it_ends(tmp_path, monkeypatch):
    """Done or failed, an image's references (actors.object_refs.ImageRefs) leave the shelf when it ends, so the
    object store holds only what is in flight."""
    import agents.batch.runner as runner
    from actors.object_refs import ImageRefs

    shelves = []

    class Recording(ImageRefs):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            shelves.append(self)

    monkeypatch.setattr(runner, "ImageRefs", Recording)
    files = write_image_folder(tmp_path / "imgs")
    failing = content_id(files["a"])
    held = {}

    class Keeping(ScriptedOptimise):
        async def __call__(self, image_id, *args, **kw):
            shelves[0].set_generation(image_id, {"x.png": object()})  # as the graph's generate node would
            held[image_id] = shelves[0].stats()["owners"]
            return await super().__call__(image_id, *args, **kw)

    outcome = await _run(tmp_path / "imgs", tmp_path / "out", Keeping(steps=1, fail_ids={failing}))
    assert outcome.failed >= 1 and outcome.done >= 1
    assert len(shelves) == 1 and failing in held and max(held.values()) >= 1
    assert shelves[0].stats()["owners"] == 0 and shelves[0].max_owners >= 64
