"""Refuse a ``vllm.mm_processor_kwargs`` key the model's processor does not take.

vLLM hands these keyword arguments to the model's Hugging Face processor, which ignores names it does
not know: a misspelt ``max_pixel`` would silently leave images at their full token count (and the
memory plan wrong). The processor declares what it takes (transformers' ``valid_kwargs`` typed dicts
of the processor and of its image processor); a key outside them is refused when the role loads,
naming it and the keys there are.
"""
from __future__ import annotations

import typing
from typing import Any, Mapping


def _declared(kwargs_type: Any) -> set[str]:
    if kwargs_type is None:
        return set()
    try:
        hints = typing.get_type_hints(kwargs_type)
    except Exception:  # noqa: BLE001 - an unresolvable annotation: use the raw names
        hints = getattr(kwargs_type, "__annotations__", {})
    names = set(hints)
    # a processor's kwargs group per modality (images_kwargs, text_kwargs, ...): their keys count too
    for name, hint in hints.items():
        if name.endswith("_kwargs"):
            names |= _declared(hint)
    return names


def accepted_keys(processor: Any) -> set[str]:
    """The keyword arguments ``processor`` (a transformers processor or image processor) declares."""
    keys: set[str] = set()
    for owner in (processor, getattr(processor, "image_processor", None), getattr(processor, "video_processor", None)):
        if owner is None:
            continue
        keys |= _declared(getattr(owner, "valid_kwargs", None))
        keys |= _declared(getattr(owner, "valid_processor_kwargs", None))
    return keys


def unknown_processor_kwargs(processor: Any, kwargs: Mapping[str, Any]) -> list[str]:
    """The keys of ``kwargs`` the processor does not declare; [] when it declares nothing (cannot tell)."""
    keys = accepted_keys(processor)
    if not keys:
        return []
    return sorted(k for k in kwargs if k not in keys)


def check_processor_kwargs(processor: Any, kwargs: Mapping[str, Any], where: str) -> None:
    """ValueError naming ``where.<key>`` for each key the processor does not take."""
    unknown = unknown_processor_kwargs(processor, kwargs or {})
    if unknown:
        accepted = ", ".join(sorted(k for k in accepted_keys(processor) if not k.endswith("_kwargs")
                                    and k not in ("return_tensors", "device", "data_format", "input_data_format")))
        raise ValueError(f"{', '.join(f'{where}.{k}' for k in unknown)}: not a keyword argument of "
                         f"{type(processor).__name__} (it would be ignored); it takes: {accepted}")
