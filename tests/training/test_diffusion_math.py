"""Proofs of the diffusion identities behind MDSS, in float64 (tolerance 1e-12 unless stated)."""
import json
import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from diffusers import DDIMScheduler, DDPMScheduler  # noqa: E402

from training.diffusion import GaussianDiffusion, ScheduleConfig  # noqa: E402
from training.schedules import cosine_betas, linear_betas  # noqa: E402

T = 1000
KS = [0, 1, 2, 4, 10, 50]


@pytest.fixture(scope="module", params=["linear", "cosine"])
def diffusion(request):
    return GaussianDiffusion.from_config(ScheduleConfig(kind=request.param, num_train_timesteps=T))


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_arrays_are_float64_and_consistent(diffusion):
    d = diffusion
    for name in ["betas", "alphas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
                 "sqrt_one_minus_alphas_cumprod", "posterior_variance", "posterior_mean_coef1", "posterior_mean_coef2"]:
        arr = getattr(d, name)
        assert arr.dtype == np.float64 and arr.shape == (T,), name
    assert d.alphas_cumprod_prev[0] == 1.0  # ᾱ_{-1} := 1
    np.testing.assert_allclose(d.alphas_cumprod[1:], d.alphas_cumprod[:-1] * d.alphas[1:], rtol=1e-14)
    # the posterior maps the forward mean onto the forward mean: c1 + c2 √ᾱ_t = √ᾱ_{t-1}
    np.testing.assert_allclose(
        d.posterior_mean_coef1 + d.posterior_mean_coef2 * d.sqrt_alphas_cumprod, np.sqrt(d.alphas_cumprod_prev),
        atol=1e-12, rtol=0)  # 1/(1-ᾱ_t) ~ 1e4 near t = 0 amplifies the last bit to ~3e-13
    # at t = 0 the posterior mean is x0 itself and its variance is 0
    assert abs(d.posterior_mean_coef1[0] - 1.0) < 1e-12 and d.posterior_mean_coef2[0] == 0.0
    assert d.posterior_variance[0] == 0.0


def test_schedules_match_diffusers_formulas():
    lin = DDPMScheduler(num_train_timesteps=T, beta_schedule="linear")
    cos = DDPMScheduler(num_train_timesteps=T, beta_schedule="squaredcos_cap_v2")
    # diffusers rounds the same formulas to float32
    np.testing.assert_allclose(linear_betas(T, 1e-4, 0.02), lin.betas.double().numpy(), rtol=1e-6, atol=0)
    np.testing.assert_allclose(cosine_betas(T), cos.betas.double().numpy(), rtol=1e-6, atol=0)
    np.testing.assert_allclose(np.float32(cosine_betas(T)), cos.betas.numpy(), rtol=0, atol=0)


def test_from_scheduler_config_uses_the_pretrained_schedule(tmp_path):
    sd_like = {"_class_name": "PNDMScheduler", "beta_schedule": "scaled_linear", "beta_start": 0.00085,
               "beta_end": 0.012, "num_train_timesteps": 1000, "steps_offset": 1, "set_alpha_to_one": False,
               "skip_prk_steps": True, "clip_sample": False}
    folder = tmp_path / "pipe" / "scheduler"
    folder.mkdir(parents=True)
    (folder / "scheduler_config.json").write_text(json.dumps(sd_like))
    for path in [folder / "scheduler_config.json", folder, tmp_path / "pipe"]:
        d = GaussianDiffusion.from_config(ScheduleConfig(kind="linear", from_scheduler_config=str(path)))
        ref = DDPMScheduler.from_config(sd_like)
        np.testing.assert_allclose(d.betas, ref.betas.double().numpy(), rtol=1e-6)
        np.testing.assert_allclose(d.alphas_cumprod, ref.alphas_cumprod.double().numpy(), rtol=1e-5)
        assert d.scheduler_config["steps_offset"] == 1
    with pytest.raises(FileNotFoundError, match="no scheduler config"):
        GaussianDiffusion.from_config(ScheduleConfig(from_scheduler_config=str(tmp_path / "missing")))
    bad = dict(sd_like, prediction_type="v_prediction")
    (folder / "scheduler_config.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="prediction_type"):
        GaussianDiffusion.from_config(ScheduleConfig(from_scheduler_config=str(folder)))


def test_invalid_inputs_are_rejected(diffusion):
    with pytest.raises(ValueError, match="betas"):
        GaussianDiffusion.from_betas(np.array([0.1, 1.5]))
    with pytest.raises(ValueError, match="beta_start"):
        ScheduleConfig(beta_start=0.03, beta_end=0.02)
    x = _rand(2, 3)
    with pytest.raises(ValueError, match=r"timesteps must lie in \[0, 999\]"):
        diffusion.q_sample(x, torch.tensor([0, T]), x)
    with pytest.raises(ValueError, match="k must be"):
        diffusion.k_step_coefficients(T)


def test_q_sample_and_x0_eps_inversions(diffusion):
    d, t = diffusion, torch.arange(T)
    x0, eps = _rand(T, 5, seed=1), _rand(T, 5, seed=2)
    xt = d.q_sample(x0, t, eps)
    torch.testing.assert_close(d.predict_eps_from_x0(xt, t, x0), eps, atol=1e-9, rtol=0)
    torch.testing.assert_close(d.predict_x0_from_eps(xt, t, eps), x0, atol=1e-9, rtol=0)


@pytest.mark.parametrize("kind", ["ddpm", "ddim"])
def test_k_step_closed_form_equals_k_fold_loop(diffusion, kind):
    d = diffusion
    for k in KS:
        gamma, omega = d.k_step_coefficients(k, kind)
        assert gamma.shape == omega.shape == (T - k,)
        t = torch.arange(T - k)
        x_tk, x0 = _rand(T - k, 8, seed=k), _rand(T - k, 8, seed=100 + k)
        x = x_tk
        for i in range(k, 0, -1):  # one step t+i -> t+i-1 (thesis Alg. 9), true x0
            x = d.step_from_x0(kind, x0, x, t + i)
        closed = torch.tensor(gamma)[:, None] * x_tk + torch.tensor(omega)[:, None] * x0
        torch.testing.assert_close(closed, x, atol=1e-12, rtol=0, msg=f"k={k}")


def test_k_step_coefficients_are_the_telescoped_products(diffusion):
    d = diffusion
    for k in [1, 3, 7]:
        gamma, _ = d.k_step_coefficients(k)
        prod = np.array([np.prod(d.posterior_mean_coef2[t + 1:t + k + 1]) for t in range(T - k)])
        np.testing.assert_allclose(gamma, prod, rtol=1e-12, atol=1e-300)
    g1, w1 = d.k_step_coefficients(1)
    np.testing.assert_allclose(g1, d.posterior_mean_coef2[1:], rtol=1e-13)
    np.testing.assert_allclose(w1, d.posterior_mean_coef1[1:], rtol=1e-12, atol=1e-15)


def test_k_step_posterior_variance_equals_accumulated_variance(diffusion):
    d = diffusion
    for k in [1, 2, 5, 20]:
        var = np.zeros(T - k)
        for t in range(T - k):  # x <- c2 x + c1 x0 + √β̃ z, k times: Var accumulates as c2² Var + β̃
            v = 0.0
            for s in range(t + k, t, -1):
                v = d.posterior_mean_coef2[s] ** 2 * v + d.posterior_variance[s]
            var[t] = v
        np.testing.assert_allclose(d.k_step_posterior_variance(k), var, rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(d.k_step_posterior_variance(1), d.posterior_variance[1:], rtol=1e-12)


def test_model_step_with_true_eps_is_the_posterior_mean(diffusion):
    d, t = diffusion, torch.arange(T)
    x0, eps = _rand(T, 6, seed=3), _rand(T, 6, seed=4)
    xt = d.q_sample(x0, t, eps)
    torch.testing.assert_close(d.p_mean_from_eps(xt, t, eps), d.q_posterior_mean(x0, xt, t), atol=1e-12, rtol=0)
    # with any ε̂ the ε form equals the posterior mean at x̂0(ε̂)
    eps_hat = _rand(T, 6, seed=5)
    torch.testing.assert_close(
        d.p_mean_from_eps(xt, t, eps_hat), d.q_posterior_mean(d.predict_x0_from_eps(xt, t, eps_hat), xt, t),
        atol=1e-9, rtol=0)
    # the DDIM step with the true ε lands on the forward marginal with the same ε
    torch.testing.assert_close(d.ddim_step_from_eps(xt[1:], t[1:], eps[1:]), d.q_sample(x0[1:], t[:-1], eps[1:]),
                               atol=1e-12, rtol=0)
    torch.testing.assert_close(d.ddim_step_from_eps(xt, t, eps_hat),
                               d.ddim_step_from_x0(d.predict_x0_from_eps(xt, t, eps_hat), xt, t), atol=1e-9, rtol=0)


def test_posterior_mean_chain_shrinks_the_noise(diffusion):
    """After n mean steps from a forward sample, ε_t = scale·ε with scale = ∏ √(α_s(1−ᾱ_{s−1})/(1−ᾱ_s))."""
    d = diffusion
    for n in [1, 5]:
        t = torch.arange(T - n)
        x0, eps = _rand(T - n, 4, seed=6), _rand(T - n, 4, seed=7)
        x = d.q_sample(x0, t + n, eps)
        for i in range(n, 0, -1):
            x = d.q_posterior_mean(x0, x, t + i)
        per_step = np.sqrt(d.alphas[1:] * (1 - d.alphas_cumprod[:-1]) / (1 - d.alphas_cumprod[1:]))
        prod = np.array([np.prod(per_step[s:s + n]) for s in range(T - n)])
        scale = d.posterior_mean_chain_noise_scale(n)
        np.testing.assert_allclose(scale, prod, rtol=1e-12)
        assert np.all(scale <= 1.0 + 1e-15) and np.all(scale[1:] < 1.0)
        torch.testing.assert_close(d.predict_eps_from_x0(x, t, x0), torch.from_numpy(scale)[:, None] * eps,
                                   atol=1e-9, rtol=0)


def test_one_step_quantities_agree_with_diffusers_ddpm_scheduler(diffusion):
    d = diffusion
    sched = DDPMScheduler(num_train_timesteps=T, trained_betas=d.betas.tolist(), clip_sample=False)
    sched.set_timesteps(T)  # prev timestep of t is t-1
    np.testing.assert_allclose(sched.alphas_cumprod.double().numpy(), d.alphas_cumprod, rtol=2e-5, atol=1e-7)
    x0, eps, eps_hat = (_rand(3, 2, 4, 4, seed=s).float() for s in (8, 9, 10))
    for t in [0, 1, 10, 500, T - 1]:
        tt = torch.tensor([t] * 3)
        xt = d.q_sample(x0, tt, eps)
        torch.testing.assert_close(sched.add_noise(x0, eps, tt), xt, atol=2e-5, rtol=1e-5)
        # diffusers forms 1 - ᾱ_t in float32: relative error up to ~1e-7 / (1 - ᾱ_t)
        np.testing.assert_allclose(float(sched._get_variance(t)), max(d.posterior_variance[t], 1e-20), rtol=1e-3)
        g = torch.Generator().manual_seed(t)
        prev = sched.step(eps_hat, t, xt, generator=g).prev_sample
        z = torch.randn(eps_hat.shape, generator=torch.Generator().manual_seed(t))
        expected = d.p_mean_from_eps(xt, tt, eps_hat) + (float(np.sqrt(d.posterior_variance[t])) * z if t > 0 else 0)
        torch.testing.assert_close(prev, expected, atol=5e-5, rtol=1e-4)


def test_ddim_step_agrees_with_diffusers_ddim_scheduler(diffusion):
    d = diffusion
    sched = DDIMScheduler(num_train_timesteps=T, trained_betas=d.betas.tolist(), clip_sample=False,
                          set_alpha_to_one=True)
    sched.set_timesteps(T)
    x0, eps, eps_hat = (_rand(3, 2, 4, 4, seed=s).float() for s in (11, 12, 13))
    for t in [0, 1, 10, 500, T - 1]:
        tt = torch.tensor([t] * 3)
        xt = d.q_sample(x0, tt, eps)
        prev = sched.step(eps_hat, t, xt, eta=0.0).prev_sample
        torch.testing.assert_close(prev, d.ddim_step_from_eps(xt, tt, eps_hat), atol=5e-5, rtol=1e-4)


def test_to_diffusers_scheduler_carries_the_schedule(diffusion):
    s = diffusion.to_diffusers_scheduler("ddim", clip_sample=False)
    assert isinstance(s, DDIMScheduler) and not s.config.clip_sample
    np.testing.assert_allclose(s.betas.double().numpy(), diffusion.betas, rtol=1e-6)
    with pytest.raises(ValueError, match="unknown scheduler"):
        diffusion.to_diffusers_scheduler("euler")


def _thesis_eqs_3_9_to_3_11(d, t: int, k: int) -> tuple[float, float]:
    """γ_t and the total x₀ coefficient of x_t = γ_t x_{t+k} + ω_t x₀ + √ᾱ_t β_{t+1}/(1−ᾱ_{t+1}) x₀,
    written exactly as the thesis prints Eqs. 3.9–3.11 (ᾱ_i = alphas_cumprod[i], α_i, β_i as indexed)."""
    a, ab, b = d.alphas, d.alphas_cumprod, d.betas
    gamma = np.prod([np.sqrt(a[i + 1]) * (1 - ab[i]) / (1 - ab[i + 1]) for i in range(t, t + k)])  # Eq. 3.10
    omega = sum(np.prod([np.sqrt(a[n + 1]) * (1 - ab[n]) for n in range(t, j + 1)]) * np.sqrt(ab[j + 1]) * b[j + 2]
                / np.prod([1 - ab[m] for m in range(t + 1, j + 3)]) for j in range(t, t + k - 1))  # Eq. 3.11
    return gamma, omega + np.sqrt(ab[t]) * b[t + 1] / (1 - ab[t + 1])  # Eq. 3.9's last term


def test_thesis_eqs_3_9_to_3_11_as_printed_are_the_closed_form(diffusion):
    """Eqs. 3.9–3.11 hold as printed (no index typo): they are the k-step posterior-mean chain."""
    d = diffusion
    for k in [1, 2, 4, 10]:
        gamma, omega = d.k_step_coefficients(k)
        for t in [0, 1, 10, 250, 500, T - k - 2]:
            g, w = _thesis_eqs_3_9_to_3_11(d, t, k)
            assert g == pytest.approx(gamma[t], rel=1e-12) and w == pytest.approx(omega[t], rel=1e-12, abs=1e-15), (k, t)


def test_the_thesis_misprints_alg_9_eq_a1_and_alg_7_differ_from_the_chain(diffusion):
    """Where the thesis does misprint: Alg. 9 line 2 and Eq. A.1 write √α_{t+i−1} for √ᾱ_{t+i−1} in the x₀
    coefficient, and Alg. 7 lines 9–10 and Table 3.1 write √(ᾱ_t β_{t+1}) for Eq. 3.9's √ᾱ_t β_{t+1}; taken
    literally, each gives another x₀ coefficient than the chain's (by far more than rounding)."""
    d = diffusion
    a, ab, b = d.alphas, d.alphas_cumprod, d.betas
    t = 500  # the gap √α_t vs √ᾱ_t grows with t (×1.4 cosine, ×3.6 linear here)
    _, omega = d.k_step_coefficients(1)
    # k = 1: the chain's one step is c1 = √ᾱ_t β_{t+1}/(1−ᾱ_{t+1})
    as_in_alg9 = np.sqrt(a[t]) * b[t + 1] / (1 - ab[t + 1])
    as_in_alg7 = np.sqrt(ab[t] * b[t + 1]) / (1 - ab[t + 1])
    assert omega[t] == pytest.approx(np.sqrt(ab[t]) * b[t + 1] / (1 - ab[t + 1]), rel=1e-12)
    assert as_in_alg9 / omega[t] > 1.3 and as_in_alg7 / omega[t] > 5
