"""Doubles for the batch job's tests: real ReverseResult records and a scripted ``optimise``.

``ScriptedOptimise`` stands in for ``agents.api.optimise`` with the same call signature:
it writes one PNG per iteration into the image's work folder (as the agent does), keeps
per-image "checkpointed" progress in memory so an interrupted image resumes where it
stopped, and can be told to fail or to pause on chosen images.
"""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from agents.result import FragmentOut, IterationOut, PromptOut, ReverseResult


def make_result(image_id: str = "abc123", source: str = "x.png", iterations: int = 2, work_dir: Optional[Path] = None,
                status: str = "done", error: Optional[str] = None) -> ReverseResult:
    """A ReverseResult with ``iterations`` iterations, CLIP-I rising to a best at the last one."""
    its = []
    for t in range(iterations):
        content = ["a cat"] + [f"detail {k}" for k in range(t)]
        style = ["oil painting"] if t else []
        paths = [str(Path(work_dir) / f"iter_{t:03d}_seed0.png")] if work_dir is not None else []
        its.append(IterationOut(
            iteration=t, content=content, style=style, rendered=", ".join(content + style),
            added=[FragmentOut(text=f"detail {t - 1}", part="content")] if t else [],
            candidates=[FragmentOut(text=f"detail {t}", part="content")],
            clip_t=0.2 + 0.01 * t, clip_i=0.5 + 0.1 * t, clip_i_per_seed=[0.5 + 0.1 * t], image_paths=paths,
        ))
    best = its[-1] if its else None
    return ReverseResult(
        image_id=image_id, source=source, status=status, error=error, initial_prompt="a cat",
        prompt=PromptOut(content=best.content, style=best.style, rendered=best.rendered) if best else None,
        best_iteration=best.iteration if best else None, best_clip_i=best.clip_i if best else None,
        best_clip_t=best.clip_t if best else None, iterations=its, stop_reason="max_steps" if best else None,
        elapsed_s=0.01,
    )


class ScriptedOptimise:
    """``await optimise(image_id, reference_path, work_dir, roles, cfg, token_limit, graph=None)``."""

    def __init__(self, steps: int = 3, fail_ids: frozenset = frozenset(), error_status_ids: frozenset = frozenset(),
                 step_delay_s: float = 0.0):
        self.steps = steps
        self.fail_ids = set(fail_ids)
        self.error_status_ids = set(error_status_ids)
        self.step_delay_s = step_delay_s
        self.progress: dict[str, int] = {}  # image id -> iterations completed ("the checkpointer")
        self.calls: list[str] = []
        self.started_at: dict[str, list[int]] = {}  # image id -> the iteration each call started from
        self.completed: list[str] = []
        self.max_running = 0
        self._running = 0
        self.gates: dict[str, asyncio.Event] = {}  # image id -> event that must be set before it finishes

    async def __call__(self, image_id, reference_path, work_dir, roles, cfg, token_limit, graph=None, init_prompt=None,
                       on_node=None, thread_id=None, base_dir=None):
        self.calls.append(image_id)
        self._running += 1
        self.max_running = max(self.max_running, self._running)
        try:
            reference = np.asarray(Image.open(reference_path))
            assert reference.dtype == np.uint8 and reference.ndim == 3 and reference.shape[2] == 3
            if image_id in self.fail_ids:
                raise RuntimeError(f"scripted failure for {image_id}")
            work_dir = Path(work_dir)
            self.started_at.setdefault(image_id, []).append(self.progress.get(image_id, 0))
            for t in range(self.progress.get(image_id, 0), self.steps):
                await asyncio.sleep(self.step_delay_s)
                Image.fromarray(np.full((8, 8, 3), 40 * t % 256, np.uint8)).save(work_dir / f"iter_{t:03d}_seed0.png")
                self.progress[image_id] = t + 1
                if on_node is not None:
                    on_node("generate")
            if image_id in self.gates:
                await self.gates[image_id].wait()
            if image_id in self.error_status_ids:
                return make_result(image_id, str(reference_path), self.steps, work_dir, status="error", error="node 'propose' failed: scripted")
            self.completed.append(image_id)
            return make_result(image_id, str(reference_path), self.steps, work_dir)
        finally:
            self._running -= 1


def write_image_folder(root: Path) -> dict[str, Path]:
    """A folder of good and bad files; returns name -> path."""
    rng = np.random.default_rng(0)
    files = {}

    def rgb(seed_shape=(16, 16)):
        return Image.fromarray(rng.integers(0, 256, size=(*seed_shape, 3), dtype=np.uint8))

    root.mkdir(parents=True, exist_ok=True)
    (root / "sub").mkdir()
    files["a"] = root / "a.png"
    rgb().save(files["a"])
    files["b"] = root / "sub" / "B.JPG"
    rgb().save(files["b"], format="JPEG")
    files["c"] = root / "sub" / "c.webp"
    rgb().save(files["c"], format="WEBP", lossless=True)
    files["dup"] = root / "sub" / "a_copy.png"
    files["dup"].write_bytes(files["a"].read_bytes())
    files["fake"] = root / "fake.png"
    files["fake"].write_text("not an image")
    files["cut"] = root / "cut.jpg"
    files["cut"].write_bytes(files["b"].read_bytes()[:200])
    (root / "readme.txt").write_text("ignored")
    return files
