"""Image-embedding role for the DINO and ViT fidelity metrics (thesis §4.3.1).

Any transformers vision backbone that ``AutoModel`` + ``AutoImageProcessor`` load:
DINO ViT-S/16 is ``facebook/dino-vits16``, ViT-L/16 is ``google/vit-large-patch16-224``
(both ``ViTModel``). The embedding is the CLS token of the last hidden state (after the
final layer norm) by default: DINO's own image representation, and for the ViT-L/16
checkpoint (a classifier whose pooler head is not part of the released weights) the
only trained image-level vector. ``ImageEmbedderModel`` is the plain class;
``ImageEmbedderServer`` batches concurrent callers; the Ray actor wraps the server
(``actors.ray_actors.start_role``).
"""
from __future__ import annotations

from typing import Literal, Optional, Sequence

import numpy as np
from pydantic import Field, field_validator

from actors.batching import MicroBatcher
from actors.config import BatchingConfig, Device, DType, ResourceConfig, _path_or_id
from actors.image_checks import check_rgb_uint8, to_pil
from actors.model_source import load_processor_and_model
from actors.torch_device import resolve_device, resolve_dtype
from core.config import StrictModel

Pooling = Literal["cls", "pooler", "mean"]


class ImageEmbedderConfig(StrictModel):
    """One image-embedding backbone (DINO or ViT metric), loaded once in its actor."""

    model: str = Field("facebook/dino-vits16", description="Local folder or hub id of a transformers vision model, loaded with AutoModel + AutoImageProcessor.")
    pooling: Pooling = Field("cls", description="Image vector: 'cls' = CLS token of the last hidden state (DINO's and ViT's image representation); 'pooler' = the model's pooler_output (only when its pooler weights were trained); 'mean' = mean of the patch tokens.")
    device: Device = Field("auto", description="Torch device; 'auto' is cuda when available, else cpu.")
    dtype: DType = Field("auto", description="Weights dtype; 'auto' is float16 on GPU and float32 on CPU.")
    batching: BatchingConfig = Field(default_factory=lambda: BatchingConfig(max_batch_size=64, max_wait_ms=10.0), description="Cross-caller batching of images into one forward pass.")
    resources: ResourceConfig = Field(default_factory=lambda: ResourceConfig(num_gpus=0.1), description="Ray placement. Expected GPU memory in fp16 at batch 64, CUDA context included (estimates, see docs/evaluation.md): DINO ViT-S/16 ~1 GB, ViT-L/16 ~2 GB.")

    _v_model = field_validator("model")(lambda cls, v: _path_or_id(v))


class ImageEmbedderModel:
    """A vision backbone and its image processor on the configured device and dtype."""

    def __init__(self, cfg: ImageEmbedderConfig):
        from transformers import AutoImageProcessor, AutoModel

        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.dtype = resolve_dtype(cfg.dtype, self.device)
        self.processor, self.model = load_processor_and_model(
            cfg.model, "image embedder", AutoImageProcessor, AutoModel, self.dtype, self.device)
        self.forward_passes = 0
        self.images_embedded = 0

    def embed_batch(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """One forward pass; one float32 vector per image (not normalised: the metric takes the cosine)."""
        import torch

        pil = [to_pil(im, f"images[{i}]") for i, im in enumerate(images)]
        if not pil:
            return []
        pixels = self.processor(images=pil, return_tensors="pt")["pixel_values"].to(self.device, self.dtype)
        with torch.inference_mode():
            out = self.model(pixel_values=pixels)
        vectors = pool(out, self.cfg.pooling, self.cfg.model)
        self.forward_passes += 1
        self.images_embedded += len(pil)
        arr = vectors.float().cpu().numpy()
        return [arr[i].copy() for i in range(arr.shape[0])]


def pool(output, pooling: Pooling, model_ref: str):
    """The image vector from a transformers vision model's output."""
    if pooling == "pooler":
        pooled = getattr(output, "pooler_output", None)
        if pooled is None:
            raise ValueError(f"image embedder {model_ref!r} has no pooler output; use pooling 'cls' or 'mean'")
        return pooled
    hidden = output.last_hidden_state
    if hidden.ndim != 3:
        raise ValueError(f"image embedder {model_ref!r}: expected a (batch, tokens, dim) last_hidden_state, got shape {tuple(hidden.shape)}")
    if pooling == "cls":
        return hidden[:, 0]
    return hidden[:, 1:].mean(dim=1)


class ImageEmbedderServer:
    """Async, cross-caller batched image embeddings (the Ray actor is a thin shell around it)."""

    def __init__(self, cfg: ImageEmbedderConfig, model: Optional[ImageEmbedderModel] = None):
        self.cfg = cfg
        self.model = model if model is not None else ImageEmbedderModel(cfg)
        self._batcher = MicroBatcher(self.model.embed_batch, cfg.batching.max_batch_size, cfg.batching.max_wait_ms,
                                     name="image_embedder")

    async def embed_images(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(len(images), dim) float32; each image joins the shared batch queue."""
        images = [check_rgb_uint8(im, f"images[{i}]") for i, im in enumerate(images)]
        if not images:
            raise ValueError("embed_images needs at least one image")
        return np.stack(await self._batcher.submit_many(images))

    async def stats(self) -> dict:
        return {"forward_passes": self.model.forward_passes, "images_embedded": self.model.images_embedded,
                "batches": self._batcher.stats.as_dict()}

    async def ping(self) -> dict:
        return {"ok": True, "role": "image_embedder", "model": self.cfg.model, "device": self.model.device}
