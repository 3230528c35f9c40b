"""Training images as tensors in [-1, 1], and a deterministic per-worker shard of them.

Three sources (chosen by ``DataConfig.kind``, see :mod:`training.config`):

* ``fashion_mnist`` — the idx ``.gz`` files of the Debian package ``dataset-fashion-mnist``
  (28×28 grey, padded with black to 32×32);
* ``image_folder`` — every image under a folder, centre-cropped and resized;
* ``captioned_images`` — images plus ``captions.jsonl`` / ``captions.csv`` (text-conditional training;
  latents and text embeddings are computed by :mod:`training.conditioning`).

Sharding is done here rather than by a ``DistributedSampler`` so that the batch a worker sees at
global step ``s`` depends only on ``(seed, rank, world_size, s)``: a run resumed at step ``s`` reads
exactly the batches an uninterrupted run would have read.
"""
from __future__ import annotations

import csv
import gzip
import json
import os
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


class DataError(ValueError):
    """A data source is missing or malformed; the message names the path and the cause."""


class ItemKey(NamedTuple):
    """What the sampler asks a dataset for: an index plus this draw's augmentation decisions."""

    index: int
    flip: bool = False
    drop_caption: bool = False


def to_unit_range(pixels_uint8: np.ndarray) -> torch.Tensor:
    """uint8 HxW or HxWxC -> float CxHxW in [-1, 1]."""
    arr = pixels_uint8 if pixels_uint8.ndim == 3 else pixels_uint8[:, :, None]
    return torch.from_numpy(np.array(arr.transpose(2, 0, 1), dtype=np.float32)).div_(127.5).sub_(1.0)


# ---------------------------------------------------------------- Fashion-MNIST (idx files)

def read_idx_images(path: Path) -> np.ndarray:
    """Read an idx3 ``.gz`` file (magic 2051) into an (N, rows, cols) uint8 array."""
    if not path.is_file():
        raise DataError(f"{path}: no such file (install the Debian package dataset-fashion-mnist)")
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    magic, count, rows, cols = (int.from_bytes(raw[i:i + 4], "big") for i in range(0, 16, 4))
    if magic != 2051 or len(raw) != 16 + count * rows * cols:
        raise DataError(f"{path}: not an idx3 image file (magic {magic}, {len(raw)} bytes)")
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(count, rows, cols)


def read_idx_labels(path: Path) -> np.ndarray:
    """Read an idx1 ``.gz`` file (magic 2049) into an (N,) uint8 array."""
    if not path.is_file():
        raise DataError(f"{path}: no such file (install the Debian package dataset-fashion-mnist)")
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    magic, count = int.from_bytes(raw[0:4], "big"), int.from_bytes(raw[4:8], "big")
    if magic != 2049 or len(raw) != 8 + count:
        raise DataError(f"{path}: not an idx1 label file (magic {magic}, {len(raw)} bytes)")
    return np.frombuffer(raw, dtype=np.uint8, offset=8)


class FashionMNIST(Dataset):
    """Fashion-MNIST, 1×32×32 in [-1, 1] (28×28 padded with 2 black pixels per side, as DDPM does for MNIST)."""

    FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
             "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}

    def __init__(self, root: str | Path, split: str = "train", limit: int | None = None, pad_to: int = 32):
        if split not in self.FILES:
            raise DataError(f"fashion_mnist split {split!r}: expected one of {sorted(self.FILES)}")
        root = Path(root)
        images = read_idx_images(root / self.FILES[split][0])
        labels = read_idx_labels(root / self.FILES[split][1])
        if len(images) != len(labels):
            raise DataError(f"{root}: {len(images)} images but {len(labels)} labels in split {split!r}")
        pad = pad_to - images.shape[1]
        if pad < 0 or pad % 2:
            raise DataError(f"fashion_mnist: cannot pad {images.shape[1]}px images to {pad_to}px")
        self.images = images[:limit] if limit else images
        self.labels = labels[:limit] if limit else labels
        self.pad = pad // 2

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: ItemKey | int) -> dict:
        key = key if isinstance(key, ItemKey) else ItemKey(int(key))
        img = np.pad(self.images[key.index], self.pad)  # zero pad = black = -1 after scaling
        if key.flip:
            img = img[:, ::-1]
        return {"pixels": to_unit_range(img), "label": int(self.labels[key.index])}


# ---------------------------------------------------------------- image folders

def load_image(path: Path, size: int, channels: int) -> np.ndarray:
    """Open, convert to L/RGB, resize the short side to ``size`` and centre-crop to size×size.

    Only the decoders of :data:`core.images.ALLOWED_FORMATS` may open the file (a renamed EPS or PDF
    is refused, not handed to Ghostscript), and an image with more pixels than Pillow's limit
    (``PIL.Image.MAX_IMAGE_PIXELS``) is refused from its header, before it is decoded. Any failure
    is a :class:`DataError` naming the file and the cause.
    """
    from PIL import Image, UnidentifiedImageError

    from core.images import ALLOWED_FORMATS

    try:
        with Image.open(path, formats=ALLOWED_FORMATS) as im:
            w, h = im.size
            limit = Image.MAX_IMAGE_PIXELS
            if limit and w * h > limit:
                raise DataError(f"{path}: refused as a possible decompression bomb: {w}x{h} = {w * h} pixels, "
                                f"above the limit of {limit} (PIL.Image.MAX_IMAGE_PIXELS)")
            im = im.convert("L" if channels == 1 else "RGB")
            scale = size / min(w, h)
            if scale != 1.0:
                im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
            w, h = im.size
            left, top = (w - size) // 2, (h - size) // 2
            im = im.crop((left, top, left + size, top + size))
            return np.asarray(im, dtype=np.uint8)
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except UnidentifiedImageError:
        raise DataError(f"{path}: not a readable image (allowed formats: {', '.join(ALLOWED_FORMATS)})") from None
    except Image.DecompressionBombError as exc:
        raise DataError(f"{path}: refused as a possible decompression bomb ({exc})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        # Pillow reports truncated or corrupt data as OSError ("image file is truncated"), SyntaxError
        # (broken headers) or ValueError.
        raise DataError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from None


def list_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DataError(f"{folder}: no such image folder")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DataError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    return files


class ImageFolder(Dataset):
    """Every image under ``folder`` (sorted, so every worker sees the same order), C×size×size in [-1, 1]."""

    def __init__(self, folder: str | Path, image_size: int, channels: int = 3, limit: int | None = None):
        self.files = list_images(Path(folder))[:limit or None]
        self.image_size, self.channels = image_size, channels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: ItemKey | int) -> dict:
        key = key if isinstance(key, ItemKey) else ItemKey(int(key))
        img = load_image(self.files[key.index], self.image_size, self.channels)
        if key.flip:
            img = img[:, ::-1]
        return {"pixels": to_unit_range(img)}


#: Caption files looked for in the data folder when none is named, in this order.
CAPTION_FILES = ("captions.jsonl", "metadata.jsonl", "captions.csv")


def read_captions(folder: Path, captions_file: str | None) -> list[tuple[Path, str]]:
    """Read (image path, caption) pairs from ``captions.jsonl`` ({"file", "text"} per line), ``metadata.jsonl``
    (the image-folder layout: {"file_name", "text"} per line, as the batch job writes it too) or ``captions.csv``
    (columns ``file,text``); paths are relative to ``folder`` (an absolute path is used as it is).

    A file listed more than once is one pair, with its last caption, at the place of its first line: an
    appended line updates a caption (the batch job's ``OUT/captions.jsonl`` is written that way)."""
    if captions_file is None:
        found = [folder / n for n in CAPTION_FILES if (folder / n).is_file()]
        if not found:
            raise DataError(f"{folder}: no {', '.join(CAPTION_FILES[:-1])} or {CAPTION_FILES[-1]}")
        path = found[0]
    else:
        path = folder / captions_file
        if not path.is_file():
            raise DataError(f"{path}: no such captions file")
    rows: list[dict] = []
    if path.suffix == ".jsonl":
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
    elif path.suffix == ".csv":
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
    else:
        raise DataError(f"{path}: captions must be a .jsonl or .csv file")
    pairs: dict[Path, str] = {}
    for n, row in enumerate(rows, 1):
        name = row.get("file", row.get("file_name")) if isinstance(row, dict) else None
        if not isinstance(name, str) or not isinstance(row.get("text"), str):
            raise DataError(f"{path}: record {n} needs string fields 'file' (or 'file_name') and 'text'")
        image = folder / name
        if not image.is_file():
            raise DataError(f"{path}: record {n}: image {image} does not exist")
        pairs[Path(os.path.normpath(image))] = row["text"]
    if not pairs:
        raise DataError(f"{path}: no captions")
    return list(pairs.items())


class CaptionedImages(Dataset):
    """Image–caption pairs, 3×size×size in [-1, 1] plus the caption ("" when dropped for classifier-free guidance)."""

    def __init__(self, folder: str | Path, image_size: int, captions_file: str | None = None,
                 limit: int | None = None):
        self.pairs = read_captions(Path(folder), captions_file)[:limit or None]
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, key: ItemKey | int) -> dict:
        key = key if isinstance(key, ItemKey) else ItemKey(int(key))
        path, caption = self.pairs[key.index]
        img = load_image(path, self.image_size, 3)
        if key.flip:
            img = img[:, ::-1]
        return {"pixels": to_unit_range(img), "caption": "" if key.drop_caption else caption}


def build_dataset(cfg) -> Dataset:
    """The dataset a :class:`training.config.DataConfig` describes."""
    from core.config import expand_path

    if cfg.kind == "fashion_mnist":
        return FashionMNIST(expand_path(cfg.root), cfg.split, cfg.limit)
    if cfg.kind == "image_folder":
        return ImageFolder(expand_path(cfg.path), cfg.image_size, cfg.channels, cfg.limit)
    if cfg.kind == "captioned_images":
        return CaptionedImages(expand_path(cfg.path), cfg.image_size, cfg.captions_file, cfg.limit)
    raise DataError(f"unknown data kind {cfg.kind!r}")


# ---------------------------------------------------------------- per-worker sharding

class ShardedBatchSampler(Sampler):
    """Batches of :class:`ItemKey` for one worker, from global step ``start_step`` to ``end_step``.

    Each epoch permutes all indices with a generator seeded by ``(seed, epoch)`` — the same permutation
    on every worker — and gives worker ``rank`` every ``world_size``-th index, cut so all workers get the
    same count (DDP needs every worker to take the same number of steps). Flips and caption drops are
    drawn from a generator seeded by ``(seed, epoch, rank)``.
    """

    def __init__(self, dataset_len: int, batch_size: int, *, rank: int, world_size: int, seed: int,
                 start_step: int = 0, end_step: int, random_flip: bool = False, caption_dropout: float = 0.0):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        self.per_worker = dataset_len // world_size
        self.steps_per_epoch = self.per_worker // batch_size
        if self.steps_per_epoch == 0:
            raise DataError(f"dataset of {dataset_len} items is too small for {world_size} worker(s) × batch "
                            f"size {batch_size}: lower batch_size or add data")
        self.batch_size, self.rank, self.world_size, self.seed = batch_size, rank, world_size, seed
        self.start_step, self.end_step = start_step, end_step
        self.dataset_len, self.random_flip, self.caption_dropout = dataset_len, random_flip, caption_dropout

    def __len__(self) -> int:
        return max(0, self.end_step - self.start_step)

    def _epoch(self, epoch: int) -> list[ItemKey]:
        order = torch.randperm(self.dataset_len, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))
        mine = order[self.rank::self.world_size][: self.steps_per_epoch * self.batch_size].tolist()
        rng = torch.Generator().manual_seed((self.seed * 100_003 + epoch) * 997 + self.rank)
        flips = (torch.rand(len(mine), generator=rng) < 0.5).tolist() if self.random_flip else [False] * len(mine)
        drops = (torch.rand(len(mine), generator=rng) < self.caption_dropout).tolist()
        return [ItemKey(i, f, d) for i, f, d in zip(mine, flips, drops)]

    def __iter__(self) -> Iterator[list[ItemKey]]:
        step, cached_epoch, keys = self.start_step, None, []
        while step < self.end_step:
            epoch, pos = divmod(step, self.steps_per_epoch)
            if epoch != cached_epoch:
                keys, cached_epoch = self._epoch(epoch), epoch
            yield keys[pos * self.batch_size:(pos + 1) * self.batch_size]
            step += 1


def collate(items: list[dict]) -> dict:
    """Stack tensors, keep strings and ints as lists/tensors."""
    out = {}
    for name in items[0]:
        values = [it[name] for it in items]
        if isinstance(values[0], torch.Tensor):
            out[name] = torch.stack(values)
        elif isinstance(values[0], int):
            out[name] = torch.tensor(values)
        else:
            out[name] = values
    return out


def worker_batches(cfg, batch_size: int, *, rank: int, world_size: int, seed: int, start_step: int,
                   end_step: int) -> torch.utils.data.DataLoader:
    """A DataLoader yielding this worker's batches for global steps ``[start_step, end_step)``."""
    dataset = build_dataset(cfg)
    sampler = ShardedBatchSampler(len(dataset), batch_size, rank=rank, world_size=world_size, seed=seed,
                                  start_step=start_step, end_step=end_step, random_flip=cfg.random_flip,
                                  caption_dropout=getattr(cfg, "caption_dropout", 0.0))
    return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate,
                                       num_workers=cfg.loader_workers,
                                       persistent_workers=cfg.loader_workers > 0)
