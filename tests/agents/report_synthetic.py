"""Synthetic batch outputs for the results browser: the browser test and benchmarks/report_browser.py.

``synthetic_records(n)`` makes ``n`` result records shaped like the batch job's (a dumped
ReverseResult plus the job's keys): varied names, gains, iteration counts, times and stop
reasons, one in ten failed, per-candidate scores and outcomes, descriptions, and hostile
text (``<script>`` in a prompt and in a file name). Their images are a handful of tiny PNGs
under ``images/_pool/``, shared by all records, so 10,000 images cost a few kilobytes.
``write_synthetic_output`` writes such an output folder through the job's own writer
(agents.batch.writer.BatchWriter: per-image folder, detail page, row, log line).
"""
from __future__ import annotations

import asyncio
import io
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Optional
from unittest import mock

from PIL import Image

from agents.browser.report import ReportHeader
from agents.browser.results import RESULTS_JSONL, ResultsLog

POOL = "images/_pool"
POOL_SIZE = 6
EVIL_NAME = 'evil/<script>alert("name")</script>.png'
EVIL_PROMPT = '</script><script>alert("prompt")</script>'
STOPS = ["no_improvement", "max_steps", "no_candidates", "patience", "token_limit"]
WORDS = ["cat", "dog", "harbour", "rocket", "coffee", "astronaut", "forest", "street", "portrait", "bridge",
         "mountain", "flower", "car", "robot", "castle", "beach"]


def write_pool(out: Path) -> list[str]:
    """A handful of tiny PNGs (relative paths) that every record reuses."""
    folder = out / POOL
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(POOL_SIZE):
        img = Image.new("RGB", (32, 32), ((k * 53) % 256, (k * 101 + 40) % 256, (k * 29 + 90) % 256))
        for x in range(32):  # a diagonal, so the thumbnails are visibly images
            img.putpixel((x, (x + 5 * k) % 32), (255, 255, 255))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        (folder / f"p{k}.png").write_bytes(buf.getvalue())
        paths.append(f"{POOL}/p{k}.png")
    return paths


def synthetic_records(n: int, seed: int = 0, pool: Optional[list[str]] = None) -> list[dict]:
    rng = random.Random(seed)
    pool = pool or [f"{POOL}/p{k}.png" for k in range(POOL_SIZE)]
    records = []
    for i in range(n):
        name = EVIL_NAME if i == 1 else f"{rng.choice(WORDS)}/{rng.choice(WORDS)}_{i:05d}.png"
        image_id = f"{i:08x}{rng.getrandbits(32):08x}"
        folder = f"images/img{i:05d}-{image_id[:12]}"
        failed = i % 10 == 7
        n_its = 0 if failed and i % 20 == 7 else rng.randint(1, 6)
        first = rng.uniform(0.45, 0.75)
        its, best, best_i = [], None, None
        for t in range(n_its):
            clip_i = first if t == 0 else min(0.99, first + rng.uniform(-0.04, 0.12) * t ** 0.5)
            content = ["a photo of a " + rng.choice(WORDS)] + [f"detail {k}" for k in range(t)]
            style = ["oil painting"] if t else []
            if i == 1:
                content.append(EVIL_PROMPT)
            cands = [{"text": f"detail {t}", "part": "content"}, {"text": "soft <light>", "part": "style"},
                     {"text": "a very long fragment " * 4, "part": "content"}]
            base = 0.2 + 0.01 * t
            selection = [
                {**cands[0], "outcome": "kept", "clip_t": base + 0.01, "needed": base, "round": 0},
                {**cands[1], "outcome": "no_gain", "clip_t": base + 0.005, "needed": base + 0.01, "round": 1},
                {**cands[2], "outcome": "too_long", "clip_t": None, "needed": None, "round": None},
            ]
            its.append({
                "iteration": t, "content": content, "style": style, "rendered": ", ".join(content + style),
                "added": [{"text": f"detail {t - 1}", "part": "content"}] if t else [], "candidates": cands,
                "too_long": [cands[2]["text"]], "clip_t": base, "clip_i": clip_i, "clip_i_per_seed": [clip_i],
                "image_paths": [pool[(i + t) % len(pool)]], "images": [pool[(i + t) % len(pool)]],
                "description": {"content": f"a {rng.choice(WORDS)} in the middle", "style": "a photograph"},
                "differences": {"content": "- the reference shows <two> of them", "style": "- warmer light"},
                "selection": selection,
            })
            if best is None or clip_i > best:
                best, best_i = clip_i, t
        best_rec = its[best_i] if best_i is not None else None
        records.append({
            "image_id": image_id, "source": name, "status": "error" if failed else "done",
            "error": f"{name}: optimisation failed: RuntimeError: the VLM <crashed> at iteration {n_its}" if failed else None,
            "initial_prompt": "a photo", "reference_description": {"content": "the reference <scene>", "style": "photo"},
            "prompt": ({"content": best_rec["content"], "style": best_rec["style"], "rendered": best_rec["rendered"]}
                       if best_rec else None),
            "best_iteration": best_i, "best_clip_i": best, "best_clip_t": best_rec["clip_t"] if best_rec else None,
            "iterations": its, "stop_reason": None if failed else rng.choice(STOPS),
            "elapsed_s": round(rng.uniform(5, 240), 2), "duplicate_sources": [], "output_dir": folder,
            "reference": pool[i % len(pool)], "settings_fingerprint": "synthetic",
        })
    return records


def write_synthetic_output(out: Path, n: int, seed: int = 0, header: Optional[ReportHeader] = None,
                           refresh_s: float = 3600.0, durable: bool = True) -> list[dict]:
    """An output folder of ``n`` images written through the batch job's writer, image by image
    (on an event loop, as in the job; ``refresh_s``: the writer's results.csv interval).
    ``durable=False`` skips the fsyncs (a test of what the pages show, not of crash safety:
    2,000 images take ~20 s here with them, mostly waiting for the disk)."""
    if durable:
        return asyncio.run(_write(out, n, seed, header, refresh_s))
    with mock.patch("os.fsync"):
        return asyncio.run(_write(out, n, seed, header, refresh_s))


async def _write(out: Path, n: int, seed: int, header: Optional[ReportHeader], refresh_s: float) -> list[dict]:
    from agents.batch.writer import BatchWriter

    out.mkdir(parents=True, exist_ok=True)
    pool = write_pool(out)
    records = synthetic_records(n, seed, pool)
    header = header or ReportHeader(profile="synthetic <profile>", random_weight_roles=["t2i", "clip"],
                                    total=n + 25, running=3)
    writer = BatchWriter(out, ResultsLog(out / RESULTS_JSONL), header, refresh_s)
    for record in records:
        writer.record(SimpleNamespace(folder=out / record["output_dir"]), record)
    writer.flush()
    return records
