"""The ViT-L/14-shaped CLIP twin: the profiles' scorer (open_clip ViT-L-14, `openai`) has a random-weight
stand-in with its input size, patch size and activation, loaded by the real CLIP role."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

from actors.clip_scorer import ClipModel
from actors.config import ClipConfig
from actors.offline_kit import clip
from actors.offline_kit.twins import CLIP_TWINS


def test_the_vit_l_14_twin_has_its_shape_and_scores_through_the_role(tmp_path):
    section = clip.build(tmp_path, seed=0, shape="vit_l_14")
    assert section["model_name"] == "expectdiff-twin-ViT-L-14" and (tmp_path / "clip_vit_l_14").is_dir()
    model = ClipModel(ClipConfig.model_validate(section))
    visual = model.model.visual
    assert tuple(visual.image_size) == (224, 224) and tuple(visual.patch_size) == (14, 14)
    assert type(model.model.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"
    image = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    emb_i, emb_t = model.encode_images([image]), model.encode_texts(["a photo of a cat"])
    assert emb_i.shape == emb_t.shape == (1, 32)
    assert CLIP_TWINS[("ViT-L-14", "openai")].builder == "clip:build"
