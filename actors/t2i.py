"""Text-to-image role: any diffusers text-to-image pipeline (SD1.5, SDXL, SD3.5, FLUX.1, PixArt-α), loaded once.

``T2IModel`` is the plain class (usable without Ray, e.g. in benchmarks); ``T2IServer`` adds
cross-caller batching: every (prompt, seed) is one item of a MicroBatcher, so concurrent
callers share one pipeline call.

Reproducibility: each item gets its own ``torch.Generator`` seeded with its seed, created on
the CPU, so an item's starting noise depends only on its seed — not on the batch it shares,
nor on the device (CPU noise is the same on every machine; diffusers moves it to the GPU).
The rest of the computation is the same maths for every batch row, but BLAS/conv kernels
may sum in a different order for another batch size or another row position: measured on
CPU float32, that changes the float image by ~1e-6, i.e. at most one uint8 level in about
0.01% of pixels (the tests assert <= 1 level in < 0.5% of pixels). On CPU the same batch
repeated gives bit-for-bit the same images (GPU kernels need not be deterministic).
"""
from __future__ import annotations

import copy
import inspect
from typing import Any, Optional, Sequence

import numpy as np

from actors.batching import MicroBatcher
from actors.config import T2IConfig
from actors.epsilon_scaling import EpsilonScalingError, apply_epsilon_scaling
from actors.model_source import ModelLoadError, check_local_folder, load_error
from actors.prompt_budget import PromptBudgetError, pipeline_budget
from actors.torch_device import resolve_device, resolve_dtype

# torch.Generator.manual_seed accepts at most 64 bits; keep seeds non-negative and in int64.
MAX_SEED = 2**63 - 1


def check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
    if not 0 <= int(seed) <= MAX_SEED:
        raise ValueError(f"seed must be in [0, 2**63 - 1], got {seed}")
    return int(seed)


def check_prompt(prompt: Any) -> str:
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    return prompt


def float_images_to_uint8(images: np.ndarray) -> list[np.ndarray]:
    """Pipeline output (N, H, W, 3) floats in [0, 1] -> uint8 arrays, rounded as diffusers' numpy_to_pil does."""
    return [np.ascontiguousarray(np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)) for img in images]


#: The first diffusers release whose from_pretrained takes ``dtype`` and deprecates ``torch_dtype``
#: (huggingface/diffusers#14205; ``git tag --contains`` of its merge commit: v0.40.0).
DIFFUSERS_DTYPE_KWARG = (0, 40)


def _dtype_kwarg(dtype, version: Optional[str] = None) -> dict:
    """``dtype`` where diffusers takes it (0.40+; older releases pass an unknown ``dtype`` on to the components,
    which ignore it and load float32), else ``torch_dtype``."""
    from packaging.version import Version

    if version is None:
        import diffusers

        version = diffusers.__version__
    return {"dtype": dtype} if Version(version).release[:2] >= DIFFUSERS_DTYPE_KWARG else {"torch_dtype": dtype}


def load_pipeline(cfg: T2IConfig, device: str, dtype):
    import diffusers

    pipeline_cls = getattr(diffusers, cfg.pipeline_class, None)
    if pipeline_cls is None or not hasattr(pipeline_cls, "from_pretrained"):
        raise ModelLoadError(f"text-to-image pipeline_class {cfg.pipeline_class!r} is not a diffusers pipeline class")
    check_local_folder(cfg.model, "text-to-image", marker="model_index.json")
    try:
        pipe = pipeline_cls.from_pretrained(cfg.model, **_dtype_kwarg(dtype))
    except Exception as exc:  # noqa: BLE001 - re-raised with the model reference named
        raise load_error("text-to-image", cfg.model, f"diffusers.{cfg.pipeline_class}", exc) from exc
    return pipe


def negative_prompt_refusal(pipe: Any, cfg: T2IConfig) -> Optional[str]:
    """Why negative prompts the agent finds (agent.negative) would have no effect on this pipeline; None when they act.

    A negative prompt acts through classifier-free guidance: the pipeline must take one, must not be
    guidance-distilled (FLUX.1 runs without true CFG here), and guidance must be on (diffusers'
    ``do_classifier_free_guidance`` is ``guidance_scale > 1``)."""
    name = type(pipe).__name__
    takes = inspect.signature(type(pipe).__call__).parameters
    if "negative_prompt" not in takes:
        return f"{name} takes no negative prompt"
    if "true_cfg_scale" in takes:
        return f"{name} (FLUX.1, guidance-distilled) ignores a negative prompt without true classifier-free guidance, which this role does not do"
    if cfg.guidance_scale <= 1:
        return f"t2i.guidance_scale is {cfg.guidance_scale:g}: classifier-free guidance, through which a negative prompt acts, is off at 1 or below"
    return None


def check_call_settings(pipe: Any, cfg: T2IConfig) -> None:
    """Settings the pipeline would drop without a word are refused (PromptBudgetError naming the key)."""
    name = type(pipe).__name__
    takes = inspect.signature(type(pipe).__call__).parameters
    if cfg.negative_prompt is not None:
        if "negative_prompt" not in takes:
            raise PromptBudgetError(f"t2i.negative_prompt: {name} takes no negative prompt; set it to null")
        if "true_cfg_scale" in takes:  # FLUX.1: guidance-distilled; a negative prompt acts only with true CFG
            raise PromptBudgetError(f"t2i.negative_prompt: {name} (FLUX.1, guidance-distilled) ignores a negative "
                                    f"prompt unless run with true classifier-free guidance, which this role does "
                                    f"not do; set it to null")
    transformer = getattr(pipe, "transformer", None)
    if "true_cfg_scale" in takes and transformer is not None and not getattr(transformer.config, "guidance_embeds", True) \
            and cfg.guidance_scale > 0:
        raise PromptBudgetError(f"t2i.guidance_scale: {name} with a transformer without guidance embeddings "
                                f"(FLUX.1-schnell) ignores it; set it to 0 (was {cfg.guidance_scale:g})")


class T2IModel:
    """A diffusers text-to-image pipeline on the configured device and dtype.

    ``pipeline`` lets a caller wrap a pipeline it built in memory (benchmarks); otherwise
    ``cfg.model`` is loaded with ``cfg.pipeline_class``.
    """

    def __init__(self, cfg: T2IConfig, pipeline: Optional[Any] = None):
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.dtype = resolve_dtype(cfg.dtype, self.device)
        if pipeline is None:
            # Only the device here: from_pretrained already applied the dtype, and may keep
            # some modules in float32 on purpose (e.g. parts of PixArt's T5).
            self.pipe = load_pipeline(cfg, self.device, self.dtype).to(self.device)
        else:
            self.pipe = pipeline.to(self.device, self.dtype)
        self.pipe.set_progress_bar_config(disable=True)
        try:
            self.budget = pipeline_budget(self.pipe, cfg.max_prompt_tokens)
            check_call_settings(self.pipe, cfg)
        except PromptBudgetError as exc:
            raise ModelLoadError(f"text-to-image model {cfg.model!r}: {exc}") from None
        if cfg.epsilon_scaling is not None:
            try:
                apply_epsilon_scaling(self.pipe.scheduler, cfg.epsilon_scaling)
            except EpsilonScalingError as exc:
                raise ModelLoadError(f"text-to-image model {cfg.model!r}: t2i.epsilon_scaling: {exc}; set it to null") from None
        self._call_parameters = frozenset(inspect.signature(type(self.pipe).__call__).parameters)
        self.negative_refusal = negative_prompt_refusal(self.pipe, cfg)
        # A private copy of the binding tokenizer for counting: fast tokenizers are not safe to use
        # from two threads at once, and the pipeline uses its own in the batch worker thread.
        self._count_tokenizer = copy.deepcopy(getattr(self.pipe, self.budget.tokenizer_attr))

    def generate_batch(self, items: Sequence[tuple]) -> list[np.ndarray]:
        """One uint8 (H, W, 3) image per (prompt, seed) or (prompt, seed, negative prompt) item.

        Items without a negative prompt of their own go in one pipeline call exactly as before
        negative prompts existed (bit-identical); items with one in another call, where each gets
        ``t2i.negative_prompt`` and its own joined by a comma. Never mixed in one call: a pipeline
        may treat no negative prompt differently from an empty one (SDXL's zeroed negative embeddings).
        """
        plain = [k for k, item in enumerate(items) if len(item) < 3 or item[2] is None]
        with_negative = [k for k, item in enumerate(items) if len(item) >= 3 and item[2] is not None]
        out: list[Optional[np.ndarray]] = [None] * len(items)
        for group, negatives in ((plain, None), (with_negative, [self._negative(items[k][2]) for k in with_negative])):
            if group:
                for k, image in zip(group, self._call([items[k][:2] for k in group], negatives)):
                    out[k] = image
        return out  # type: ignore[return-value]

    def _negative(self, own: str) -> str:
        own = check_prompt(own)
        return f"{self.cfg.negative_prompt}, {own}" if self.cfg.negative_prompt else own

    def _call(self, items: Sequence[tuple[str, int]], negatives: Optional[list[str]]) -> list[np.ndarray]:
        """One pipeline call for all (prompt, seed) items; ``negatives``: each item's negative prompt, or
        None for ``t2i.negative_prompt`` (if any) on every item."""
        import torch

        if not items:
            return []
        prompts = [check_prompt(p) for p, _ in items]
        generators = [torch.Generator(device="cpu").manual_seed(check_seed(s)) for _, s in items]
        kwargs: dict[str, Any] = dict(
            prompt=prompts,
            num_inference_steps=self.cfg.num_inference_steps,
            guidance_scale=self.cfg.guidance_scale,
            generator=generators,
            output_type="np",
        )
        if self.cfg.height is not None:
            kwargs["height"] = self.cfg.height
        if self.cfg.width is not None:
            kwargs["width"] = self.cfg.width
        if negatives is not None:
            kwargs["negative_prompt"] = list(negatives)
        elif self.cfg.negative_prompt is not None:
            kwargs["negative_prompt"] = [self.cfg.negative_prompt] * len(prompts)
        if self.budget.max_sequence_length is not None:  # T5 reads this many tokens: the agent's budget
            kwargs["max_sequence_length"] = self.budget.max_sequence_length
        if "clean_caption" in self._call_parameters:
            # PixArt rewrites prompts (lower case, no URLs, ...) when BeautifulSoup and ftfy are installed, and
            # warns and skips it when not: the agent's prompt must reach the encoder as it was chosen.
            kwargs["clean_caption"] = False
        with torch.inference_mode():
            images = self.pipe(**kwargs).images
        return float_images_to_uint8(np.asarray(images))

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text under the binding tokenizer (actors.prompt_budget: T5's where the pipeline has
        T5, else the CLIP one with the smallest limit), special tokens excluded, no truncation."""
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of str, not a single str")
        texts = [check_prompt(t) for t in texts]
        if not texts:
            return []
        ids = self._count_tokenizer(texts, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
        return [len(x) for x in ids]


class T2IServer:
    """Async, cross-caller batched text-to-image service (the Ray actor is a thin shell around it)."""

    #: Cheap methods that must answer while long calls queue (a Ray shell runs them in a concurrency
    #: group of their own, on another event loop: they touch no asyncio object of the others).
    CONTROL_METHODS = ("count_tokens", "prompt_budget", "ping", "stats")

    def __init__(self, cfg: T2IConfig, model: Optional[T2IModel] = None):
        self.cfg = cfg
        self.model = model if model is not None else T2IModel(cfg)
        self._batcher = MicroBatcher(self.model.generate_batch, cfg.batching.max_batch_size, cfg.batching.max_wait_ms,
                                     name="t2i")

    async def generate(self, prompt: str, seeds: Sequence[int], negative_prompt: Optional[str] = None) -> list[np.ndarray]:
        """One image per seed; each (prompt, seed) joins the shared batch queue. ``negative_prompt``: this call's
        own (after ``t2i.negative_prompt``), for the agent's negative-prompt search; refused where it would not act."""
        check_prompt(prompt)
        if negative_prompt is None:
            items: list[tuple] = [(prompt, check_seed(s)) for s in seeds]
        else:
            if not check_prompt(negative_prompt).strip():
                raise ValueError("negative_prompt is empty; give None for no negative prompt of this call's own")
            if self.model.negative_refusal:
                raise ValueError(f"negative prompt refused: {self.model.negative_refusal}")
            items = [(prompt, check_seed(s), negative_prompt) for s in seeds]
        return await self._batcher.submit_many(items)

    async def count_tokens(self, texts: Sequence[str]) -> list[int]:
        # Tokenizing is fast (microseconds per prompt): done inline on the event loop.
        return self.model.count_tokens(texts)

    async def prompt_budget(self) -> dict:
        """The tokens a prompt may have (``limit``, special tokens included), the tokenizer counting them and why."""
        return {**self.model.budget.as_dict(), "negative_prompt_refused": self.model.negative_refusal}

    async def stats(self) -> dict:
        return {"batches": self._batcher.stats.as_dict()}

    async def ping(self) -> dict:
        return {"ok": True, "role": "t2i", "model": self.cfg.model, "device": self.model.device}
