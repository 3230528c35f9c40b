"""The loop docs/captions_loop.md shows, offline: reverse prompts for a folder (the batch job's CLI, with the
model roles replaced by the scripted doubles), then MDSS fine-tuning of an SD-style pipeline (the offline
kit's tiny random-weight one, actors/offline_kit/t2i.py) on the images with those prompts as captions,
through ``python -m training.train`` on a local Ray."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import agents.batch_reverse as br
from agents.batch.startup import RunningRoles
from core.config import load_config
from tests.agents.doubles import World, fragment_sum, make_roles
from training.checkpoint import read_training_state
from training.config import TrainConfig
from training.data import build_dataset

pytestmark = [pytest.mark.slow, pytest.mark.ray]

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "mdss" / "tiny_text2image.yaml"


def test_reverse_prompts_then_fine_tune_on_them(tmp_path, monkeypatch, capsys):
    from actors.offline_kit import t2i

    # 1. reverse prompts for a folder: three distinct files (one picture in three encodings) and a copy
    world = World(fragment_sum({"red ball": 0.05, "oil painting": 0.02}, unknown=-0.01))
    monkeypatch.setattr(br, "start_ray_and_roles",
                        lambda cfg, **_: RunningRoles(make_roles(world, {None: ['["red ball", "oil painting"]'] * 100}), False))
    images, out = tmp_path / "images", tmp_path / "arpo"
    (images / "sub").mkdir(parents=True)
    reference = Image.fromarray(world.reference)
    for name in ("a.png", "b.bmp", "c.tiff", "sub/a_copy.png"):
        reference.save(images / name)
    assert br.main(["--dir", str(images), "--out", str(out), "--set", "agent.framework=vanilla",
                    "--set", "agent.max_steps=2", "--concurrency", "2"]) == br.EXIT_OK, capsys.readouterr().err
    captions = [json.loads(line) for line in (out / "captions.jsonl").read_text().splitlines()]
    assert sorted(c["file"] for c in captions) == ["a.png", "b.bmp", "c.tiff", "sub/a_copy.png"]
    assert all("red ball" in c["text"] for c in captions)

    # 2. fine-tune on them: the SD config with the folder and the captions file, as the docs show
    pipeline = t2i.build(tmp_path / "kit")["model"]
    overrides = [f"model.pipeline={pipeline}", f"schedule.from_scheduler_config={pipeline}", f"data.path={images}",
                 f"data.captions_file={out / 'captions.jsonl'}", "data.image_size=64", f"run_dir={tmp_path / 'runs'}",
                 "total_steps=2", "checkpoint_every=2", "sample.every=2"]
    cfg = load_config(TrainConfig, CONFIG, overrides)
    pairs = build_dataset(cfg.data).pairs  # what the workers will read
    assert {p.relative_to(images).as_posix(): t for p, t in pairs} == {c["file"]: c["text"] for c in captions}
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    env.pop("RAY_ADDRESS", None)
    command = [sys.executable, "-m", "training.train", "--config", str(CONFIG)]
    for override in overrides:
        command += ["--set", override]
    run = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    checkpoint = tmp_path / "runs" / "tiny_text2image" / "checkpoint_00000002"
    assert f"latest checkpoint {checkpoint}" in run.stdout
    assert read_training_state(checkpoint, torch.device("cpu"))["step"] == 2
    assert (checkpoint / "samples.png").is_file()
