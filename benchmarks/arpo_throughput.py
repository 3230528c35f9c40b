"""ARPO batch-job throughput at several concurrencies, on one set of Ray actors.

    python benchmarks/arpo_throughput.py [--config configs/offline.yaml] [--images 64]
        [--concurrency 1,8,64] [--baseline-images 8] [--set key=value ...]

Starts Ray and the five role actors once (from the config), makes N distinct images
(crops and flips of the bundled samples), then runs ``agents.batch.runner.run_batch``
on them at each concurrency into a fresh output folder, and prints per concurrency:

- images per minute and iterations per second (iterations = generate steps recorded);
- the mean batch size the CLIP scorer (texts, images) and the T2I actor actually saw in
  that run (difference of the actors' batcher counters before and after);
- orchestration: the driver process's CPU time per iteration (graph, checkpointer,
  serialisation, results writing: everything the driver does that is not a model), the
  share of wall time the driver was busy (near 100% would make it the bottleneck), and
  that CPU time as a share of one iteration's latency (``orchestration share``).

Concurrency 1 runs on ``--baseline-images`` images (fewer: it is slow), the others on
all N; throughput is compared per minute. With the offline profile the models are tiny
random-weight stand-ins (LLM: SmolLM2-135M): the figures measure plumbing and batching
on this machine, not real serving speed.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from actors.roles import Roles  # noqa: E402
from agents.config import ArpoConfig  # noqa: E402
from core.config import load_config  # noqa: E402

# A short loop and short answers so the benchmark finishes on 2 CPU cores.
DEFAULT_OVERRIDES = ["agent.max_steps=2", "llm.sampling.max_new_tokens=64", "vlm.sampling.max_new_tokens=32"]


def make_images(n: int, folder: Path) -> None:
    """N distinct RGB images from the bundled samples (crops, flips, colour shifts)."""
    import numpy as np
    from PIL import Image

    sources = sorted((ROOT / "examples" / "images").glob("*.jpg"))
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        a = np.asarray(Image.open(sources[i % len(sources)]).convert("RGB"))
        h, w = a.shape[:2]
        y, x = rng.integers(0, h // 4), rng.integers(0, w // 4)
        a = a[y:y + 3 * h // 4, x:x + 3 * w // 4]
        if i % 2:
            a = a[:, ::-1]
        a = np.clip(a.astype(np.int16) + rng.integers(-20, 20, size=3), 0, 255).astype(np.uint8)
        Image.fromarray(a).save(folder / f"img_{i:04d}.png")


async def actor_stats(roles: Roles) -> dict:
    clip = (await roles.clip.broadcast("stats"))[0]
    t2i = (await roles.t2i.broadcast("stats"))[0]
    return {"clip_text": clip["text_batches"], "clip_image": clip["image_batches"], "t2i": t2i["batches"]}


def mean_batch(before: dict, after: dict) -> float:
    batches = after["batches"] - before["batches"]
    return (after["items"] - before["items"]) / batches if batches else 0.0


def level_images(work: Path, concurrency: int, images: int, baseline_images: int) -> Path:
    """The image folder for one concurrency level (made once per size): concurrency 1 runs on the
    baseline's fewer images, the others on all of them."""
    n = baseline_images if concurrency == 1 else images
    image_dir = work / f"images-{n}"
    if not image_dir.exists():
        make_images(n, image_dir)
    print(f"concurrency {concurrency}: {n} images ...", file=sys.stderr)
    return image_dir


async def run_once(cfg: ArpoConfig, roles: Roles, image_dir: Path, out_dir: Path, concurrency: int) -> dict:
    from agents.batch.runner import run_batch

    before = await actor_stats(roles)
    cpu0, t0 = time.process_time(), time.perf_counter()
    outcome = await run_batch(cfg, image_dir, out_dir, roles, concurrency, progress_stream=open(os.devnull, "w"))
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    after = await actor_stats(roles)
    records = [json.loads(line) for line in (out_dir / "results.jsonl").read_text().splitlines() if line.strip()]
    iterations = sum(len(r.get("iterations") or []) for r in records)
    busy_per_image = sum(r.get("elapsed_s") or 0.0 for r in records)
    return {
        "concurrency": concurrency, "images": outcome.done + outcome.failed, "failed": outcome.failed,
        "wall_s": wall, "iterations": iterations,
        "images_per_min": 60 * (outcome.done + outcome.failed) / wall,
        "iterations_per_s": iterations / wall,
        "clip_text_batch": mean_batch(before["clip_text"], after["clip_text"]),
        "clip_image_batch": mean_batch(before["clip_image"], after["clip_image"]),
        "t2i_batch": mean_batch(before["t2i"], after["t2i"]),
        "driver_cpu_ms_per_iter": 1000 * cpu / max(iterations, 1),
        "driver_busy_share": cpu / wall,
        "iteration_latency_s": busy_per_image / max(iterations, 1),
    }


def print_table(rows: list[dict], header: str) -> str:
    base = rows[0]["images_per_min"] if rows and rows[0]["concurrency"] == 1 else None
    lines = [header, "",
             "| concurrency | images | wall s | images/min | vs c=1 | iterations/s | CLIP text batch | CLIP image batch | T2I batch "
             "| driver CPU ms/iter | driver busy | iteration latency s | orchestration share |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ratio = f"{r['images_per_min'] / base:.1f}×" if base else "–"
        lines.append(f"| {r['concurrency']} | {r['images']} ({r['failed']} failed) | {r['wall_s']:.0f} | {r['images_per_min']:.2f} | {ratio} "
                     f"| {r['iterations_per_s']:.3f} | {r['clip_text_batch']:.1f} | {r['clip_image_batch']:.1f} | {r['t2i_batch']:.1f} "
                     f"| {r['driver_cpu_ms_per_iter']:.1f} | {100 * r['driver_busy_share']:.1f}% | {r['iteration_latency_s']:.1f} "
                     f"| {100 * r['driver_cpu_ms_per_iter'] / 1000 / max(r['iteration_latency_s'], 1e-9):.2f}% |")
    text = "\n".join(lines)
    print(text)
    return text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "configs" / "offline.yaml"))
    p.add_argument("--set", action="append", default=[], help="extra config override (after the benchmark's own)")
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--baseline-images", type=int, default=8)
    p.add_argument("--concurrency", default="1,8,64")
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    a = p.parse_args(argv)
    levels = [int(c) for c in a.concurrency.split(",")]
    cfg = load_config(ArpoConfig, a.config, DEFAULT_OVERRIDES + a.set)

    from actors.ray_actors import start_roles, wait_ready
    from core.ray_config import init_ray

    init_ray(cfg.ray)
    roles = start_roles(cfg)
    t0 = time.perf_counter()
    asyncio.run(wait_ready(*(getattr(roles, f.name) for f in dataclasses.fields(roles))))
    print(f"roles ready in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    work = Path(tempfile.mkdtemp(prefix="arpo-bench-"))
    rows = []
    try:
        for c in levels:
            image_dir = level_images(work, c, a.images, a.baseline_images)
            rows.append(asyncio.run(run_once(cfg, roles, image_dir, work / f"out-c{c}", c)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    header = (f"ARPO throughput, {datetime.date.today()}, {platform.node()} ({os.cpu_count()} CPUs, {platform.processor() or platform.machine()}), "
              f"config {a.config} + {' '.join(DEFAULT_OVERRIDES + a.set)}\n"
              f"command: python benchmarks/arpo_throughput.py {' '.join(argv or sys.argv[1:])}")
    print_table(rows, header)
    if a.json:
        a.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
