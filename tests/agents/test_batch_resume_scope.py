"""Resume is scoped to its job: the output folder's identity plus the settings that change results.

Real graph, real SQLite checkpointer (or one shared saver, as a shared Postgres would be),
scripted role doubles. Each test names the failure it guards against on the old keying
(thread id = content hash alone, absolute paths in the state).
"""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from PIL import Image

import agents.batch_reverse as br
from agents.batch.errors import EXIT_OK, SetupError
from agents.batch.identity import JOB_FILE, changed_keys, result_settings
from agents.batch.runner import run_batch
from agents.batch.startup import RunningRoles
from agents.config import ArpoConfig
from agents.graph import build_graph, compile_graph
from tests.agents.doubles import World, call_counts, fragment_sum, make_roles

GOOD = {"red ball": 0.05, "green grass": 0.03}


def _world() -> World:
    return World(fragment_sum(GOOD, unknown=-0.01))


def _roles(world: World, fail_at=None):
    replies = ['["red ball", "a hat"]', '["green grass"]', '["a dog"]'] * 30
    return make_roles(world, {None: replies, "content": replies, "style": replies}, fail_at=fail_at)


def _cfg(**agent) -> ArpoConfig:
    return ArpoConfig.model_validate({"agent": {"framework": "vanilla", "max_steps": 3, "seeds": [0], **agent},
                                      "job": {"summary_refresh_s": 0}})


def _images(folder: Path, world: World, formats=("png", "bmp")) -> Path:
    folder.mkdir()
    for fmt in formats:
        Image.fromarray(world.reference).save(folder / f"ref.{fmt}")
    return folder


def _jsonl(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


async def _run(cfg, images, out, roles, **kw):
    return await run_batch(cfg, images, out, roles, concurrency=1, progress_stream=io.StringIO(), **kw)


def _all_paths(record: dict) -> list[str]:
    return [record["output_dir"], record["reference"], *(p for it in record["iterations"] for p in it["images"])]


async def test_a_moved_output_folder_resumes_its_threads(tmp_path):
    world = _world()
    images = _images(tmp_path / "imgs", world)
    first_out = tmp_path / "first"
    roles = _roles(world, fail_at={"t2i": {"generate": 2}})  # the first image's 2nd iteration fails once
    first = await _run(_cfg(), images, first_out, roles)
    assert (first.done, first.failed) == (1, 1)
    moved = tmp_path / "moved"
    first_out.rename(moved)
    captions = roles.captioner.calls["caption"]
    second = await _run(_cfg(), images, moved, roles)
    # Old keying: the state held absolute paths into the vanished folder, so the resumed image failed.
    assert (second.skipped, second.done, second.failed) == (1, 1, 0)
    assert roles.captioner.calls["caption"] == captions  # resumed from its checkpoint, not restarted
    for record in _jsonl(moved):
        assert all(not Path(p).is_absolute() and (moved / p).exists() for p in _all_paths(record) if record["status"] == "done")


async def test_a_copied_output_folder_writes_only_into_the_copy(tmp_path):
    world = _world()
    images = _images(tmp_path / "imgs", world)
    original = tmp_path / "original"
    await _run(_cfg(), images, original, _roles(world, fail_at={"t2i": {"generate": 2}}))
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    before = {p: p.stat().st_mtime_ns for p in original.rglob("*")}
    outcome = await _run(_cfg(), images, copy, _roles(world))
    assert outcome.done == 1 and outcome.exit_code == EXIT_OK
    # Old keying: the resumed thread's absolute work_dir pointed into the original folder.
    assert {p: p.stat().st_mtime_ns for p in original.rglob("*")} == before
    resumed = [r for r in _jsonl(copy) if r["status"] == "done"][-1]
    assert all((copy / p).exists() for p in _all_paths(resumed))


async def test_two_jobs_on_one_shared_store_never_share_a_thread(tmp_path):
    """One checkpointer for both jobs, as one Postgres database serves several drivers."""
    world = _world()
    images = _images(tmp_path / "imgs", world, formats=("png",))
    saver = InMemorySaver()

    def graph(cfg, out):
        cfg.job.checkpoint.keep_finished_threads = True  # to count the threads the two jobs made
        roles = _roles(world)
        return roles, compile_graph(build_graph(roles, cfg.agent, 77, base_dir=out), saver)

    cfg_a, out_a = _cfg(max_steps=3), tmp_path / "a"
    roles_a, graph_a = graph(cfg_a, out_a)
    assert (await _run(cfg_a, images, out_a, roles_a, graph=graph_a)).done == 1
    cfg_b, out_b = _cfg(framework="enhanced", max_steps=1), tmp_path / "b"
    roles_b, graph_b = graph(cfg_b, out_b)
    assert (await _run(cfg_b, images, out_b, roles_b, graph=graph_b)).done == 1
    # Old keying: job b found job a's finished thread, made no model call and recorded a's result.
    assert call_counts(roles_b)["captioner"] == {"caption": 1} and call_counts(roles_b)["vlm"]
    record_b = _jsonl(out_b)[0]
    assert len(record_b["iterations"]) <= 2 and all((out_b / p).exists() for p in _all_paths(record_b))
    threads = {t.config["configurable"]["thread_id"] for t in saver.list(None)}
    assert len(threads) == 2 and len({t.rsplit(":", 1)[1] for t in threads}) == 1  # same image, two threads


async def test_changed_settings_are_refused_by_name_or_restarted_on_request(tmp_path):
    world = _world()
    images = _images(tmp_path / "imgs", world, formats=("png",))
    out = tmp_path / "out"
    assert (await _run(_cfg(), images, out, _roles(world))).done == 1
    with pytest.raises(SetupError) as refused:
        await _run(_cfg(framework="enhanced"), images, out, _roles(world))
    assert "agent.framework: 'vanilla' -> 'enhanced'" in str(refused.value) and "--settings-changed fresh" in str(refused.value)
    # a setting that only changes speed or placement resumes (nothing to redo)
    faster = _cfg()
    faster.t2i.batching.max_batch_size = 32
    faster.clip.resources.num_gpus = 0.5
    roles = _roles(world)
    assert (await _run(faster, images, out, roles)).skipped == 1 and call_counts(roles)["t2i"] == {}
    # fresh: the image is redone under the new settings, in a new thread
    roles = _roles(world)
    again = await _run(_cfg(framework="enhanced"), images, out, roles, on_change="fresh")
    assert (again.skipped, again.done) == (0, 1) and call_counts(roles)["vlm"]
    job = json.loads((out / JOB_FILE).read_text())
    assert job["settings"]["agent.framework"] == "enhanced" and job["previous"]["changed"]
    records = _jsonl(out)
    assert len(records) == 2 and records[0]["settings_fingerprint"] != records[1]["settings_fingerprint"]


def test_cli_names_changed_settings_and_fresh_flag(tmp_path, monkeypatch, capsys):
    world = _world()
    images = _images(tmp_path / "imgs", world, formats=("png",))
    monkeypatch.setattr(br, "start_ray_and_roles", lambda cfg, **_: RunningRoles(_roles(world), False))
    base = ["--dir", str(images), "--out", str(tmp_path / "out"), "--set", "agent.framework=vanilla", "--set", "job.summary_refresh_s=0"]
    assert br.main(base) == EXIT_OK
    assert br.main([*base, "--set", "agent.seeds=[0,1]"]) == br.EXIT_SETUP_ERROR
    assert "agent.seeds: [0] -> [0, 1]" in capsys.readouterr().err
    assert br.main([*base, "--set", "agent.seeds=[0,1]", "--settings-changed", "fresh"]) == EXIT_OK


def test_settings_fingerprint_covers_what_changes_results_only():
    base = result_settings(ArpoConfig())
    changed = ArpoConfig()
    changed.llm.sampling.temperature = 0.1
    changed.t2i.model = "/models/other"
    changed.llm.vllm.gpu_memory_utilization = 0.5
    changed.job.concurrency = 3
    assert changed_keys(base, result_settings(changed)) == [
        "llm.sampling.temperature: 0.7 -> 0.1", "t2i.model: 'stable-diffusion-v1-5/stable-diffusion-v1-5' -> '/models/other'"]
    assert not any(k.startswith(("job.concurrency", "ray.")) or ".resources." in k or ".batching." in k for k in base)


async def test_two_jobs_with_different_settings_on_one_real_postgres_never_cross(tmp_path, postgres_db_url, monkeypatch):
    """The documented several-drivers mode: one Postgres database, two jobs, two output folders."""
    monkeypatch.setenv("ARPO_TEST_PG", postgres_db_url)
    world = _world()
    images = _images(tmp_path / "imgs", world)

    def cfg(**agent):
        c = _cfg(**agent)
        c.job.checkpoint.kind, c.job.checkpoint.postgres_url_env = "postgres", "ARPO_TEST_PG"
        return c

    roles_a = _roles(world)
    a = await _run(cfg(max_steps=3), images, tmp_path / "a", roles_a)
    roles_b = _roles(world)
    b = await _run(cfg(framework="enhanced", max_steps=1), images, tmp_path / "b", roles_b)
    assert (a.done, b.done) == (2, 2)
    # Old keying (content hash alone): job b made no model call and recorded job a's results.
    assert call_counts(roles_b)["captioner"] == {"caption": 2} and call_counts(roles_b)["vlm"]
    for out, other in ((tmp_path / "a", tmp_path / "b"), (tmp_path / "b", tmp_path / "a")):
        for record in _jsonl(out):
            assert all((out / p).exists() for p in _all_paths(record))
            assert str(other) not in json.dumps(record)
    assert all(len(r["iterations"]) <= 2 for r in _jsonl(tmp_path / "b"))
    assert not (tmp_path / "a" / "checkpoints.sqlite").exists()  # the state went to Postgres


async def test_a_setting_added_by_a_later_version_with_its_default_still_resumes(tmp_path):
    world = _world()
    images = _images(tmp_path / "imgs", world, formats=("png",))
    out = tmp_path / "out"
    assert (await _run(_cfg(), images, out, _roles(world))).done == 1
    job = json.loads((out / JOB_FILE).read_text())
    del job["settings"]["job.reference_max_side"]  # as written before that field existed
    job["fingerprint"] = "0" * 64  # ... and fingerprinted then
    (out / JOB_FILE).write_text(json.dumps(job))
    log = out / "results.jsonl"
    log.write_text(log.read_text().replace(_jsonl(out)[0]["settings_fingerprint"], "0" * 64))
    roles = _roles(world)
    again = await _run(_cfg(), images, out, roles)
    assert again.skipped == 1 and call_counts(roles)["t2i"] == {}  # not refused, nothing redone
    assert json.loads((out / JOB_FILE).read_text())["fingerprint"] == "0" * 64
    with pytest.raises(SetupError, match="job.reference_max_side: 1024 -> 512"):
        await _run(_cfg_with(reference_max_side=512), images, out, _roles(world))


def _cfg_with(**job) -> ArpoConfig:
    cfg = _cfg()
    for key, value in job.items():
        setattr(cfg.job, key, value)
    return cfg
