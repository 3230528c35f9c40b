"""ε-scaling for the text-to-image role's diffusers scheduler (Ning et al. 2024, "Elucidating the exposure bias
in diffusion models"): every denoising step gets ε_θ/λ instead of ε_θ, with λ slightly above 1.

The project's own exposure-bias study (docs/exposure_bias.md) found that ε-scaling, which needs no training,
lowers FID at few sampling steps; the MDSS samplers have it as ``SamplerConfig.eps_scale`` (training/samplers.py).
Here it is the T2I role's ``t2i.epsilon_scaling``: the scheduler's ``step`` is wrapped on the pipeline's own
scheduler instance, so it works for any diffusers scheduler a pipeline runs with an ε-predicting model (SD1.5,
SDXL, PixArt-α: after classifier-free guidance, on the guided prediction). λ is constant over the steps (the
paper also gives a linear schedule; the study here used a constant).

Refused, naming the option: a model that does not predict ε (``prediction_type`` "v_prediction" or "sample")
and flow-matching pipelines (SD3.5, FLUX.1: the transformer predicts a velocity; ε-scaling is not defined for it).
None (the default) leaves the pipeline untouched: bit-identical to a pipeline without the option.
"""
from __future__ import annotations

import functools
from typing import Any

SCALED_MARK = "_expectdiff_epsilon_scaling"


class EpsilonScalingError(ValueError):
    """The pipeline's scheduler cannot take ε-scaling."""


def refusal(scheduler: Any) -> str | None:
    """Why ε-scaling does not apply to ``scheduler``, or None when it does."""
    name = type(scheduler).__name__
    if "FlowMatch" in name:
        return f"{name} is a flow-matching scheduler (the model predicts a velocity, not ε)"
    prediction = getattr(getattr(scheduler, "config", None), "prediction_type", None)
    if prediction is None:
        return f"{name} does not say what its model predicts (no prediction_type in its config)"
    if prediction != "epsilon":
        return f"{name} is configured for prediction_type {prediction!r}, not 'epsilon'"
    return None


def apply_epsilon_scaling(scheduler: Any, lam: float) -> Any:
    """Wrap ``scheduler.step`` on this instance so that it receives ``model_output / lam``; returns the scheduler.

    The wrapper keeps ``step``'s signature (pipelines inspect it for ``eta`` and ``generator``)."""
    if not lam > 0:
        raise EpsilonScalingError(f"λ must be > 0, got {lam!r}")
    why = refusal(scheduler)
    if why is not None:
        raise EpsilonScalingError(why)
    if getattr(scheduler, SCALED_MARK, None) is not None:
        raise EpsilonScalingError(f"{type(scheduler).__name__} already has ε-scaling λ = {getattr(scheduler, SCALED_MARK)}")
    original = scheduler.step

    @functools.wraps(original)
    def step(model_output, timestep, sample, *args, **kwargs):
        return original(model_output / lam, timestep, sample, *args, **kwargs)

    scheduler.step = step
    setattr(scheduler, SCALED_MARK, lam)
    return scheduler
