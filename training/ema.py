"""Exponential moving average of a model's floating-point parameters and buffers."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn


class EMA:
    """``shadow ← rate·shadow + (1−rate)·param`` after each optimiser step.

    ``warmup=False`` uses the constant rate from the first update (right for fine-tuning: the average
    starts at the pretrained weights); ``warmup=True`` uses ``min(decay, (1+n)/(10+n))`` so a run from
    scratch does not average in its random initialisation for ~1/(1−decay) steps.
    """

    def __init__(self, model: nn.Module, decay: float, warmup: bool = False):
        self.decay, self.warmup, self.updates = decay, warmup, 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    def rate(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        rate = self.rate()
        for name, value in model.state_dict().items():
            if name in self.shadow:
                self.shadow[name].lerp_(value.detach().to(self.shadow[name].dtype), 1.0 - rate)
        self.updates += 1

    @contextmanager
    @torch.no_grad()
    def applied_to(self, model: nn.Module) -> Iterator[nn.Module]:
        """Temporarily load the averaged weights into ``model`` (for sampling or saving)."""
        state = model.state_dict()
        backup = {k: state[k].detach().clone() for k in self.shadow}
        model.load_state_dict(self.shadow, strict=False)
        try:
            yield model
        finally:
            model.load_state_dict(backup, strict=False)

    @torch.no_grad()
    def load_shadow_from(self, model: nn.Module, updates: int) -> None:
        """Resume: take the averaged weights from a model loaded from saved EMA weights."""
        state = model.state_dict()
        missing = sorted(set(self.shadow) - set(state))
        if missing:
            raise ValueError(f"saved EMA weights do not match the model: missing {missing[:5]}")
        for k in self.shadow:
            self.shadow[k].copy_(state[k])
        self.updates = int(updates)
