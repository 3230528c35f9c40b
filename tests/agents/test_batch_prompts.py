"""--prompts-per-image and --caption-prefix through the real batch job (real graph and SQLite checkpointer,
scripted roles): result.json, captions.jsonl, metadata.jsonl as 🤗 datasets and MDSS training read it, the
results browser, a rerun that re-ranks without a model call, and the command line's errors."""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest

from agents.batch.captions import CAPTIONS_JSONL, METADATA_JSONL, CaptionOptions
from agents.batch.errors import EXIT_OK, EXIT_SETUP_ERROR
from agents.batch.runner import run_batch
from agents.batch_reverse import main
from agents.config import ArpoConfig
from tests.agents.doubles import call_counts
from tests.agents.test_batch_agent import _images, _roles, _world
from tests.agents.test_report import read_browser
from training.data import read_captions


def _cfg(**agent) -> ArpoConfig:
    return ArpoConfig.model_validate({"agent": {"framework": "vanilla", "max_steps": 3, "seeds": [0], **agent},
                                      "job": {"summary_refresh_s": 0}})


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _latest(out: Path) -> dict[str, dict]:
    return {r["source"]: r for r in _jsonl(out / "results.jsonl")}


@pytest.fixture
def batch(tmp_path):
    """A finished batch of three copies of the doubles' reference (and one broken file), K=2 and a trigger word."""
    world = _world()
    _images(tmp_path / "imgs", world)
    (tmp_path / "imgs" / "notes.png").unlink()
    roles = _roles(world)
    return tmp_path / "imgs", tmp_path / "out", roles


async def test_k_prompts_and_a_trigger_word_reach_every_output(batch):
    images, out, roles = batch
    outcome = await run_batch(_cfg(prompts_per_image=2, caption_prefix="ohwx"), images, out, roles, concurrency=2,
                              progress_stream=io.StringIO(), captions=CaptionOptions(txt_mirror=True))
    assert outcome.exit_code == EXIT_OK
    for source, rec in _latest(out).items():
        result = json.loads((out / rec["output_dir"] / "result.json").read_text())
        assert result == rec
        ranked = rec["prompts"]
        assert rec["prompts_per_image"] == 2 and len(ranked) == 2
        assert ranked[0]["rendered"] == rec["prompt"]["rendered"] and ranked[0]["clip_i"] == rec["best_clip_i"]
        assert ranked[1]["clip_i"] <= ranked[0]["clip_i"]
        assert {*ranked[1]["content"], *ranked[1]["style"]} != {*ranked[0]["content"], *ranked[0]["style"]}
        assert rec["caption"] == "ohwx, " + rec["prompt"]["rendered"] and ranked[1]["caption"] == "ohwx, " + ranked[1]["rendered"]
    # ref.png, ref.bmp and ref.tiff would share captions/ref.txt: the first by name has it
    assert (out / "captions" / "ref.txt").read_text() == _latest(out)["ref.bmp"]["caption"] + "\n"
    captions = {r["file"]: r["text"] for r in _jsonl(out / CAPTIONS_JSONL)}
    assert captions == {s: r["caption"] for s, r in _latest(out).items()}
    meta = _jsonl(out / METADATA_JSONL)
    assert {r["file_name"]: (r["text"], r["alternatives"]) for r in meta} == {
        s: (r["caption"], [r["prompts"][1]["caption"]]) for s, r in _latest(out).items()}
    # MDSS fine-tuning reads metadata.jsonl where it is ...
    assert {p.name: t for p, t in read_captions(images, str(out / METADATA_JSONL))} == {
        s: r["caption"] for s, r in _latest(out).items()}
    # ... and 🤗 datasets' imagefolder loader reads the folder once the file is copied into it
    datasets = pytest.importorskip("datasets")
    shutil.copy(out / METADATA_JSONL, images / METADATA_JSONL)
    loaded = datasets.load_dataset("imagefolder", data_dir=str(images), split="train")
    assert sorted(loaded["text"]) == sorted(r["caption"] for r in _latest(out).values())
    assert loaded[0]["image"].size == (16, 16)
    # the results browser shows the ranked prompts and the caption
    _, _, pages = read_browser(out)
    text = "".join(next(iter(pages.values())).text)
    assert "Best distinct prompts" in text and "Training caption" in text and "ohwx, " in text


async def test_a_rerun_with_another_k_re_ranks_without_a_model_call(batch, capsys):
    images, out, roles = batch
    await run_batch(_cfg(prompts_per_image=1), images, out, roles, concurrency=2, progress_stream=io.StringIO())
    assert all(len(r["prompts"]) == 1 for r in _latest(out).values())
    assert all("alternatives" not in r for r in _jsonl(out / METADATA_JSONL))
    assert main(["--dir", str(images), "--out", str(out), "--prompts-per-image", "3", "--dry-run",
                 "--set", "agent.framework=vanilla", "--set", "agent.max_steps=3"]) == EXIT_OK
    listing = capsys.readouterr().out
    assert listing.count("rerank ") == 3 and "3 done to re-rank for --prompts-per-image (no model call)" in listing
    before = call_counts(roles)
    again = await run_batch(_cfg(prompts_per_image=3), images, out, roles, concurrency=2, progress_stream=io.StringIO())
    assert call_counts(roles) == before and (again.skipped, again.done) == (3, 0)
    for rec in _latest(out).values():
        assert rec["prompts_per_image"] == 3 and len(rec["prompts"]) == min(3, len(rec["iterations"]))
        assert json.loads((out / rec["output_dir"] / "result.json").read_text())["prompts_per_image"] == 3
    meta = _jsonl(out / METADATA_JSONL)
    assert len(meta) == 3 and all(len(r["alternatives"]) == 2 for r in meta)  # compacted: one line per image
    # a third run with the same K re-ranks nothing
    lines = len((out / "results.jsonl").read_text().splitlines())
    await run_batch(_cfg(prompts_per_image=3), images, out, roles, concurrency=2, progress_stream=io.StringIO())
    assert len((out / "results.jsonl").read_text().splitlines()) == lines


async def test_another_trigger_word_changes_results_and_is_refused(batch, capsys):
    images, out, roles = batch
    await run_batch(_cfg(caption_prefix="ohwx"), images, out, roles, concurrency=2, progress_stream=io.StringIO())
    code = main(["--dir", str(images), "--out", str(out), "--caption-prefix", "sks", "--set", "agent.framework=vanilla",
                 "--set", "agent.max_steps=3"])
    assert code == EXIT_SETUP_ERROR
    assert "agent.caption_prefix: 'ohwx' -> 'sks'" in capsys.readouterr().err


@pytest.mark.parametrize("flag, value, message", [
    ("--caption-prefix", "ohwx, man", "--caption-prefix: agent.caption_prefix: Value error, 'ohwx, man' holds a comma"),
    ("--caption-prefix", " ", "--caption-prefix: agent.caption_prefix: Value error, ' ' is empty"),
    ("--prompts-per-image", "101", "--prompts-per-image: agent.prompts_per_image: Input should be less than or equal to 100"),
])
def test_bad_flags_are_refused_naming_the_flag(tmp_path, capsys, flag, value, message):
    (tmp_path / "imgs").mkdir()
    assert main(["--dir", str(tmp_path / "imgs"), "--out", str(tmp_path / "out"), flag, value, "--dry-run"]) == EXIT_SETUP_ERROR
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
