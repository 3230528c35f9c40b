"""The cluster's object store while a level runs (SIMULATION benchmark, issue #24 item 2).

Ray's own aggregate store statistics, the figures ``ray memory --stats-only`` prints (plasma bytes in use,
objects, spilled bytes): read through ``ray._private.internal_api.get_memory_info_reply`` — a private API,
the one the ``ray memory`` command calls — from the benchmark's main process, never from the measured
driver.
"""
from __future__ import annotations

import time
from typing import Optional


def store_stats(address: str) -> Optional[dict]:
    """Cluster-wide object store figures now, or None when Ray does not answer."""
    try:
        from ray._private.internal_api import get_memory_info_reply, get_state_from_address

        s = get_memory_info_reply(get_state_from_address(address), timeout_seconds=10).store_stats
    except Exception:  # noqa: BLE001 - a sample missed is recorded as missing, the level goes on
        return None
    return {"t": time.time(), "used_bytes": int(s.object_store_bytes_used), "objects": int(s.num_local_objects),
            "capacity_bytes": int(s.object_store_bytes_avail), "fallback_bytes": int(s.object_store_bytes_fallback),
            "spilled_bytes": int(s.spilled_bytes_total), "spilled_objects": int(s.spilled_objects_total)}


def summary(samples: list[dict]) -> dict:
    """Peak use and objects, and what was spilled by the end, over a level's samples."""
    got = [s for s in samples if s]
    if not got:
        return {"samples": 0}
    return {"samples": len(got), "missed": len(samples) - len(got),
            "peak_used_mb": max(s["used_bytes"] for s in got) / 2**20,
            "peak_objects": max(s["objects"] for s in got),
            "capacity_mb": got[-1]["capacity_bytes"] / 2**20,
            "spilled_mb": got[-1]["spilled_bytes"] / 2**20, "spilled_objects": got[-1]["spilled_objects"],
            "fallback_mb": max(s["fallback_bytes"] for s in got) / 2**20}
