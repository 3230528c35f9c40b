"""The on-disk layout of a training checkpoint, and loading a trained model back for sampling.

A checkpoint folder (what ``ray.train.report`` persists under ``<run_dir>/<name>/checkpoint_*``)::

    model/              trainable weights: a diffusers UNet folder (XiUNet.save_pretrained; with ξ
                        channels its config.json carries "_xi_channels")
    ema/                the EMA weights, same format — this is the one to sample from
    training_state.pt   {"step", "optimizer", "ema_updates", "attempt_starts"}: tensors, numbers and plain
                        containers only, read back with ``torch.load(weights_only=True)`` (a file that
                        needs any other Python object is refused, never unpickled)
    train_config.json   the validated TrainConfig of the run
    metrics.jsonl       every logged metrics row since step 0 (carried across resumes)
    samples.png         a grid from the EMA weights (only at steps that are multiples of sample.every)
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

MODEL_DIR, EMA_DIR = "model", "ema"
STATE_FILE, CONFIG_FILE, METRICS_FILE, SAMPLES_FILE = (
    "training_state.pt", "train_config.json", "metrics.jsonl", "samples.png")


def write_checkpoint(folder: Path, *, model, ema, optimizer: torch.optim.Optimizer, step: int,
                     attempt_starts: list[int], config: dict, history: list[dict]) -> None:
    """Write everything needed to resume (and to sample) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder / MODEL_DIR)
    with ema.applied_to(model):
        model.save_pretrained(folder / EMA_DIR)
    torch.save({"step": step, "optimizer": optimizer.state_dict(), "ema_updates": ema.updates,
                "attempt_starts": list(attempt_starts)}, folder / STATE_FILE)
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    (folder / METRICS_FILE).write_text("".join(json.dumps(row) + "\n" for row in history))


class TensorFileError(ValueError):
    """A ``.pt`` file holds something other than tensors, numbers, strings and plain containers."""


def load_tensor_file(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load`` restricted to tensors, numbers, strings and plain containers (``weights_only=True``).

    A pickle that refers to any other Python object (a crafted file could run code while it is
    unpickled) is refused with :class:`TensorFileError` naming the file; nothing in it runs.
    """
    import pickle

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message is several lines and suggests weights_only=False; keep only the line with the cause.
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        cause = next((line for line in lines if "GLOBAL" in line or "nsupported" in line), type(exc).__name__)
        if "GLOBAL" in cause:
            raise TensorFileError(f"{path}: refused to load: it refers to Python objects other than tensors and "
                                  f"plain containers, which could run code when unpickled ({cause})") from None
        raise TensorFileError(f"{path}: not a readable torch tensor file ({cause})") from None
    except FileNotFoundError:
        raise
    except (RuntimeError, EOFError, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise TensorFileError(f"{path}: not a readable torch tensor file ({type(exc).__name__}: {first})") from None


def read_training_state(folder: Path, device: torch.device) -> dict[str, Any]:
    path = Path(folder) / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a training checkpoint (no {STATE_FILE})")
    state = load_tensor_file(path, device)
    if not isinstance(state, dict) or not {"step", "optimizer", "ema_updates"} <= set(state):
        raise TensorFileError(f"{path}: not a training state (expected a mapping with step, optimizer and "
                                    f"ema_updates, got {type(state).__name__})")
    return state


def read_history(folder: Path) -> list[dict]:
    path = Path(folder) / METRICS_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def load_trained_model(checkpoint_dir: str | Path, weights: str = "ema", device: str | torch.device = "cpu"):
    """Load a checkpoint's EMA (default) or raw weights as an ``XiUNet`` returning ``(eps, xi)``
    (``xi`` is None for a model trained without the ξ head), in eval mode."""
    from training.xi_head import XiUNet

    if weights not in (MODEL_DIR, EMA_DIR):
        raise ValueError(f"weights must be {EMA_DIR!r} or {MODEL_DIR!r}, got {weights!r}")
    folder = Path(checkpoint_dir) / weights
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: no saved model (expected a checkpoint folder with {weights}/config.json)")
    return XiUNet.from_pretrained(folder).to(device).eval()


def load_diffusion(checkpoint_dir: str | Path):
    """The ``GaussianDiffusion`` the checkpoint was trained with (from its train_config.json)."""
    from training.build import build_diffusion
    from training.diffusion import ScheduleConfig

    path = Path(checkpoint_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a training checkpoint (no {CONFIG_FILE})")
    return build_diffusion(ScheduleConfig.model_validate(json.loads(path.read_text())["schedule"]))


def grid(images_uint8: np.ndarray, ncols: Optional[int] = None) -> np.ndarray:
    """Tile uint8 (B, H, W, C) images into one (rows·H, cols·W, C) image, row-major."""
    b, h, w, c = images_uint8.shape
    ncols = ncols or math.ceil(math.sqrt(b))
    nrows = math.ceil(b / ncols)
    canvas = np.zeros((nrows * h, ncols * w, c), np.uint8)
    for i, img in enumerate(images_uint8):
        r, col = divmod(i, ncols)
        canvas[r * h:(r + 1) * h, col * w:(col + 1) * w] = img
    return canvas


def write_sample_grid(path: Path, images: torch.Tensor) -> None:
    """Save (B, C, H, W) images in [-1, 1] as one PNG grid."""
    from PIL import Image

    from training.samplers import to_uint8

    canvas = grid(to_uint8(images))
    Image.fromarray(canvas[..., 0] if canvas.shape[-1] == 1 else canvas).save(path)
