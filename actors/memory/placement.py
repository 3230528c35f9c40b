"""Actor replicas onto GPUs in start order, as Ray packs fractional ``num_gpus`` (best fit)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from actors.memory.needs import GroupNeed

_FRACTION = 10_000  # Ray keeps resource amounts in units of 1/10000


@dataclass
class Placed:
    need: GroupNeed
    replica: int
    gpus: tuple[int, ...]  # empty: could not be placed


def place(needs: Sequence[GroupNeed], gpus: int) -> list[Placed]:
    """Replicas onto GPUs in start order, as Ray packs fractional GPUs: best fit (the GPU with the
    least free fraction that still fits); whole-GPU actors take the lowest free GPUs."""
    free = [_FRACTION] * gpus
    out = []
    for need in needs:
        res = need.group.resources
        for replica in range(res.num_replicas):
            if need.where != "gpu":
                out.append(Placed(need, replica, ()))
                continue
            whole = need.gpus_per_replica or (math.ceil(res.num_gpus) if res.num_gpus >= 1 else 0)
            if whole:
                chosen = [g for g in range(gpus) if free[g] == _FRACTION][:whole]
                if len(chosen) < whole:
                    chosen = []
                for g in chosen:
                    free[g] = 0
                out.append(Placed(need, replica, tuple(chosen)))
                continue
            amount = round(res.num_gpus * _FRACTION)
            fits = [g for g in range(gpus) if free[g] >= amount]
            if not fits:
                out.append(Placed(need, replica, ()))
                continue
            g = min(fits, key=lambda i: (free[i], i))
            free[g] -= amount
            out.append(Placed(need, replica, (g,)))
    return out
