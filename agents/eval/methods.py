"""Prompt sources compared by the evaluation (thesis §4.3.2), one small class each.

Every source answers ``await source.prompt(image)`` with the text to render, plus a
dict of details for the records; ``fingerprint`` covers what the prompt depends on, so
a rerun reuses it only while that is unchanged. A source that has no prompt for an
image raises :class:`NoPrompt` (the image then counts as missing for that method).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Protocol

import numpy as np

from agents.eval.config import EvalConfig
from agents.eval.interrogator import TermLists, interrogate
from agents.eval.records import fingerprint

KINDS = {
    "arpo": "arpo",
    "blip2": "captioner", "captioner": "captioner",
    "vlm": "vlm",
    "clip_interrogator": "interrogator", "clip-interrogator": "interrogator", "interrogator": "interrogator",
}
DEFAULT_LABELS = {"captioner": "BLIP2 (captioner)", "vlm": "VLM description", "interrogator": "CLIP-Interrogator"}


class NoPrompt(Exception):
    """This source has no prompt for this image (the reason is the message)."""


@dataclass(frozen=True)
class MethodSpec:
    """One entry of ``--methods``: its key as written, its kind and its argument (variant name or file)."""

    key: str
    kind: str
    arg: Optional[str] = None


def parse_methods(methods: list[str] | str) -> list[MethodSpec]:
    """``arpo,blip2,vlm,clip_interrogator,file:prompts.csv`` (or the list) -> specs, checked."""
    items = methods.split(",") if isinstance(methods, str) else list(methods)
    specs, seen = [], set()
    for raw in items:
        key = raw.strip()
        if not key:
            continue
        name, _, arg = key.partition(":")
        kind = "file" if name == "file" else KINDS.get(name)
        if kind is None or (kind not in ("arpo", "file") and arg):
            allowed = "arpo, arpo:<variant>, blip2, vlm, clip_interrogator, file:<prompts.csv>"
            raise ValueError(f"unknown method {key!r} (known: {allowed})")
        if kind == "file" and not arg:
            raise ValueError("method 'file:' needs a CSV path, e.g. file:prompts.csv")
        if key in seen:
            raise ValueError(f"method {key!r} is listed twice")
        seen.add(key)
        specs.append(MethodSpec(key=key, kind=kind, arg=arg or None))
    if not specs:
        raise ValueError("no methods given")
    return specs


@dataclass
class EvalImage:
    """One reference image of the evaluation."""

    image_id: str
    rel: str  # path relative to the image folder
    folder: Path  # its folder under <out>/images
    reference_rel: str  # reference.png relative to the output folder
    reference: np.ndarray = field(repr=False, default=None)


class PromptSource(Protocol):
    key: str
    label: str
    fingerprint: str

    async def prompt(self, image: EvalImage) -> tuple[str, dict]: ...


def _clean(text: str, what: str) -> str:
    text = " ".join((text or "").split())
    if not text:
        raise NoPrompt(f"{what} returned an empty text")
    return text


class CaptionerSource:
    """The captioner alone (BLIP2 in the thesis): its caption is the prompt."""

    def __init__(self, spec: MethodSpec, cfg: EvalConfig, captioner: Any):
        self.key, self.captioner = spec.key, captioner
        self.label = cfg.evaluation.method_labels.get(spec.key, DEFAULT_LABELS["captioner"])
        self.fingerprint = fingerprint("captioner", cfg.captioner.model, cfg.captioner.prompt, cfg.captioner.max_new_tokens)

    async def prompt(self, image: EvalImage) -> tuple[str, dict]:
        return _clean(await self.captioner.caption(image.reference), "the captioner"), {}


class VlmSource:
    """The VLM alone: a long description of the image used as the prompt (GPT-4V / LLaVA rows)."""

    def __init__(self, spec: MethodSpec, cfg: EvalConfig, vlm: Any):
        self.key, self.vlm = spec.key, vlm
        self.instruction = cfg.evaluation.vlm_instruction
        self.label = cfg.evaluation.method_labels.get(spec.key, f"{DEFAULT_LABELS['vlm']} ({model_name(cfg.vlm.model)})")
        self.fingerprint = fingerprint("vlm", cfg.vlm.backend, cfg.vlm.model, cfg.vlm.sampling, self.instruction)

    async def prompt(self, image: EvalImage) -> tuple[str, dict]:
        messages = [{"role": "user", "content": [{"type": "image", "image": image.reference},
                                                 {"type": "text", "text": self.instruction}]}]
        return _clean(await self.vlm.chat(messages), "the VLM"), {}


class InterrogatorSource:
    """The CLIP-Interrogator method (agents/eval/interrogator.py) on the captioner, CLIP and T2I tokenizer."""

    def __init__(self, spec: MethodSpec, cfg: EvalConfig, lists: TermLists, captioner: Any, clip: Any, t2i: Any):
        self.key, self.lists, self.captioner, self.clip, self.t2i = spec.key, lists, captioner, clip, t2i
        self.cfg = cfg.evaluation.interrogator
        self.token_limit = cfg.t2i.max_prompt_tokens - cfg.agent.reserved_tokens
        self.label = cfg.evaluation.method_labels.get(spec.key, DEFAULT_LABELS["interrogator"])
        self.fingerprint = fingerprint("interrogator", self.cfg, fingerprint(lists.mediums, lists.artists, lists.movements, lists.flavors),
                                       cfg.captioner.model, cfg.captioner.prompt, cfg.clip.model_name, cfg.clip.pretrained,
                                       cfg.t2i.model, self.token_limit)

    async def prompt(self, image: EvalImage) -> tuple[str, dict]:
        caption = _clean(await self.captioner.caption(image.reference), "the captioner")

        async def score(texts: list[str]) -> list[float]:
            return await self.clip.text_image_scores(texts, image.reference, image_key=image.image_id)

        async def count(texts: list[str]) -> list[int]:
            return await self.t2i.count_tokens(texts)

        result = await interrogate(caption, self.lists, self.cfg, score, count, self.token_limit)
        return result.prompt, result.to_dict()


class FileSource:
    """Prompts from a CSV (hand-crafted prompts): columns ``image`` and ``prompt``.

    ``image`` may be the path relative to the image folder, the file name (when unique)
    or the image id (content hash).
    """

    def __init__(self, spec: MethodSpec, cfg: EvalConfig, base_dir: Path):
        self.key = spec.key
        path = Path(spec.arg).expanduser()
        self.path = path if path.is_absolute() else base_dir / path
        self.entries = read_prompt_file(self.path)
        self.label = cfg.evaluation.method_labels.get(spec.key, f"Prompts from {self.path.name}")
        self.fingerprint = fingerprint("file", sorted(self.entries.items()))
        self._used: set[str] = set()

    async def prompt(self, image: EvalImage) -> tuple[str, dict]:
        name = image.rel.rsplit("/", 1)[-1]
        for key in (image.rel, image.image_id, name):
            if key in self.entries:
                self._used.add(key)
                return self.entries[key], {"file": str(self.path), "matched": key}
        raise NoPrompt(f"{self.path.name} has no prompt for {image.rel}")

    def unused(self) -> list[str]:
        return sorted(set(self.entries) - self._used)


def read_prompt_file(path: Path) -> dict[str, str]:
    """``image,prompt`` CSV (header required, other columns ignored) -> {image: prompt}."""
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {path} does not exist")
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = {c.strip().lower(): c for c in (reader.fieldnames or [])}
        if "image" not in columns or "prompt" not in columns:
            raise ValueError(f"{path}: needs a header with the columns 'image' and 'prompt' (found {reader.fieldnames})")
        entries: dict[str, str] = {}
        for line, row in enumerate(reader, 2):
            image = (row.get(columns["image"]) or "").strip()
            prompt = " ".join((row.get(columns["prompt"]) or "").split())
            if not image and not prompt:
                continue
            if not image or not prompt:
                raise ValueError(f"{path}: line {line} has an empty image or prompt")
            if image in entries:
                raise ValueError(f"{path}: line {line}: a second prompt for {image!r}")
            entries[image] = prompt
    if not entries:
        raise ValueError(f"{path}: no prompts")
    return entries


def model_name(ref: str) -> str:
    """A short display name for a model reference: the last path or hub-id component."""
    return ref.rstrip("/").rsplit("/", 1)[-1]
