"""Per-row seeded sampling for batched ``generate``: each answer depends on its own seed only.

transformers' built-in sampling draws from one random stream for the whole batch, so a
request's answer would change with whatever else shares its batch. Here every row has
its own generator and samples by the Gumbel-max trick: ``argmax(logits / T + G)`` with
``G`` standard Gumbel noise is a draw from ``softmax(logits / T)`` (after top-p
filtering). ``generate`` then runs in greedy mode, and a row with temperature 0 gets no
noise, which is plain greedy decoding.
"""
from __future__ import annotations

from typing import Sequence


def top_p_filter(logits, top_p: float):
    """Set logits outside the nucleus (smallest set whose probability reaches top_p) to -inf; keeps >= 1 token."""
    import torch

    if top_p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    mass_before = torch.cumsum(probs, dim=-1) - probs
    drop_sorted = mass_before >= top_p
    drop_sorted[..., 0] = False
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


class SeededRowSampler:
    """A transformers logits processor (callable ``(input_ids, scores) -> scores``) for Gumbel-max sampling per row."""

    def __init__(self, temperatures: Sequence[float], top_ps: Sequence[float], seeds: Sequence[int]):
        import torch

        if not len(temperatures) == len(top_ps) == len(seeds):
            raise ValueError("one temperature, top_p and seed per row")
        self.temperatures = list(temperatures)
        self.top_ps = list(top_ps)
        # CPU generators: the same seed gives the same noise on any device.
        self.generators = [torch.Generator(device="cpu").manual_seed(int(s) % (2**63)) for s in seeds]

    def __call__(self, input_ids, scores):
        import torch

        if scores.shape[0] != len(self.generators):
            raise RuntimeError(f"sampler built for {len(self.generators)} rows got {scores.shape[0]}")
        out = scores.float().clone()
        for i, (temp, top_p, gen) in enumerate(zip(self.temperatures, self.top_ps, self.generators)):
            if temp == 0:
                continue  # greedy row: generate's argmax takes the raw logits
            row = top_p_filter(out[i] / temp, top_p)
            u = torch.rand(row.shape, generator=gen, dtype=torch.float64).clamp_(min=1e-300)
            gumbel = -torch.log(-torch.log(u))
            out[i] = row + gumbel.to(device=row.device, dtype=row.dtype)
        return out
