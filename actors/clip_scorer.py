"""CLIP scorer role: open_clip text/image embeddings and cosine scores.

``ClipModel`` is the plain class: one ``encode_texts`` / ``encode_images`` call is one
forward pass, and it counts them. ``ClipServer`` serves many concurrent callers: every
text (and image) to encode goes through a MicroBatcher, so N callers asking at once cost
about ceil(N / max_batch_size) forward passes; an LRU cache keyed by (model, text) — and by
(model, caller key) for images — skips the encoder for repeats, concurrent misses of one key
are encoded once, and duplicate texts inside one batch are encoded once.
"""
from __future__ import annotations

import asyncio
from contextlib import nullcontext
from typing import Hashable, Optional, Sequence

import numpy as np

from actors.batching import MicroBatcher
from actors.config import ClipConfig
from actors.embedding_cache import CoalescingCache
from actors.image_checks import check_rgb_uint8, to_pil
from actors.model_source import ModelLoadError, check_local_file, load_error
from actors.torch_device import resolve_device


def check_texts(texts, what: str = "texts") -> list[str]:
    if isinstance(texts, str):
        raise TypeError(f"{what} must be a sequence of str, not a single str")
    texts = list(texts)
    for t in texts:
        if not isinstance(t, str):
            raise TypeError(f"{what} must contain only str, got {type(t).__name__}")
    return texts


class ClipModel:
    """An open_clip model with its eval transform and tokenizer, loaded once."""

    def __init__(self, cfg: ClipConfig):
        import open_clip
        import torch

        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        if cfg.model_config_dir is not None:
            from pathlib import Path

            if not Path(cfg.model_config_dir).is_dir():
                raise ModelLoadError(f"CLIP model_config_dir {cfg.model_config_dir!r} is not a folder")
            open_clip.add_model_config(cfg.model_config_dir)
        if cfg.pretrained is not None:
            check_local_file(cfg.pretrained, "CLIP")
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                cfg.model_name, pretrained=cfg.pretrained, device=self.device, precision=cfg.precision
            )
            self.tokenizer = open_clip.get_tokenizer(cfg.model_name)
        except Exception as exc:  # noqa: BLE001 - re-raised naming the model
            raise load_error("CLIP", f"{cfg.model_name} (pretrained={cfg.pretrained})", "open_clip.create_model_and_transforms", exc) from exc
        self.model = model.eval()
        self.preprocess = preprocess
        # Inputs follow the weights' dtype for pure half precision; 'amp' keeps fp32 weights under autocast.
        self._input_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(cfg.precision, torch.float32)
        self.identity = f"{cfg.model_name}|{cfg.pretrained}"
        self.text_forward_passes = 0
        self.texts_encoded = 0
        self.image_forward_passes = 0
        self.images_encoded = 0
        self.style_passes = 0

    def _autocast(self):
        import torch

        if self.cfg.precision == "amp":
            return torch.autocast(device_type=self.device.split(":")[0])
        return nullcontext()

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), embed_dim) float32, rows L2-normalised; one forward pass."""
        import torch

        texts = check_texts(texts)
        if not texts:
            raise ValueError("encode_texts needs at least one text")
        tokens = self.tokenizer(texts).to(self.device)
        with torch.inference_mode(), self._autocast():
            emb = self.model.encode_text(tokens, normalize=True)
        self.text_forward_passes += 1
        self.texts_encoded += len(texts)
        return emb.float().cpu().numpy()

    def _pixels(self, images: list[np.ndarray], caller: str):
        """The images through the model's eval transform, one batch on its device and input dtype."""
        import torch

        if not images:
            raise ValueError(f"{caller} needs at least one image")
        pixels = torch.stack([self.preprocess(to_pil(im, f"images[{i}]")) for i, im in enumerate(images)])
        return pixels.to(self.device, self._input_dtype)

    def encode_images(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(len(images), embed_dim) float32, rows L2-normalised; one forward pass."""
        import torch

        images = list(images)
        pixels = self._pixels(images, "encode_images")
        with torch.inference_mode(), self._autocast():
            emb = self.model.encode_image(pixels, normalize=True)
        self.image_forward_passes += 1
        self.images_encoded += len(images)
        return emb.float().cpu().numpy()

    def style_descriptors(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(len(images), 2·width) float32: per channel, the mean and the standard deviation over positions of
        the vision tower's first layer (a ViT's patch embedding, ``visual.conv1``) on the preprocessed image —
        the feature statistics AdaIN style transfer matches (Huang & Belongie, 2017). They are orderless over
        positions, so rearranging whole patches (where things are) leaves them unchanged; colour, contrast and
        local texture change them. One forward pass of that layer only."""
        import torch

        conv = getattr(getattr(self.model, "visual", None), "conv1", None)
        if conv is None:
            raise ValueError(f"{self.identity}: the style similarity needs a vision tower with a first "
                             "convolution (visual.conv1, as open_clip's ViT and ResNet towers have)")
        pixels = self._pixels(list(images), "style_descriptors")
        with torch.inference_mode(), self._autocast():
            features = conv(pixels).float().flatten(2)  # (B, width, positions)
        stats = torch.cat([features.mean(dim=2), features.std(dim=2, unbiased=False)], dim=1)
        self.style_passes += 1
        return stats.cpu().numpy()

    def counters(self) -> dict:
        return {
            "text_forward_passes": self.text_forward_passes,
            "texts_encoded": self.texts_encoded,
            "image_forward_passes": self.image_forward_passes,
            "images_encoded": self.images_encoded,
            "style_passes": self.style_passes,
        }


class ClipServer:
    """Async CLIP scoring with cross-caller batching and embedding caches (the Ray actor wraps it)."""

    #: Cheap methods that must answer while long calls queue (a Ray shell runs them in a concurrency
    #: group of their own, on another event loop: they touch no asyncio object of the others).
    CONTROL_METHODS = ("ping", "stats")

    def __init__(self, cfg: ClipConfig, model: Optional[ClipModel] = None):
        self.cfg = cfg
        self.model = model if model is not None else ClipModel(cfg)
        b = cfg.batching
        self._text_batcher = MicroBatcher(self._encode_text_batch, b.max_batch_size, b.max_wait_ms, name="clip_text")
        self._image_batcher = MicroBatcher(self._encode_image_batch, b.max_batch_size, b.max_wait_ms, name="clip_image")
        self._text_cache: CoalescingCache[np.ndarray] = CoalescingCache(cfg.text_cache_size, name="clip_text")
        self._image_cache: CoalescingCache[np.ndarray] = CoalescingCache(cfg.image_cache_size, name="clip_image")
        self._style_cache: CoalescingCache[np.ndarray] = CoalescingCache(cfg.image_cache_size, name="clip_style")

    # --- batch functions (run in the batcher's worker thread) ---
    def _encode_text_batch(self, texts: list[str]) -> list[np.ndarray]:
        unique = list(dict.fromkeys(texts))  # duplicates in one batch are encoded once
        emb = self.model.encode_texts(unique)
        # Copies, so a cached row does not keep its whole batch array alive.
        row = {t: emb[i].copy() for i, t in enumerate(unique)}
        return [row[t] for t in texts]

    def _encode_image_batch(self, images: list[np.ndarray]) -> list[np.ndarray]:
        emb = self.model.encode_images(images)
        return [emb[i].copy() for i in range(len(images))]

    # --- per-item embedding with caches ---
    async def _text_embedding(self, text: str) -> np.ndarray:
        key: Hashable = (self.model.identity, text)
        return await self._text_cache.get_or_compute(key, lambda: self._text_batcher.submit(text))

    async def _image_embedding(self, image: np.ndarray, key: Optional[str]) -> np.ndarray:
        if key is None:
            return await self._image_batcher.submit(image)
        return await self._image_cache.get_or_compute((self.model.identity, key), lambda: self._image_batcher.submit(image))

    async def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), embed_dim) L2-normalised embeddings."""
        texts = check_texts(texts)
        rows = await asyncio.gather(*(self._text_embedding(t) for t in texts))
        return np.stack(rows) if rows else np.zeros((0, 0), dtype=np.float32)

    async def embed_images(self, images: Sequence[np.ndarray], keys: Optional[Sequence[Optional[str]]] = None) -> np.ndarray:
        """(len(images), embed_dim) L2-normalised embeddings; ``keys`` (optional) caches them."""
        images = [check_rgb_uint8(im, f"images[{i}]") for i, im in enumerate(images)]
        keys = list(keys) if keys is not None else [None] * len(images)
        if len(keys) != len(images):
            raise ValueError(f"keys has {len(keys)} entries for {len(images)} images")
        rows = await asyncio.gather(*(self._image_embedding(im, k) for im, k in zip(images, keys)))
        return np.stack(rows) if rows else np.zeros((0, 0), dtype=np.float32)

    async def text_image_scores(self, texts: Sequence[str], image: np.ndarray, image_key: Optional[str] = None) -> list[float]:
        """Cosine similarity of each text with the image."""
        texts = check_texts(texts)
        check_rgb_uint8(image, "image")
        if not texts:
            return []
        text_emb, image_emb = await asyncio.gather(self.embed_texts(texts), self._image_embedding(image, image_key))
        return [float(s) for s in text_emb @ image_emb]

    async def image_image_scores(self, images: Sequence[np.ndarray], reference: np.ndarray, reference_key: Optional[str] = None) -> list[float]:
        """Cosine similarity of each image with the reference image."""
        check_rgb_uint8(reference, "reference")
        images = list(images)
        if not images:
            return []
        emb, ref = await asyncio.gather(self.embed_images(images), self._image_embedding(reference, reference_key))
        return [float(s) for s in emb @ ref]

    async def _style_descriptor(self, image: np.ndarray, key: Optional[str]) -> np.ndarray:
        compute = lambda: asyncio.to_thread(lambda: self.model.style_descriptors([image])[0])  # noqa: E731
        if key is None:
            return await compute()
        return await self._style_cache.get_or_compute((self.model.identity, "style", key), compute)

    async def style_scores(self, images: Sequence[np.ndarray], reference: np.ndarray,
                           reference_key: Optional[str] = None) -> list[float]:
        """Style similarity of each image with the reference: the cosine similarity of their style descriptors
        (:meth:`ClipModel.style_descriptors`: per-channel mean and std of the first layer's features), in
        [-1, 1] like the other scores. Content that only moves (whole patches rearranged) leaves it unchanged."""
        check_rgb_uint8(reference, "reference")
        images = [check_rgb_uint8(im, f"images[{i}]") for i, im in enumerate(images)]
        if not images:
            return []
        ref = await self._style_descriptor(reference, reference_key)
        own = await asyncio.to_thread(self.model.style_descriptors, images)
        ref_unit = ref / max(float(np.linalg.norm(ref)), 1e-12)
        return [float(row @ ref_unit / max(float(np.linalg.norm(row)), 1e-12)) for row in own]

    async def stats(self) -> dict:
        return {
            **self.model.counters(),
            "text_cache": self._text_cache.stats(),
            "image_cache": self._image_cache.stats(),
            "text_batches": self._text_batcher.stats.as_dict(),
            "image_batches": self._image_batcher.stats.as_dict(),
        }

    async def ping(self) -> dict:
        return {"ok": True, "role": "clip", "model": self.model.identity, "device": self.model.device}
