"""Training data: shapes, value ranges, caption files, and the deterministic per-worker sharding."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from training.data import (CaptionedImages, DataError, FashionMNIST, ImageFolder, ItemKey, ShardedBatchSampler,
                           collate, worker_batches)

FMNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")


# ------------------------------------------------------------------ Fashion-MNIST

def test_fashion_mnist_is_installed():
    # CI must `apt-get install dataset-fashion-mnist`; say so plainly rather than skip.
    assert (FMNIST_ROOT / "train-images-idx3-ubyte.gz").is_file(), \
        "install the Debian package dataset-fashion-mnist (apt-get install -y dataset-fashion-mnist)"


def test_fashion_mnist_shapes_range_and_padding():
    ds = FashionMNIST(FMNIST_ROOT, "test")
    assert len(ds) == 10_000
    item = ds[0]
    x = item["pixels"]
    assert x.shape == (1, 32, 32) and x.dtype == torch.float32
    assert x.min() >= -1.0 and x.max() <= 1.0
    assert x.max() == 1.0  # the first test image (an ankle boot) has saturated pixels
    # the 2-pixel pad is black, i.e. -1 after scaling
    assert torch.all(x[:, :2, :] == -1) and torch.all(x[:, -2:, :] == -1)
    assert torch.all(x[:, :, :2] == -1) and torch.all(x[:, :, -2:] == -1)
    assert item["label"] == 9  # first t10k label: ankle boot
    # scaling is exact: uint8 v -> v/127.5 - 1
    raw = ds.images[0].astype(np.float32) / 127.5 - 1
    assert torch.allclose(x[0, 2:-2, 2:-2], torch.from_numpy(raw))


def test_fashion_mnist_limit_and_flip():
    ds = FashionMNIST(FMNIST_ROOT, "train", limit=5)
    assert len(ds) == 5
    a, b = ds[ItemKey(3)]["pixels"], ds[ItemKey(3, flip=True)]["pixels"]
    assert torch.equal(a.flip(-1), b)


def test_fashion_mnist_missing_root_names_path(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path)):
        FashionMNIST(tmp_path, "train")


# ------------------------------------------------------------------ image folders

def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_image_folder_resizes_crops_and_scales(tmp_path):
    wide = np.zeros((16, 32, 3), np.uint8)
    wide[:, 8:24] = 255  # white centre square, black left/right bands
    _save(tmp_path / "b" / "wide.png", wide)
    _save(tmp_path / "a.png", np.full((20, 20), 128, np.uint8))  # grey L image -> converted to RGB
    (tmp_path / "notes.txt").write_text("not an image")
    ds = ImageFolder(tmp_path, image_size=8, channels=3)
    assert [p.name for p in ds.files] == ["a.png", "wide.png"]  # sorted, recursive, images only
    grey = ds[0]["pixels"]
    assert grey.shape == (3, 8, 8)
    assert torch.allclose(grey, torch.full_like(grey, 128 / 127.5 - 1), atol=1e-6)
    centre = ds[1]["pixels"]
    # the short side (16) scales to 8, the long side to 16, and the centre crop is the white square
    assert centre.shape == (3, 8, 8)
    assert centre[:, :, 1:-1].min() > 0.99 and centre.min() > 0.5  # bicubic blurs only the crop's edge columns


def test_image_folder_greyscale_and_errors(tmp_path):
    _save(tmp_path / "x.png", np.random.default_rng(0).integers(0, 256, (12, 12, 3), dtype=np.uint8))
    assert ImageFolder(tmp_path, 12, channels=1)[0]["pixels"].shape == (1, 12, 12)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        ImageFolder(tmp_path / "empty", 8)
    with pytest.raises(DataError, match="no such image folder"):
        ImageFolder(tmp_path / "missing", 8)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png"):
        ImageFolder(tmp_path, 8)[0]


# ------------------------------------------------------------------ untrusted image files

EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n%%EndComments\n"
       b"newpath 0 0 moveto 16 16 lineto stroke\nshowpage\n%%EOF\n")


def test_a_renamed_eps_never_reaches_ghostscript(tmp_path, monkeypatch):
    """Training images open with the same decoder allowlist as the agent's reference images."""
    from PIL import EpsImagePlugin

    from core.images import ALLOWED_FORMATS

    calls = []

    def ghostscript(*args, **kwargs):
        calls.append(args)
        raise OSError("ghostscript was called")

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", ghostscript)
    (tmp_path / "photo.png").write_bytes(EPS)
    with pytest.raises(DataError) as e:
        ImageFolder(tmp_path, 8)[0]
    assert str(tmp_path / "photo.png") in str(e.value) and "not a readable image" in str(e.value)
    assert ", ".join(ALLOWED_FORMATS) in str(e.value)
    assert calls == []


def test_agents_and_training_share_one_allowlist():
    from agents.images import ALLOWED_FORMATS as agents_formats
    from core.images import ALLOWED_FORMATS

    assert agents_formats is ALLOWED_FORMATS and "EPS" not in ALLOWED_FORMATS and "PDF" not in ALLOWED_FORMATS


@pytest.mark.parametrize("side", [40, 64])  # 1600 px: above the limit, Pillow only warns; 4096: Pillow raises
def test_a_decompression_bomb_is_refused_naming_the_file(tmp_path, monkeypatch, side):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    _save(tmp_path / "bomb.png", np.zeros((side, side, 3), np.uint8))
    with pytest.raises(DataError) as e:
        ImageFolder(tmp_path, 8)[0]
    assert str(tmp_path / "bomb.png") in str(e.value) and "decompression bomb" in str(e.value)


def test_a_truncated_image_is_a_clear_error(tmp_path):
    _save(tmp_path / "t.png", np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"t\.png: cannot read image .*truncated"):
        ImageFolder(tmp_path, 8)[0]


# ------------------------------------------------------------------ captioned images

def _captioned_folder(root: Path, fmt: str) -> Path:
    rng = np.random.default_rng(1)
    for i in range(3):
        _save(root / f"img{i}.png", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    if fmt == "jsonl":
        (root / "captions.jsonl").write_text(
            "\n".join(json.dumps({"file": f"img{i}.png", "text": f"caption {i}"}) for i in range(3)) + "\n")
    else:
        (root / "captions.csv").write_text("file,text\n" + "".join(f'img{i}.png,"caption, {i}"\n' for i in range(3)))
    return root


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_captioned_images(tmp_path, fmt):
    ds = CaptionedImages(_captioned_folder(tmp_path, fmt), image_size=8)
    assert len(ds) == 3
    item = ds[ItemKey(2)]
    assert item["pixels"].shape == (3, 8, 8)
    assert item["caption"] == ("caption 2" if fmt == "jsonl" else "caption, 2")
    assert ds[ItemKey(2, drop_caption=True)]["caption"] == ""
    batch = collate([ds[0], ds[1]])
    assert batch["pixels"].shape == (2, 3, 8, 8) and batch["caption"] == [ds[0]["caption"], ds[1]["caption"]]


def test_a_file_listed_twice_is_one_pair_with_its_last_caption(tmp_path):
    """The batch job appends a line when a caption changes (agents/batch/captions.py): the last one counts."""
    _captioned_folder(tmp_path, "jsonl")
    with (tmp_path / "captions.jsonl").open("a") as fh:
        fh.write(json.dumps({"file": "./img0.png", "text": "newer caption"}) + "\n")
        fh.write(json.dumps({"file": str(tmp_path / "img2.png"), "text": "absolute path"}) + "\n")
    ds = CaptionedImages(tmp_path, image_size=8)
    assert [(p.name, t) for p, t in ds.pairs] == [("img0.png", "newer caption"), ("img1.png", "caption 1"),
                                                  ("img2.png", "absolute path")]


def test_captioned_images_errors_name_the_record(tmp_path):
    _captioned_folder(tmp_path, "jsonl")
    with (tmp_path / "captions.jsonl").open("a") as fh:
        fh.write(json.dumps({"file": "missing.png", "text": "x"}) + "\n")
    with pytest.raises(DataError, match=r"record 4: image .*missing.png"):
        CaptionedImages(tmp_path, 8)
    (tmp_path / "captions.jsonl").write_text('{"file": "img0.png"\n')
    with pytest.raises(DataError, match=r"captions.jsonl:1: not valid JSON"):
        CaptionedImages(tmp_path, 8)
    (tmp_path / "captions.jsonl").write_text('{"file": "img0.png"}\n')
    with pytest.raises(DataError, match="record 1 needs string fields"):
        CaptionedImages(tmp_path, 8)


# ------------------------------------------------------------------ sharding

def _indices(sampler) -> list[list[int]]:
    return [[k.index for k in batch] for batch in sampler]


def test_shards_are_disjoint_equal_and_cover_each_epoch():
    n, bs, world = 103, 5, 2
    steps_per_epoch = (n // world) // bs  # 10
    shards = [_indices(ShardedBatchSampler(n, bs, rank=r, world_size=world, seed=7, end_step=steps_per_epoch))
              for r in range(world)]
    flat = [sorted(i for b in s for i in b) for s in shards]
    assert len(flat[0]) == len(flat[1]) == steps_per_epoch * bs
    assert not set(flat[0]) & set(flat[1])
    assert all(len(b) == bs for s in shards for b in s)
    # the next epoch is a fresh permutation
    nxt = _indices(ShardedBatchSampler(n, bs, rank=0, world_size=world, seed=7, start_step=steps_per_epoch,
                                       end_step=2 * steps_per_epoch))
    assert nxt != shards[0]


def test_resume_reads_the_same_batches_as_an_uninterrupted_run():
    kwargs = dict(rank=1, world_size=2, seed=3, random_flip=True, caption_dropout=0.3)
    full = list(ShardedBatchSampler(50, 4, end_step=17, **kwargs))
    tail = list(ShardedBatchSampler(50, 4, start_step=11, end_step=17, **kwargs))
    assert full[11:] == tail
    flips = [k.flip for b in full for k in b]
    assert 0 < sum(flips) < len(flips)


def test_too_small_dataset_is_a_clear_error():
    with pytest.raises(DataError, match="too small for 2 worker"):
        ShardedBatchSampler(7, 4, rank=0, world_size=2, seed=0, end_step=1)


def test_worker_batches_from_config():
    from training.config import FashionMNISTData

    cfg = FashionMNISTData(kind="fashion_mnist", split="test", limit=40, random_flip=False)
    loaders = [worker_batches(cfg, 4, rank=r, world_size=2, seed=0, start_step=0, end_step=3) for r in range(2)]
    batches = [list(dl) for dl in loaders]
    assert len(batches[0]) == 3
    assert batches[0][0]["pixels"].shape == (4, 1, 32, 32)
    labels = [torch.cat([b["label"] for b in bs]) for bs in batches]
    assert labels[0].shape == (12,)
    assert not torch.equal(batches[0][0]["pixels"], batches[1][0]["pixels"])
