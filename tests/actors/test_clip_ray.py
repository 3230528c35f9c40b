"""The CLIP server inside a Ray actor: 256 concurrent remote callers share a few forward passes."""
import asyncio
import math

import numpy as np
import pytest

from actors.clip_scorer import ClipServer
from actors.config import ClipConfig

pytestmark = pytest.mark.ray

N_CALLERS = 256
MAX_BATCH = 64


@pytest.fixture(scope="module")
def clip_actor(ray_local, clip_section):
    # Remote calls reach the actor over a few milliseconds rather than in one event-loop
    # tick, so the batching window is widened to cover the submission of all 256 calls.
    cfg = ClipConfig.model_validate({**clip_section, "batching": {"max_batch_size": MAX_BATCH, "max_wait_ms": 250.0}})
    actor = ray_local.remote(num_cpus=0.25, max_concurrency=1024)(ClipServer).remote(cfg)
    ray_local.get(actor.ping.remote(), timeout=120)
    yield actor
    ray_local.kill(actor)


async def test_256_remote_callers_cost_at_most_ceil_n_over_batch_plus_one_passes(clip_actor):
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
    before = await clip_actor.stats.remote()
    calls = [clip_actor.text_image_scores.remote([f"remote caller {i}"], ref, "ref") for i in range(N_CALLERS)]
    scores = await asyncio.gather(*calls)
    after = await clip_actor.stats.remote()
    text_passes = after["text_forward_passes"] - before["text_forward_passes"]
    image_passes = after["image_forward_passes"] - before["image_forward_passes"]
    print(f"\nthrough Ray, {N_CALLERS} callers (max_batch {MAX_BATCH}): {text_passes} text passes, {image_passes} image passes")
    assert text_passes <= math.ceil(N_CALLERS / MAX_BATCH) + 1
    assert image_passes == 1
    assert after["texts_encoded"] - before["texts_encoded"] == N_CALLERS
    assert all(len(s) == 1 and -1.0 <= s[0] <= 1.0 for s in scores)

    # Asked again, every text comes from the cache: no forward pass at all.
    again = await asyncio.gather(*(clip_actor.text_image_scores.remote([f"remote caller {i}"], ref, "ref") for i in range(N_CALLERS)))
    final = await clip_actor.stats.remote()
    assert again == scores
    assert final["text_forward_passes"] == after["text_forward_passes"]
    assert final["image_forward_passes"] == after["image_forward_passes"]


async def test_remote_unkeyed_images_are_batched_across_callers(clip_actor):
    rng = np.random.default_rng(1)
    ref = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    imgs = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(N_CALLERS)]
    before = await clip_actor.stats.remote()
    out = await asyncio.gather(*(clip_actor.image_image_scores.remote([im], ref) for im in imgs))
    after = await clip_actor.stats.remote()
    image_passes = after["image_forward_passes"] - before["image_forward_passes"]
    print(f"through Ray, {N_CALLERS} unkeyed image callers: {image_passes} image passes")
    # Each call also encodes the unkeyed reference: 2 * N images in all.
    assert after["images_encoded"] - before["images_encoded"] == 2 * N_CALLERS
    assert image_passes <= math.ceil(2 * N_CALLERS / MAX_BATCH) + 1
    assert len(out) == N_CALLERS
