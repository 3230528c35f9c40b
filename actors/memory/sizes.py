"""Memory and parameter sizes: the byte units, ``parse_size`` ("24GiB" -> bytes), ``fmt`` and ``fmt_params``
for the plan's text, and ``SizingError`` (a model whose size could not be determined)."""
from __future__ import annotations

import re

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30

_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "kib": KiB, "mib": MiB, "gib": GiB, "tib": 1 << 40}


class SizingError(ValueError):
    """A model's size could not be determined (the message says which model and why)."""


def parse_size(text: str) -> int:
    """``"24GiB"``, ``"80 GB"``, ``"81559MiB"`` (what nvidia-smi shows) -> bytes. A unit is required."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]i?B|B)\s*", str(text), re.IGNORECASE)
    if not m:
        raise ValueError(f"{text!r} is not a memory size: give a number and a unit, e.g. 24GiB, 80GB or 81559MiB "
                         "(GiB = 2**30 bytes, GB = 10**9)")
    value = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if value <= 0:
        raise ValueError(f"{text!r}: the GPU memory must be positive")
    return int(value)


def fmt(n: float) -> str:
    return f"{n / GiB:.2f} GiB"


def fmt_params(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}K"
