"""The batch job's start-up check: the memory plan for this machine's GPUs, read through NVML or
nvidia-smi without creating a CUDA context."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

from actors.memory.plan import make_plan
from actors.memory.sizes import MiB, fmt

def local_gpu_memory() -> Optional[list[int]]:
    """Total memory of each GPU this process can see (honouring CUDA_VISIBLE_DEVICES given as indices),
    read through NVML or nvidia-smi without creating a CUDA context; None when unknown."""
    totals = _nvml_totals()
    if totals is None:
        totals = _nvidia_smi_totals()
    if totals is None:
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [s.strip() for s in visible.split(",") if s.strip()]
        if not all(s.isdigit() for s in ids):
            return None  # UUIDs or MIG names: not mapped here
        try:
            totals = [totals[int(s)] for s in ids]
        except IndexError:
            return None
    return totals


def _nvml_totals() -> Optional[list[int]]:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        try:
            return [int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(i)).total)
                    for i in range(pynvml.nvmlDeviceGetCount())]
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - no driver, no GPU
        return None


def _nvidia_smi_totals() -> Optional[list[int]]:
    import shutil
    import subprocess

    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
        return [int(float(line.strip())) * MiB for line in out.splitlines() if line.strip()]
    except Exception:  # noqa: BLE001
        return None


@dataclass
class MemoryCheck:
    """The batch job's start-up verdict: ``problems`` refuse the job; ``warnings`` and ``info`` are logged."""

    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    info: list[str] = field(default_factory=list)


def gpu_memory_check(sections: Any, cluster_gpus: float, gpu_memories: Optional[Iterable[int]] = None, *,
                     use_hub: bool = True) -> MemoryCheck:
    """The memory plan for a cluster with ``cluster_gpus`` GPUs, when their memory is known.

    ``gpu_memories``: the GPUs this machine sees (None: ask NVML / nvidia-smi). The plan runs
    only when they are all of the cluster's GPUs (a one-machine cluster); it then uses the
    smallest of them. Certain shortfalls are ``problems``; those that need the estimates are
    ``warnings``; a skipped check says why in ``info``.
    """
    check = MemoryCheck()
    memories = list(gpu_memories) if gpu_memories is not None else local_gpu_memory()
    count = int(round(cluster_gpus))
    if not memories:
        check.info.append("GPU memory plan skipped: this machine cannot tell its GPUs' memory (no NVML, no nvidia-smi); "
                          "check by hand with python -m actors.plan --config FILE --gpu-memory SIZE --gpus N")
        return check
    if len(memories) != count:
        check.info.append(f"GPU memory plan skipped: the cluster has {cluster_gpus:g} GPUs, this machine sees "
                          f"{len(memories)}; plan by hand with python -m actors.plan --gpu-memory SIZE --gpus N")
        return check
    try:
        plan = make_plan(sections, min(memories), count, use_hub=use_hub)
    except Exception as exc:  # noqa: BLE001 - a planning aid must not stop a job the loaders might run fine
        check.info.append(f"GPU memory plan skipped: {type(exc).__name__}: {exc}")
        return check
    certain = plan.problems(certain_only=True)
    check.problems = certain
    check.warnings = [p for p in plan.problems() if p not in certain] + plan.unknown
    if not certain and not check.warnings:
        check.info.append(f"GPU memory plan: the roles fit {count} GPU(s) of {fmt(min(memories))} "
                          f"({', '.join(f'GPU {g}: ~{fmt(plan.used(g))}' for g in range(count))})")
    return check
