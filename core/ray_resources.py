"""Checks of Ray custom-resource requests, shared by the actor and training configs.

Ray refuses (or, worse, waits forever on) a request that names one of its own resources, asks for a
negative amount, a fraction above 1, or more precision than it keeps; these checks say so when the config
is loaded, naming the key, instead of when the actor or worker group is placed.
"""
from __future__ import annotations

#: Ray's own resources: what each must be set with instead, filled in by the caller's field names.
RESERVED = ("CPU", "GPU", "MEMORY", "OBJECT_STORE_MEMORY")
MAX_CUSTOM_RESOURCE = 64.0


def check_custom_resources(value: dict[str, float], where: str, reserved_hints: dict[str, str]) -> dict[str, float]:
    """``value`` if every entry is a valid custom-resource request, else ValueError naming ``where.<name>``.

    ``reserved_hints`` maps each of :data:`RESERVED` to the message for a config that names it."""
    for name, amount in value.items():
        key = f"{where}.{name}"
        if not name or name != name.strip():
            raise ValueError(f"{key}: a resource name must be non-empty, without surrounding blanks")
        if name.upper() in RESERVED:
            raise ValueError(f"{key}: {reserved_hints[name.upper()]}")
        if not 0 < amount <= MAX_CUSTOM_RESOURCE:
            raise ValueError(f"{key}: amount must be in (0, {MAX_CUSTOM_RESOURCE:g}], got {amount:g}")
        if amount > 1 and amount != int(amount):
            raise ValueError(f"{key}: an amount above 1 must be a whole number (got {amount:g})")
        if round(amount, 4) != amount:
            raise ValueError(f"{key}: at most 4 decimals (Ray's resource precision is 0.0001), got {amount!r}")
    return value
