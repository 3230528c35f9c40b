"""The exposure-bias protocol on image folders with a given pretrained UNet (the path --gpu-cifar10 takes),
run on CPU with grey PNGs, a tiny saved UNet and the Fashion-MNIST feature network: the images come from the
folders, the pretrained model is loaded (not trained), and the stages after it run on it."""
import json

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from benchmarks.exposure_bias.__main__ import main
from benchmarks.exposure_bias.config import ImageFolders, ProtocolConfig, gpu_cifar10, quick
from benchmarks.exposure_bias.data import load_split
from benchmarks.exposure_bias.protocol import Protocol

pytestmark = pytest.mark.slow  # ~40 s


def _folder(path, n, seed):
    path.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(path / f"{i:04d}.png")


def test_image_folders_and_a_pretrained_unet(tmp_path):
    from diffusers import UNet2DModel

    torch.set_num_threads(1)
    _folder(tmp_path / "train", 64, 0)
    _folder(tmp_path / "test", 96, 1)
    q = quick()
    UNet2DModel(**q.unet_config).save_pretrained(tmp_path / "unet")
    cfg = ProtocolConfig.model_validate({
        **q.model_dump(), "unet_config": None, "pretrained": str(tmp_path / "unet"), "pretrain_curve": None,
        "image_folders": ImageFolders(train=str(tmp_path / "train"), test=str(tmp_path / "test"), channels=1),
        "variants": [v.model_dump() for v in q.variants if v.label in ("ddpm", "mdss_k4", "mdss_k2")],
        "curve": {**q.curve.model_dump(), "labels": ["ddpm"]}, "train_seeds": [0],
        "evaluation": {**q.evaluation.model_dump(), "xi_ablation_label": "mdss_k4"}})
    train = load_split(cfg, "train")
    assert train.shape == (64, 1, 32, 32) and -1 <= train.min() and train.max() <= 1
    p = Protocol(cfg, tmp_path / "work", tmp_path / "out", log=lambda *_: None)
    p.run(("feature_net", "pretrain", "finetune", "lambda", "evaluate", "report"))
    done = json.loads((tmp_path / "work" / "models" / "pretrained" / "DONE.json").read_text())
    assert done["loaded_from"] == str(tmp_path / "unet")
    assert p.scorer.native["test"].shape[-1] == 16 and len(p.scorer.refs["test"]) == cfg.test_size
    rows = (tmp_path / "out" / "results.csv").read_text().splitlines()
    assert len(rows) > 1 and "mdss_k4" in "".join(rows)


def test_rgb_folders_need_inception_and_the_gpu_preset_validates(tmp_path, capsys):
    q = quick()
    with pytest.raises(ValidationError, match="need inception_weights"):
        ProtocolConfig.model_validate({**q.model_dump(), "image_folders": {"train": "a", "test": "b", "channels": 3}})
    with pytest.raises(ValidationError, match="exactly one of unet_config"):
        ProtocolConfig.model_validate({**q.model_dump(), "pretrained": "somewhere"})
    g = gpu_cifar10("train", "test", "unet", "inception.pth")
    assert g.image_size == 32 and g.image_folders.channels == 3 and g.unet_config is None and g.device == "cuda"
    assert g.evaluation.num_samples == 5000 and len(g.train_seeds) == 3
    assert main(["--gpu-cifar10", "--train-images", "x"]) == 2
    assert "--test-images, --pretrained, --inception-weights" in capsys.readouterr().err
