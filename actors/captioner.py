"""Captioner role: BLIP2 or any transformers image-to-text model (AutoProcessor +
AutoModelForImageTextToText), greedy decoding, batched across callers by ``CaptionerServer``;
or, with ``backend: vlm``, the VLM role's model asked for a caption (``VLMCaptioner``, which
runs inside the actor serving the VLM: see actors/role_groups.py).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from actors.batching import MicroBatcher
from actors.config import CaptionerConfig
from actors.image_checks import check_rgb_uint8, to_pil
from actors.model_source import load_processor_and_model
from actors.torch_device import resolve_device, resolve_dtype


class CaptionerModel:
    """An image-to-text model and its processor on the configured device and dtype, loaded once."""

    def __init__(self, cfg: CaptionerConfig):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.dtype = resolve_dtype(cfg.dtype, self.device)
        self.processor, self.model = load_processor_and_model(
            cfg.model, "captioner", AutoProcessor, AutoModelForImageTextToText, self.dtype, self.device)

    def caption_batch(self, images: Sequence[np.ndarray]) -> list[str]:
        """One greedy caption per image (the prompt, when configured, is not part of the caption)."""
        import torch

        pil = [to_pil(im, f"images[{i}]") for i, im in enumerate(images)]
        if not pil:
            return []
        prompt = self.cfg.prompt
        # One shared prompt: every row has the same length, so no padding side to get wrong.
        inputs = self.processor(images=pil, text=[prompt] * len(pil) if prompt else None, return_tensors="pt").to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.cfg.max_new_tokens, do_sample=False)
        prompt_ids = inputs.get("input_ids")
        # Decoder-only language models (BLIP2-OPT) return the prompt ids before the new tokens.
        if prompt_ids is not None and out.shape[1] >= prompt_ids.shape[1] and torch.equal(out[:, : prompt_ids.shape[1]], prompt_ids):
            out = out[:, prompt_ids.shape[1]:]
        texts = self.processor.batch_decode(out, skip_special_tokens=True)
        return [strip_prompt(t, prompt) for t in texts]


def strip_prompt(text: str, prompt: Optional[str]) -> str:
    """Remove a prompt the model echoed (encoder-decoder captioners start with it) and outer whitespace."""
    text = text.strip()
    if prompt and text.lower().startswith(prompt.strip().lower()):
        text = text[len(prompt.strip()):].strip()
    return text


class CaptionerServer:
    """Async captioning service: concurrent ``caption`` calls share one ``generate`` (the Ray actor wraps it)."""

    #: Cheap methods that must answer while long calls queue (a Ray shell runs them in a concurrency
    #: group of their own, on another event loop: they touch no asyncio object of the others).
    CONTROL_METHODS = ("ping", "stats")

    def __init__(self, cfg: CaptionerConfig, model: Optional[CaptionerModel] = None):
        if cfg.backend != "transformers" and model is None:
            raise ValueError(f"captioner.backend is {cfg.backend!r}: the captioner has no model of its own and is served "
                             "by the VLM's actor (actors.ray_actors.start_roles starts it there), not by CaptionerServer")
        self.cfg = cfg
        self.model = model if model is not None else CaptionerModel(cfg)
        self._batcher = MicroBatcher(self.model.caption_batch, cfg.batching.max_batch_size, cfg.batching.max_wait_ms,
                                     name="captioner")

    async def caption(self, image: np.ndarray) -> str:
        check_rgb_uint8(image, "image")  # validate here so a bad image fails only its own caller
        return await self._batcher.submit(image)

    async def stats(self) -> dict:
        return {"batches": self._batcher.stats.as_dict()}

    async def ping(self) -> dict:
        return {"ok": True, "role": "captioner", "model": self.cfg.model, "device": self.model.device}


def first_caption_line(text: str) -> str:
    """The first non-empty line of a VLM's answer, without surrounding quotes or a leading 'Caption:'."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    if line.lower().startswith("caption:"):
        line = line[len("caption:"):].strip()
    if len(line) >= 2 and line[0] == line[-1] and line[0] in "\"'":
        line = line[1:-1].strip()
    return line


class VLMCaptioner:
    """The captioner role answered by a VLM: ``caption(image)`` asks ``vlm.chat`` with ``cfg.vlm_prompt``.

    ``vlm`` is anything with the VLM role's ``chat`` (in production the VLM server in the same
    actor, so its engine and its cross-caller batching serve the captions too). Decoding is
    greedy and at most ``max_new_tokens`` long, like the transformers captioner's.
    """

    #: See CaptionerServer (``ping`` awaits the VLM server's ``ping``, itself a plain coroutine).
    CONTROL_METHODS = ("ping", "stats")

    def __init__(self, cfg: CaptionerConfig, vlm):
        self.cfg = cfg
        self.vlm = vlm
        self.calls = 0

    async def caption(self, image: np.ndarray) -> str:
        check_rgb_uint8(image, "image")
        messages = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": self.cfg.vlm_prompt}]}]
        answer = await self.vlm.chat(messages, {"temperature": 0.0, "max_new_tokens": self.cfg.max_new_tokens})
        self.calls += 1
        return first_caption_line(answer)

    async def stats(self) -> dict:
        return {"role": "captioner", "backend": "vlm", "calls": self.calls}

    async def ping(self) -> dict:
        vlm = await self.vlm.ping()
        return {"ok": True, "role": "captioner", "backend": "vlm", "model": vlm.get("model"), "engine": vlm.get("engine")}
