"""The style similarity (ClipServer.style_scores, agent.style_only) on the offline kit's open_clip ViT
(32×32 input, 8-pixel patches; random weights: the property tested is structural, not a learned one):
rearranging whole patches — the same things in other places, a content change — leaves it unchanged
while CLIP-I moves; a change of colour lowers it."""
from __future__ import annotations

import numpy as np
import pytest

from actors.clip_scorer import ClipModel, ClipServer
from actors.config import ClipConfig

PATCH, SIDE = 8, 32  # the kit's ViT: patch 8 at a 32×32 input (no resize for a 32×32 image)


@pytest.fixture(scope="module")
def server(clip_section) -> ClipServer:
    return ClipServer(ClipConfig.model_validate(clip_section))


def image(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)


def rearranged(pixels: np.ndarray, seed: int) -> np.ndarray:
    """The same patches in another order (patch-aligned tiles shuffled)."""
    tiles = [pixels[r:r + PATCH, c:c + PATCH] for r in range(0, SIDE, PATCH) for c in range(0, SIDE, PATCH)]
    order = np.random.default_rng(seed).permutation(len(tiles))
    per_row = SIDE // PATCH
    rows = [np.concatenate([tiles[order[r * per_row + c]] for c in range(per_row)], axis=1) for r in range(per_row)]
    return np.concatenate(rows, axis=0)


async def test_rearranged_content_leaves_the_style_score_unchanged_while_clip_i_moves(server):
    reference = image(0)
    moved = rearranged(reference, 1)
    assert not np.array_equal(moved, reference)
    style = await server.style_scores([reference, moved], reference, reference_key="ref")
    clip_i = await server.image_image_scores([moved], reference, reference_key="ref")
    assert style[0] == pytest.approx(1.0, abs=1e-6) and abs(style[1] - style[0]) < 1e-6
    # CLIP-I sees the rearrangement (position embeddings, attention): what the style score must not see
    assert 1 - clip_i[0] > 1e-4


async def test_a_change_of_colour_lowers_the_style_score(server):
    reference = image(0)
    tinted = reference.copy()
    tinted[..., 0] = 255 - tinted[..., 0]  # another palette, same layout
    darker = (reference // 3).astype(np.uint8)
    scores = await server.style_scores([reference, tinted, darker], reference, reference_key="ref-colour")
    assert scores[0] == pytest.approx(1.0, abs=1e-5)
    assert scores[1] < scores[0] - 1e-3 and scores[2] < scores[0] - 1e-3


async def test_reference_descriptors_are_cached_by_key(server):
    before = server.model.counters()["style_passes"]
    await server.style_scores([image(3)], image(4), reference_key="cached")
    await server.style_scores([image(5)], image(4), reference_key="cached")
    assert server.model.counters()["style_passes"] - before == 3  # 2 calls' images + the reference once


def test_a_tower_without_a_first_convolution_is_refused_by_name(clip_section):
    model = ClipModel(ClipConfig.model_validate(clip_section))
    model.model.visual.conv1 = None
    with pytest.raises(ValueError, match="needs a vision tower with a first convolution"):
        model.style_descriptors([image(0)])
