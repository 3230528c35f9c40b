"""Resolve a config's device and dtype names to torch objects (called when a model loads, never at import)."""
from __future__ import annotations


def resolve_device(name: str) -> str:
    """'auto' means the first CUDA GPU when one is visible (Ray sets CUDA_VISIBLE_DEVICES per actor), else CPU."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but no CUDA GPU is visible to this process")
    return name


def resolve_dtype(name: str, device: str, gpu_default: str = "float16"):
    """'auto' is ``gpu_default`` on GPU and float32 on CPU (half precision is slow or unsupported on CPU)."""
    import torch

    if name == "auto":
        name = gpu_default if device.startswith("cuda") else "float32"
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]
