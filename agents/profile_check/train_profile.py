"""An MDSS training profile as it runs on this CPU for a check: models replaced by their twins, data by
a few generated images where the profile points at a dataset that is not here, and a few steps.

Kept: the strategy and its settings, the schedule source, the model kind (from scratch, pretrained
UNet, SD-style pipeline), the sampler, the number of Ray Train workers (at most 2 on this machine).
Each change is listed, one line each. The real Ray Train loop then runs it (``python -m training.train``,
a process of its own, which validates the profile): this module only rewrites the mapping (no training
import: the check stays a shell over both).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from actors.model_source import looks_like_path
from actors.offline_kit.twins import T2I_TWINS, twin_for

STEPS = 2
UNET_TWINS = {"google/ddpm-cifar10-32": "ddpm_unet"}


class NoTrainTwin(ValueError):
    """A model the profile names has no twin yet."""


def _set(section: dict, key: str, value: Any, where: str, why: str, lines: list) -> None:
    old = section.get(key, "<default>")
    if old != value:
        lines.append(f"{where}{key}: {old!r} -> {value!r} ({why})")
    section[key] = value


def _images(folder: Path, n: int, size: int, captions: bool) -> Path:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"img{i:02d}.png")
        rows.append({"file": f"img{i:02d}.png", "text": f"a photo of thing number {i}"})
    if captions:
        (folder / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def train_twin_profile(data: dict, kit: Path, work: Path, seed: int = 0) -> tuple[dict, list[str], dict]:
    """(profile to run, replacement lines, role -> twin description) for TrainConfig fields ``data``."""
    out, lines, twins = copy.deepcopy(data), [], {}
    model, schedule = out.setdefault("model", {}), out.setdefault("schedule", {})
    if model.get("pretrained") and not looks_like_path(model["pretrained"]):
        ref = model["pretrained"]
        if ref not in UNET_TWINS:
            raise NoTrainTwin(f"model.pretrained {ref!r}: no twin for this hub id (agents/profile_check/train_profile.py)")
        from actors.offline_kit import ddpm_unet

        pieces = ddpm_unet.build(kit / UNET_TWINS[ref], seed=seed)
        _set(model, "pretrained", pieces["model"]["pretrained"], "model.", "the twin's folder", lines)
        twins["model"] = f"UNet2DModel + DDPMScheduler ({ref} layout): {pieces['model']['pretrained']}"
        if schedule.get("from_scheduler_config") == ref:
            _set(schedule, "from_scheduler_config", pieces["schedule"]["from_scheduler_config"], "schedule.",
                 "the twin's scheduler config", lines)
    if model.get("pipeline") and not looks_like_path(model["pipeline"]):
        ref = model["pipeline"]
        twin = twin_for(T2I_TWINS, ref)
        if twin is None:
            raise NoTrainTwin(f"model.pipeline {ref!r}: no twin for this hub id (actors/offline_kit/twins.py)")
        section = twin.build(kit, seed=seed)
        _set(model, "pipeline", section["model"], "model.", "the twin's folder", lines)
        twins["model"] = f"{twin.architecture}: {section['model']}"
        if schedule.get("from_scheduler_config") == ref:
            _set(schedule, "from_scheduler_config", section["model"], "schedule.", "the twin's scheduler config", lines)

    data_cfg = out.setdefault("data", {})
    kind = data_cfg.get("kind")
    if kind in ("image_folder", "captioned_images"):
        size = 32 if kind == "image_folder" else 64
        folder = _images(work / "data", 8, size, captions=kind == "captioned_images")
        _set(data_cfg, "path", str(folder), "data.", "8 generated images: no dataset on this machine", lines)
        if kind == "captioned_images":
            _set(data_cfg, "captions_file", "captions.jsonl", "data.", "their captions", lines)
        _set(data_cfg, "image_size", size, "data.", "the twin's size", lines)
    elif kind == "fashion_mnist":
        if not data_cfg.get("limit") or data_cfg["limit"] > 32:
            _set(data_cfg, "limit", 32, "data.", "a check", lines)
    if data_cfg.get("loader_workers"):
        _set(data_cfg, "loader_workers", 0, "data.", "2 cores", lines)

    if out.get("use_gpu"):
        _set(out, "use_gpu", False, "", "no GPU", lines)
    if out.get("num_workers", 1) > 2:
        _set(out, "num_workers", 2, "", "2 cores", lines)
    if out.get("cpus_per_worker", 1) > 1:
        _set(out, "cpus_per_worker", 1, "", "2 cores", lines)
    if out.get("custom_resources_per_worker"):
        _set(out, "custom_resources_per_worker", {}, "", "the local Ray has no cluster node types", lines)
    _set(out, "batch_size", 2, "", "a check", lines)
    _set(out, "total_steps", STEPS, "", "a check: two steps", lines)
    _set(out, "checkpoint_every", STEPS, "", "one checkpoint", lines)
    _set(out, "log_every", 1, "", "a check", lines)
    sample = out.setdefault("sample", {})
    if sample.get("every", 0):
        _set(sample, "every", STEPS, "sample.", "one grid", lines)
        _set(sample, "num_images", 2, "sample.", "a check", lines)
        sampler = sample.setdefault("sampler", {})
        _set(sampler, "num_steps", 3, "sample.sampler.", "a check", lines)
    ema = out.get("ema") or {}
    if ema.get("warmup_steps", 0) and ema["warmup_steps"] > STEPS:
        _set(ema, "warmup_steps", 0, "ema.", "a check", lines)
    optimizer = out.get("optimizer") or {}
    if optimizer.get("warmup_steps", 0) > STEPS:
        _set(optimizer, "warmup_steps", 0, "optimizer.", "a check", lines)
    _set(out, "run_dir", str(work / "runs"), "", "the check's folder", lines)
    ray = out.setdefault("ray", {})
    if ray.get("address"):
        _set(ray, "address", None, "ray.", "a local Ray", lines)
    _set(ray, "num_cpus", 2, "ray.", "this machine", lines)
    return out, lines, twins
