"""Captions for training (agents/batch/captions.py): OUT/captions.jsonl as training.data reads it, the
.txt options, reruns, and a kill between an image's record and its caption."""
from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from agents.batch.captions import CAPTIONS_JSONL, METADATA_JSONL, CaptionOptions, Captions, txt_name
from agents.batch.errors import EXIT_OK, EXIT_SOME_FAILED
from agents.batch.plan import ImageSource
from agents.batch.runner import run_batch
from agents.config import ArpoConfig
from agents.result import PromptOut
from agents.browser.results import ResultsLog
from tests.agents.batch_doubles import ScriptedOptimise, write_image_folder
from training.data import read_captions

REPO = Path(__file__).resolve().parents[2]
GRAPH = object()


class Captioning(ScriptedOptimise):
    """The scripted optimise, with a best prompt of its own per image: ``<tag> <first 8 hex of the id>``."""

    def __init__(self, tag: str = "prompt", **kw):
        super().__init__(**kw)
        self.tag = tag

    async def __call__(self, image_id, *args, **kw):
        result = await super().__call__(image_id, *args, **kw)
        if result.status != "done":
            return result
        text = f"{self.tag} {image_id[:8]}"
        return result.model_copy(update={"prompt": PromptOut(content=[text], style=[], rendered=text)})


def _cfg(**agent) -> ArpoConfig:
    return ArpoConfig.model_validate({"job": {"summary_refresh_s": 0}, "agent": agent})


async def _run(images, out, opt, cfg=None, **kw):
    return await run_batch(cfg or _cfg(), images, out, roles=None, concurrency=2, optimise_fn=opt, graph=GRAPH,
                           progress_stream=io.StringIO(), **kw)


def _lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / CAPTIONS_JSONL).read_text().splitlines()]


def _expected(images: Path, out: Path, tag: str = "prompt") -> dict[str, str]:
    """What the captions must say: every done record's sources, each with its image's caption."""
    expected = {}
    for record in ResultsLog(out / "results.jsonl", repair=False).records():
        if record["status"] == "done":
            for source in [record["source"], *record["duplicate_sources"]]:
                expected[source] = f"{tag} {record['image_id'][:8]}"
    return expected


async def test_captions_jsonl_is_what_training_reads_with_duplicates_and_no_failures(tmp_path):
    images, out = tmp_path / "imgs", tmp_path / "out"
    write_image_folder(images)
    outcome = await _run(images, out, Captioning())
    assert outcome.exit_code == EXIT_SOME_FAILED  # fake.png and cut.jpg
    rows = _lines(out)
    got = {r["file"]: r["text"] for r in rows}
    assert len(rows) == len(got)  # one line per file
    assert sorted(got) == ["a.png", "sub/B.JPG", "sub/a_copy.png", "sub/c.webp"]  # the duplicate too, no failures
    assert got == _expected(images, out)
    assert got["a.png"] == got["sub/a_copy.png"]
    # training reads exactly these pairs, from the image folder, with the captions file in OUT
    pairs = read_captions(images, str(out / CAPTIONS_JSONL))
    assert {p.relative_to(images).as_posix(): t for p, t in pairs} == got
    # nothing else: no .txt anywhere unless asked, never inside the image folder
    assert not (out / "captions").exists()
    assert sorted(p.name for p in images.rglob("*.txt")) == ["readme.txt"]


async def test_rerun_adds_no_lines_and_a_changed_caption_wins_in_writer_and_reader(tmp_path):
    images, out = tmp_path / "imgs", tmp_path / "out"
    write_image_folder(images)
    await _run(images, out, Captioning("first"))
    before = (out / CAPTIONS_JSONL).read_bytes()
    await _run(images, out, Captioning("first"))  # everything done: skipped
    assert (out / CAPTIONS_JSONL).read_bytes() == before
    # settings changed, every image redone with other prompts: new lines appended as images finish ...
    changed = _cfg(max_steps=7)
    await _run(images, out, Captioning("second"), changed, on_change="fresh")
    rows = _lines(out)
    assert len(rows) == 8 and [r["text"].split()[0] for r in rows] == ["first"] * 4 + ["second"] * 4
    # ... the last line per file wins, for the writer's reconciliation and for training's reader alike
    pairs = read_captions(images, str(out / CAPTIONS_JSONL))
    assert len(pairs) == 4 and {p.relative_to(images).as_posix(): t for p, t in pairs} == _expected(images, out, "second")
    # metadata.jsonl, which dataset loaders read, was compacted to one line per file when the run ended
    meta = [json.loads(line) for line in (out / METADATA_JSONL).read_text().splitlines()]
    assert {r["file_name"]: r["text"] for r in meta} == _expected(images, out, "second") and len(meta) == 4
    # the next start compacts the file to one line per file
    await _run(images, out, Captioning("second"), changed)
    assert {r["file"]: r["text"] for r in _lines(out)} == _expected(images, out, "second") and len(_lines(out)) == 4


async def test_start_up_mends_missing_torn_and_stale_lines(tmp_path):
    images, out = tmp_path / "imgs", tmp_path / "out"
    write_image_folder(images)
    await _run(images, out, Captioning())
    expected = _expected(images, out)
    rows = _lines(out)
    # as a crash could leave it: a.png's line lost, a torn last line, and a line for a file since deleted
    kept = [r for r in rows if r["file"] != "a.png"] + [{"file": "gone.png", "text": "old"}]
    (images / "gone.png").write_bytes(b"x")
    (out / CAPTIONS_JSONL).write_text("".join(json.dumps(r) + "\n" for r in kept) + '{"file": "sub/c.webp", "te')
    (images / "gone.png").unlink()
    opt = Captioning()
    outcome = await _run(images, out, opt)
    assert outcome.exit_code == EXIT_SOME_FAILED and opt.completed == []  # nothing was redone
    assert {r["file"]: r["text"] for r in _lines(out)} == expected and len(_lines(out)) == len(expected)


async def test_txt_captions_in_a_mirror_tree_and_beside_images_when_asked(tmp_path, caplog):
    images, out = tmp_path / "imgs", tmp_path / "out"
    write_image_folder(images)
    rng = np.random.default_rng(5)
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(images / "a.jpg")  # a.txt: a.jpg's
    with caplog.at_level(logging.WARNING, logger="agents.batch.captions"):
        await _run(images, out, Captioning(), captions=CaptionOptions(txt_mirror=True, beside_images=True))
    expected = _expected(images, out)
    assert "a.jpg and a.png would share" in caplog.text
    mirror = {p.relative_to(out / "captions").as_posix(): p.read_text() for p in (out / "captions").rglob("*.txt")}
    assert mirror == {"a.txt": expected["a.jpg"] + "\n", "sub/B.txt": expected["sub/B.JPG"] + "\n",
                      "sub/a_copy.txt": expected["sub/a_copy.png"] + "\n", "sub/c.txt": expected["sub/c.webp"] + "\n"}
    beside = {p.relative_to(images).as_posix(): p.read_text() for p in images.rglob("*.txt") if p.name != "readme.txt"}
    assert beside == mirror
    assert not [p for p in images.rglob(".*.tmp")]  # atomic writes leave no temporary files
    # a lost .txt comes back at the next start, a current one is left alone
    (out / "captions" / "sub" / "B.txt").unlink()
    stamp = (images / "a.txt").stat().st_mtime_ns
    await _run(images, out, Captioning(), captions=CaptionOptions(txt_mirror=True, beside_images=True))
    assert (out / "captions" / "sub" / "B.txt").read_text() == expected["sub/B.JPG"] + "\n"
    assert (images / "a.txt").stat().st_mtime_ns == stamp
    assert [txt_name(n) for n in ("x.png", "x.tar.png", "noext", ".hidden")] == ["x.txt", "x.tar.txt", "noext.txt", ".hidden.txt"]


async def test_given_files_are_captioned_by_absolute_path(tmp_path):
    rng = np.random.default_rng(3)
    (tmp_path / "p").mkdir()
    (tmp_path / "q").mkdir()
    for folder in ("p", "q"):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / folder / "x.png")
    out = tmp_path / "out"
    source = ImageSource(files=(tmp_path / "p" / "x.png", tmp_path / "q" / "x.png"))
    assert (await _run(source, out, Captioning(), captions=CaptionOptions(txt_mirror=True))).exit_code == EXIT_OK
    got = {r["file"]: r["text"] for r in _lines(out)}
    assert sorted(got) == [str(tmp_path / "p" / "x.png"), str(tmp_path / "q" / "x.png")]
    assert len(set(got.values())) == 2
    # an absolute "file" is read as it is, whatever folder training is pointed at
    assert dict(read_captions(tmp_path / "elsewhere", str(out / CAPTIONS_JSONL))) == {Path(k): v for k, v in got.items()}
    assert sorted(p.relative_to(out / "captions").as_posix() for p in (out / "captions").rglob("*.txt")) \
        == ["p/x.txt", "q/x.txt"]


def test_captions_of_a_plan_without_results_are_empty(tmp_path):
    images = tmp_path / "imgs"
    write_image_folder(images)
    source = ImageSource(folder=images)
    captions = Captions(tmp_path / "out", source, source.plan(tmp_path / "out"))
    (tmp_path / "out").mkdir()
    assert captions.reconcile(ResultsLog(tmp_path / "out" / "results.jsonl")) == 0
    assert not (tmp_path / "out" / CAPTIONS_JSONL).exists()  # nothing done, nothing written


# The real job's CLI with role doubles, killed (SIGKILL) right after an image's record is durable and
# before its caption is written: the next run must complete the captions.
KILL_DRIVER = r"""
import os, signal, sys
sys.path.insert(0, sys.argv[1])
import agents.batch_reverse as br
import agents.batch.captions as captions
from agents.batch.startup import RunningRoles
from tests.agents.doubles import World, fragment_sum, make_roles

world = World(fragment_sum({"red ball": 0.05}, unknown=-0.01))
roles = make_roles(world, {None: ['["red ball"]'] * 400})
br.start_ray_and_roles = lambda cfg, **_: RunningRoles(roles, False)
if os.environ.get("KILL_BEFORE_CAPTION"):
    def killed(self, item, record):
        os.kill(os.getpid(), signal.SIGKILL)
    captions.Captions.write = killed
sys.exit(br.main(sys.argv[2:]))
"""


def test_killed_between_record_and_caption_then_rerun_completes_the_captions(tmp_path):
    from tests.agents.doubles import World, fragment_sum

    world = World(fragment_sum({"red ball": 0.05}, unknown=-0.01))
    images = tmp_path / "imgs"
    images.mkdir()
    Image.fromarray(world.reference).save(images / "ref.png")
    Image.fromarray(world.reference).save(images / "same.png")  # a duplicate: captioned too
    out = tmp_path / "out"
    args = ["--dir", str(images), "--out", str(out), "--concurrency", "1", "--set", "agent.framework=vanilla",
            "--set", "agent.max_steps=2", "--set", "job.summary_refresh_s=0"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "KILL_BEFORE_CAPTION": "1"}
    killed = subprocess.run([sys.executable, "-c", KILL_DRIVER, str(REPO), *args], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    records = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert [r["status"] for r in records] == ["done"]  # the record is durable ...
    assert not (out / CAPTIONS_JSONL).exists()  # ... its caption is not
    env.pop("KILL_BEFORE_CAPTION")
    rerun = subprocess.run([sys.executable, "-c", KILL_DRIVER, str(REPO), *args], env=env, cwd=REPO,
                           capture_output=True, text=True, timeout=120)
    assert rerun.returncode == EXIT_OK, rerun.stderr[-2000:]
    assert "1 already done" in rerun.stderr
    text = records[0]["prompt"]["rendered"]
    assert text and _lines(out) == [{"file": "ref.png", "text": text}, {"file": "same.png", "text": text}]
