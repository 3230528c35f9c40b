"""Noise schedules (β_t arrays) in float64, and reading a diffusers scheduler config.

Timesteps are 0-indexed as in diffusers: t ∈ {0, …, T−1}, ᾱ_t = ∏_{i≤t} (1 − β_i), and the
step "before" t = 0 is the clean data (ᾱ_{−1} := 1).

The formulas are diffusers' own (``DDPMScheduler``: ``linear``, ``scaled_linear``,
``squaredcos_cap_v2``), evaluated in float64; diffusers evaluates the same formulas and then
rounds to float32, so the two agree to float32 precision.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
from pydantic import Field, model_validator

from core.config import StrictModel

SCHEDULER_CONFIG_NAME = "scheduler_config.json"


class ScheduleConfig(StrictModel):
    """Which noise schedule the diffusion uses."""

    kind: Literal["linear", "cosine"] = Field(
        "linear",
        description="'linear': β linearly spaced from beta_start to beta_end (Ho et al. 2020). "
        "'cosine': Nichol & Dhariwal's cosine ᾱ (diffusers' 'squaredcos_cap_v2', β capped at 0.999). "
        "Ignored when from_scheduler_config is set.",
    )
    num_train_timesteps: int = Field(
        1000, ge=2, description="T, the number of diffusion steps. Ignored when from_scheduler_config is set."
    )
    beta_start: float = Field(1e-4, gt=0.0, lt=1.0, description="β_0 of the linear schedule.")
    beta_end: float = Field(0.02, gt=0.0, lt=1.0, description="β_{T-1} of the linear schedule.")
    from_scheduler_config: Optional[str] = Field(
        None,
        description="Path to a diffusers scheduler config (a scheduler_config.json file, a folder holding "
        "one, or a pipeline folder with scheduler/scheduler_config.json). When set, that schedule "
        "(and its T) is used instead of kind/num_train_timesteps/beta_*, so a pretrained model keeps "
        "the schedule it was trained with.",
    )

    @model_validator(mode="after")
    def _check_betas(self) -> "ScheduleConfig":
        if self.beta_start > self.beta_end:
            raise ValueError(f"beta_start ({self.beta_start}) must not exceed beta_end ({self.beta_end})")
        return self


def linear_betas(num_timesteps: int, beta_start: float, beta_end: float) -> np.ndarray:
    return np.linspace(beta_start, beta_end, num_timesteps, dtype=np.float64)


def scaled_linear_betas(num_timesteps: int, beta_start: float, beta_end: float) -> np.ndarray:
    """Latent-diffusion schedule: linear in √β."""
    return np.linspace(beta_start**0.5, beta_end**0.5, num_timesteps, dtype=np.float64) ** 2


def cosine_betas(num_timesteps: int, max_beta: float = 0.999) -> np.ndarray:
    """β_t = min(1 − ᾱ(t+1)/ᾱ(t), max_beta) with ᾱ(s) = cos²((s/T + 0.008)/1.008 · π/2)."""

    def alpha_bar(s: float) -> float:
        return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

    steps = np.arange(num_timesteps, dtype=np.float64)
    return np.array(
        [min(1.0 - alpha_bar((i + 1) / num_timesteps) / alpha_bar(i / num_timesteps), max_beta) for i in steps],
        dtype=np.float64,
    )


def find_scheduler_config(path: str | Path) -> Path:
    """Resolve a scheduler config file from a file, a scheduler folder or a pipeline folder."""
    p = Path(path).expanduser()
    candidates = [p] if p.is_file() else [p / SCHEDULER_CONFIG_NAME, p / "scheduler" / SCHEDULER_CONFIG_NAME]
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(
        f"from_scheduler_config={str(path)!r}: no scheduler config found (looked for {[str(c) for c in candidates]})"
    )


def load_scheduler_config(path: str | Path) -> dict[str, Any]:
    file = find_scheduler_config(path)
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{file}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{file}: the top level must be a JSON object")
    return data


def betas_from_scheduler_config(config: dict[str, Any], source: str = "<scheduler config>") -> np.ndarray:
    """The float64 β array a diffusers scheduler would build from ``config``.

    Only ε-prediction schedules without zero-terminal-SNR rescaling are accepted: the training
    strategies and the x₀-from-ε formulas divide by √ᾱ_t, which a zero terminal SNR makes 0.
    """
    if config.get("rescale_betas_zero_snr"):
        raise ValueError(f"{source}: rescale_betas_zero_snr=true is not supported (ᾱ_(T-1) would be 0)")
    prediction_type = config.get("prediction_type", "epsilon")
    if prediction_type != "epsilon":
        raise ValueError(f"{source}: prediction_type={prediction_type!r}; only 'epsilon' models are supported")
    num = int(config.get("num_train_timesteps", 1000))
    trained = config.get("trained_betas")
    if trained is not None:
        betas = np.asarray(trained, dtype=np.float64)
        if betas.shape != (num,):
            raise ValueError(f"{source}: trained_betas has shape {betas.shape}, expected ({num},)")
        return betas
    schedule = config.get("beta_schedule", "linear")
    start, end = float(config.get("beta_start", 1e-4)), float(config.get("beta_end", 0.02))
    if schedule == "linear":
        return linear_betas(num, start, end)
    if schedule == "scaled_linear":
        return scaled_linear_betas(num, start, end)
    if schedule == "squaredcos_cap_v2":
        return cosine_betas(num)
    raise ValueError(
        f"{source}: beta_schedule={schedule!r} is not supported (use linear, scaled_linear or squaredcos_cap_v2)"
    )


def betas_from_config(cfg: ScheduleConfig) -> tuple[np.ndarray, Optional[dict[str, Any]]]:
    """β array for ``cfg``, plus the scheduler config it came from (None for built-in schedules)."""
    if cfg.from_scheduler_config is not None:
        sched = load_scheduler_config(cfg.from_scheduler_config)
        return betas_from_scheduler_config(sched, source=cfg.from_scheduler_config), sched
    if cfg.kind == "linear":
        return linear_betas(cfg.num_train_timesteps, cfg.beta_start, cfg.beta_end), None
    return cosine_betas(cfg.num_train_timesteps), None
