"""ε-scaling as a T2I option (t2i.epsilon_scaling): a step against the DDIM formula by hand, off = untouched,
λ = 1 bit-identical through the real pipeline, and the pipelines that cannot take it refuse it at load."""
import math

import numpy as np
import pytest
import torch

from actors.config import T2IConfig
from actors.epsilon_scaling import SCALED_MARK, EpsilonScalingError, apply_epsilon_scaling, refusal
from actors.model_source import ModelLoadError
from actors.t2i import T2IModel


def _ddim():
    from diffusers import DDIMScheduler

    s = DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                      clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    s.set_timesteps(10)
    return s


def test_a_scaled_ddim_step_matches_the_formula_by_hand():
    lam = 1.05
    scheduler = apply_epsilon_scaling(_ddim(), lam)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 8, 8, generator=g, dtype=torch.float64)
    eps = torch.randn(1, 4, 8, 8, generator=g, dtype=torch.float64)
    t = int(scheduler.timesteps[3])
    prev_t = t - 1000 // 10
    a_t = float(scheduler.alphas_cumprod[t])
    a_prev = float(scheduler.alphas_cumprod[prev_t])
    # DDIM (η = 0) with ε/λ: x0 = (x − √(1−ᾱ_t)·ε/λ)/√ᾱ_t, x_prev = √ᾱ_prev·x0 + √(1−ᾱ_prev)·ε/λ
    e = eps / lam
    x0 = (x - math.sqrt(1 - a_t) * e) / math.sqrt(a_t)
    expected = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * e
    got = scheduler.step(eps, t, x).prev_sample
    assert torch.allclose(got, expected, rtol=1e-6, atol=1e-6)  # ᾱ is float32 in the scheduler
    unscaled = _ddim().step(eps, t, x).prev_sample
    assert not torch.allclose(got, unscaled, atol=1e-6)  # the option does something
    assert getattr(scheduler, SCALED_MARK) == lam


def test_the_wrapper_keeps_the_step_signature_pipelines_inspect():
    import inspect

    scheduler = apply_epsilon_scaling(_ddim(), 1.01)
    assert {"eta", "generator"} <= set(inspect.signature(scheduler.step).parameters)
    with pytest.raises(EpsilonScalingError, match="already"):
        apply_epsilon_scaling(scheduler, 1.02)
    with pytest.raises(EpsilonScalingError, match="> 0"):
        apply_epsilon_scaling(_ddim(), 0.0)


def test_what_cannot_take_it_is_named():
    from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler

    assert "flow-matching" in refusal(FlowMatchEulerDiscreteScheduler())
    assert "v_prediction" in refusal(DDIMScheduler(prediction_type="v_prediction"))
    assert refusal(_ddim()) is None
    with pytest.raises(ValueError):
        T2IConfig(epsilon_scaling=0)


@pytest.fixture(scope="module")
def sd_models(t2i_section):
    base = T2IConfig.model_validate(t2i_section)
    return {lam: T2IModel(base.model_copy(update={"epsilon_scaling": lam})) for lam in (None, 1.0, 1.05)}


def test_off_leaves_the_pipeline_alone_and_lambda_one_is_bit_identical(sd_models):
    assert getattr(sd_models[None].pipe.scheduler, SCALED_MARK, None) is None
    assert "step" not in vars(sd_models[None].pipe.scheduler)  # the class's own method, not a wrapper
    items = [("a red apple on a table", 3), ("a blue car", 4)]
    off = sd_models[None].generate_batch(items)
    one = sd_models[1.0].generate_batch(items)
    scaled = sd_models[1.05].generate_batch(items)
    assert all(np.array_equal(a, b) for a, b in zip(off, one))
    assert all(not np.array_equal(a, b) for a, b in zip(off, scaled))


@pytest.mark.parametrize("target", ["sd3", "flux"])
def test_flow_matching_pipelines_refuse_it_at_load(t2i_target_sections, target):
    cfg = T2IConfig.model_validate({**t2i_target_sections[target], "epsilon_scaling": 1.01})
    with pytest.raises(ModelLoadError, match=r"t2i\.epsilon_scaling: FlowMatch.*flow-matching.*set it to null"):
        T2IModel(cfg)


def test_pixart_and_sdxl_take_it(t2i_target_sections):
    for target in ("sdxl", "pixart"):
        cfg = T2IConfig.model_validate({**t2i_target_sections[target], "epsilon_scaling": 1.01})
        assert getattr(T2IModel(cfg).pipe.scheduler, SCALED_MARK) == 1.01
