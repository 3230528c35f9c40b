"""Training strategies: shapes and finiteness on a tiny UNet, reduction to DDPM, and the targets of
SS/SDSS/MDSS checked against a literal, per-sample transcription of the algorithm in float64."""
import math
import os

import pytest
import torch
from pydantic import ValidationError

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from diffusers import UNet2DConditionModel, UNet2DModel  # noqa: E402

from training.diffusion import GaussianDiffusion, ScheduleConfig  # noqa: E402
from training.strategies import StrategyConfig, build_strategy  # noqa: E402
from training.xi_head import XiUNet  # noqa: E402

T = 50
NAMES = ["ddpm", "ip", "ss", "sdss", "mdss", "sdss_ddim", "mdss_ddim"]
ALWAYS = dict(prob_start=1.0, prob_max=1.0)
NEVER = dict(prob_start=0.0, prob_max=0.0)


@pytest.fixture(scope="module")
def diffusion():
    return GaussianDiffusion.from_config(ScheduleConfig(kind="linear", num_train_timesteps=T, beta_end=0.05))


@pytest.fixture(scope="module")
def tiny_unet():
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(16, 32), norm_num_groups=8,
                       layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"))
    model = XiUNet.from_unet(unet)
    with torch.no_grad():  # give ξ a non-zero output so its loss has a gradient path to check
        model.unet.conv_out.weight[1:].normal_(0, 0.01)
    return model


def fake_model(x, t, **kw):
    """A fixed, non-trivial (ε, ξ) model that works in float64."""
    tt = t.to(x.dtype).view(-1, *[1] * (x.ndim - 1))
    return 0.5 * x + 1e-3 * tt, 0.1 * x


def make_oracle(d):
    """Predicts the true noise of its input (x₀ comes in through model_kwargs, subset per sample)."""

    def oracle(x, t, x0):
        return d.predict_eps_from_x0(x, t, x0), torch.zeros_like(x)

    return oracle


def data(b=6, seed=0, dtype=torch.float64, shape=(1, 8, 8)):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, *shape, generator=g, dtype=dtype) * 2 - 1, torch.randn(b, *shape, generator=g, dtype=dtype)


def literal_chain(d, model, x0, t, noise, k, kind):
    """Thesis Alg. 7 written out per sample with raw schedule arrays, 0-indexed (ᾱ_{-1} = 1).
    Returns (x̂_t, ε_t, ξ_t) and, for t = T-1 (no step above it), Nones."""
    a, ab = d.alphas, d.alphas_cumprod

    def abp(i):
        return 1.0 if i < 0 else ab[i]

    xs_hat, epss, xis = [], [], []
    for b in range(x0.shape[0]):
        tb = int(t[b])
        kb = min(k, T - 2 - tb)
        s = tb + kb + 1
        x0b, nb = x0[b], noise[b]
        x_s = math.sqrt(ab[s]) * x0b + math.sqrt(1 - ab[s]) * nb
        e_hat = model(x_s[None], torch.tensor([s]))[0][0]

        def model_step(e):
            if kind == "ddpm":  # Eq. 3.8 with 0-indexed ᾱ
                return (x_s - (1 - a[s]) / math.sqrt(1 - ab[s]) * e) / math.sqrt(a[s])
            return math.sqrt(abp(s - 1)) * (x_s - math.sqrt(1 - ab[s]) * e) / math.sqrt(ab[s]) + math.sqrt(
                1 - abp(s - 1)) * e  # Eq. 2.14, σ = 0

        x_hat, x_true = model_step(e_hat), model_step(nb)
        for i in range(s - 1, tb, -1):  # k steps i -> i-1 with the true x0 (Alg. 9)

            def f(x):
                if kind == "ddpm":
                    return (math.sqrt(abp(i - 1)) * (1 - a[i]) / (1 - ab[i])) * x0b + (
                        math.sqrt(a[i]) * (1 - abp(i - 1)) / (1 - ab[i])) * x
                e = (x - math.sqrt(ab[i]) * x0b) / math.sqrt(1 - ab[i])
                return math.sqrt(abp(i - 1)) * x0b + math.sqrt(1 - abp(i - 1)) * e

            x_hat, x_true = f(x_hat), f(x_true)
        xs_hat.append(x_hat)
        epss.append((x_true - math.sqrt(ab[tb]) * x0b) / math.sqrt(1 - ab[tb]))
        xis.append(x_hat - x_true)
    return torch.stack(xs_hat), torch.stack(epss), torch.stack(xis)


def losses(d, model, x0, noise=None, t=None, seed=0, step=0, total=10, **cfg):
    strat = build_strategy(StrategyConfig(**cfg), d)
    return strat.training_losses(model, x0, t, step=step, total_steps=total, noise=noise,
                                 generator=torch.Generator().manual_seed(seed), return_targets=True)


# ---------------------------------------------------------------------------------------- config
def test_config_validation(diffusion):
    with pytest.raises(ValidationError):
        StrategyConfig(name="mdss_fancy")
    with pytest.raises(ValidationError, match="posterior='sample'"):
        StrategyConfig(name="mdss_ddim", posterior="sample")
    with pytest.raises(ValidationError):
        StrategyConfig(prob_max=1.5)
    with pytest.raises(ValidationError):
        StrategyConfig(bogus=1)
    with pytest.raises(ValueError, match="too large"):
        build_strategy(StrategyConfig(name="mdss", k=T - 1), diffusion)
    for field in StrategyConfig.model_fields.values():
        assert field.description


def test_scheduled_prob_follows_appendix_a2(diffusion):
    s = build_strategy(StrategyConfig(name="mdss"), diffusion)
    assert s.scheduled_prob(0, 100) == pytest.approx(0.1)
    assert s.scheduled_prob(50, 100) == pytest.approx(0.6)
    assert s.scheduled_prob(80, 100) == pytest.approx(0.9) and s.scheduled_prob(100, 100) == pytest.approx(0.9)
    assert build_strategy(StrategyConfig(name="ddpm"), diffusion).scheduled_prob(99, 100) == 0.0
    with pytest.raises(ValueError, match="total_steps"):
        s.scheduled_prob(0, 0)
    assert [build_strategy(StrategyConfig(name=n), diffusion).uses_xi for n in NAMES] == [
        False, False, False, True, True, True, True]


# ---------------------------------------------------------------------------------------- tiny UNet
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("per_sample", [False, True])
def test_loss_is_finite_with_right_shapes_on_tiny_unet(diffusion, tiny_unet, name, per_sample):
    x0, _ = data(4, dtype=torch.float32)
    tiny_unet.zero_grad()
    out = losses(diffusion, tiny_unet, x0, name=name, per_sample=per_sample, **ALWAYS)
    for key in ("loss", "eps_loss", "xi_loss", "strategy_frac"):
        assert out[key].shape == () and torch.isfinite(out[key]), key
    for key in ("x_in", "eps_target", "xi_target"):
        assert out[key].shape == x0.shape
    assert out["strategy_frac"] == (0.0 if name == "ddpm" else 1.0)
    out["loss"].backward()
    w = tiny_unet.unet.conv_out.weight.grad
    assert w is not None and torch.isfinite(w).all() and w[0].abs().sum() > 0
    uses_xi = name.startswith(("sdss", "mdss"))
    assert (w[1].abs().sum() > 0) == uses_xi  # ξ channel trained only by the ξ strategies
    assert (out["xi_loss"] > 0) == uses_xi


# ---------------------------------------------------------------------------------------- reductions
@pytest.mark.parametrize("name", NAMES)
def test_probability_zero_is_exactly_plain_ddpm(diffusion, tiny_unet, name):
    x0, noise = data(5, dtype=torch.float32)
    t = torch.tensor([0, 7, T - 8, T - 2, T - 1])
    base = losses(diffusion, tiny_unet, x0, noise, t, name="ddpm")
    manual = torch.mean((tiny_unet(diffusion.q_sample(x0, t, noise), t)[0] - noise) ** 2)
    assert torch.equal(base["eps_loss"], manual)
    for per_sample in (False, True):
        out = losses(diffusion, tiny_unet, x0, noise, t, name=name, per_sample=per_sample, **NEVER)
        assert torch.equal(out["eps_loss"], base["eps_loss"]) and torch.equal(out["x_in"], base["x_in"])
        assert out["strategy_frac"] == 0 and not out["xi_target"].any()
        # t drawn by the strategy: same draws as DDPM's
        a = losses(diffusion, tiny_unet, x0, seed=3, name=name, per_sample=per_sample, **NEVER)
        b = losses(diffusion, tiny_unet, x0, seed=3, name="ddpm")
        assert torch.equal(a["t"], b["t"]) and torch.equal(a["eps_loss"], b["eps_loss"])


def test_mdss_with_k0_is_sdss(diffusion):
    x0, _ = data(6)
    for kind in ("", "_ddim"):
        a = losses(diffusion, fake_model, x0, name="mdss" + kind, k=0, per_sample=True, prob_start=0.5, seed=4)
        b = losses(diffusion, fake_model, x0, name="sdss" + kind, k=7, per_sample=True, prob_start=0.5, seed=4)
        for key in a:
            assert torch.equal(a[key], b[key]), key


# ---------------------------------------------------------------------------------------- targets
@pytest.mark.parametrize("kind", ["ddpm", "ddim"])
@pytest.mark.parametrize("k", [0, 1, 4])
def test_chain_targets_match_the_literal_algorithm(diffusion, kind, k):
    x0, noise = data(6, seed=k)
    t = torch.tensor([0, 1, 9, T - 3 - k, T - 2 - k, 20])
    name = ("mdss" if k else "sdss") + ("_ddim" if kind == "ddim" else "")
    out = losses(diffusion, fake_model, x0, noise, t, name=name, k=k, **ALWAYS)
    x_hat, eps_t, xi_t = literal_chain(diffusion, fake_model, x0, t, noise, k, kind)
    # the literal version forms 1 - ᾱ by subtraction: ~1e-12 relative at small t
    torch.testing.assert_close(out["x_in"], x_hat, atol=1e-10, rtol=0)
    torch.testing.assert_close(out["eps_target"], eps_t, atol=1e-10, rtol=0)
    torch.testing.assert_close(out["xi_target"], xi_t, atol=1e-10, rtol=0)
    assert out["xi_target"].abs().max() > 1e-4  # the fake model's error is really carried


def test_schedule_edge_clamps_k_and_falls_back_at_the_last_step(diffusion):
    x0, noise = data(5, seed=2)
    t = torch.tensor([T - 1, T - 2, T - 3, T - 6, 0])
    out = losses(diffusion, fake_model, x0, noise, t, name="mdss", k=4, **ALWAYS)
    assert out["use"].tolist() == [False, True, True, True, True]
    assert out["strategy_frac"] == pytest.approx(0.8)
    # t = T-1: plain DDPM sample with ξ target 0
    torch.testing.assert_close(out["x_in"][0], diffusion.q_sample(x0[:1], t[:1], noise[:1])[0], atol=0, rtol=0)
    assert not out["xi_target"][0].any()
    x_hat, eps_t, xi_t = literal_chain(diffusion, fake_model, x0[1:], t[1:], noise[1:], 4, "ddpm")  # k_t = 0, 1, 4, 4
    torch.testing.assert_close(out["x_in"][1:], x_hat, atol=1e-10, rtol=0)
    torch.testing.assert_close(out["xi_target"][1:], xi_t, atol=1e-10, rtol=0)


def test_self_drawn_timesteps_respect_the_schedule_end(diffusion):
    x0 = torch.zeros(512, 1, 2, 2, dtype=torch.float64)
    on = losses(diffusion, fake_model, x0, name="mdss", k=4, per_sample=True, **ALWAYS)
    assert on["t"].min() == 0 and on["t"].max() == T - 2 - 4
    off = losses(diffusion, fake_model, x0, name="mdss", k=4, per_sample=True, **NEVER)
    assert off["t"].max() == T - 1
    mixed = losses(diffusion, fake_model, x0, name="mdss", k=4, per_sample=True, prob_start=0.5, prob_max=0.5)
    assert 0.4 < float(mixed["strategy_frac"]) < 0.6
    assert mixed["t"][mixed["use"]].max() <= T - 6
    assert not mixed["xi_target"][~mixed["use"]].any()


def test_oracle_model_gives_zero_xi_and_the_shrunk_noise(diffusion):
    x0, noise = data(8, seed=5)
    t = torch.tensor([0, 1, 2, 5, 10, 20, 30, 40])
    oracle = make_oracle(diffusion)
    for kind in ("ddpm", "ddim"):
        strat = build_strategy(StrategyConfig(name="mdss" + ("_ddim" if kind == "ddim" else ""), k=4, **ALWAYS),
                               diffusion)
        out = strat.training_losses(oracle, x0, t, step=0, total_steps=1, noise=noise, model_kwargs={"x0": x0},
                                    return_targets=True)
        assert out["xi_target"].abs().max() < 1e-12
        if kind == "ddpm":  # mean chain over k+1 steps: ε_t = scale·ε
            scale = torch.tensor(diffusion.posterior_mean_chain_noise_scale(5))[t].view(-1, 1, 1, 1)
            torch.testing.assert_close(out["eps_target"], scale * noise, atol=1e-10, rtol=0)
            assert scale.max() < 1.0
        else:  # the DDIM chain keeps ε exactly
            torch.testing.assert_close(out["eps_target"], noise, atol=1e-10, rtol=0)


def test_posterior_sampling_keeps_xi_and_restores_the_forward_marginal(diffusion):
    x0 = torch.zeros(4000, 1, 2, 2, dtype=torch.float64)
    t = torch.full((4000,), 2)
    common = dict(name="mdss", k=4, step=0, total=1, t=t, seed=11, **ALWAYS)
    mean = losses(diffusion, fake_model, x0, **common)
    samp = losses(diffusion, fake_model, x0, posterior="sample", **common)
    torch.testing.assert_close(samp["xi_target"], mean["xi_target"], atol=1e-12, rtol=0)
    assert not torch.equal(samp["x_in"], mean["x_in"])
    scale = float(diffusion.posterior_mean_chain_noise_scale(5)[2])
    assert scale < 0.8
    assert abs(float(mean["eps_target"].std()) - scale) < 0.02
    assert abs(float(samp["eps_target"].std()) - 1.0) < 0.02  # ε_t ~ N(0, I) again


def test_ip_and_ss_inputs_and_targets(diffusion):
    x0, noise = data(4, seed=6)
    t = torch.tensor([0, 3, 17, T - 2])
    ip = losses(diffusion, fake_model, x0, noise, t, name="ip", ip_gamma=0.3, seed=9, **ALWAYS)
    g = torch.Generator().manual_seed(9)
    torch.rand(4, generator=g)  # the usage decision
    extra = torch.randn(x0.shape, generator=g, dtype=x0.dtype)
    torch.testing.assert_close(ip["x_in"], diffusion.q_sample(x0, t, noise + 0.3 * extra), atol=0, rtol=0)
    assert torch.equal(ip["eps_target"], noise) and not ip["xi_target"].any()

    ss = losses(diffusion, fake_model, x0, noise, t, name="ss", **ALWAYS)
    x_hat, _, _ = literal_chain(diffusion, fake_model, x0, t, noise, 0, "ddpm")
    torch.testing.assert_close(ss["x_in"], x_hat, atol=1e-10, rtol=0)
    torch.testing.assert_close(ss["eps_target"], diffusion.predict_eps_from_x0(x_hat, t, x0), atol=1e-9, rtol=0)


def test_model_without_xi_head_is_refused_by_xi_strategies(diffusion):
    x0, _ = data(2)

    def no_xi(x, t):
        return 0.5 * x, None

    losses(diffusion, no_xi, x0, name="ss", **ALWAYS)  # fine
    with pytest.raises(ValueError, match="returned xi=None"):
        losses(diffusion, no_xi, x0, name="mdss", **ALWAYS)
    with pytest.raises(TypeError, match="pair"):
        losses(diffusion, lambda x, t: x, x0, name="ddpm")


def test_rollout_model_makes_the_no_grad_prediction(diffusion):
    x0, _ = data(4)
    calls = []

    def rollout(x, t, **kw):
        calls.append(x.shape[0])
        return fake_model(x, t)

    strat = build_strategy(StrategyConfig(name="mdss", per_sample=True, prob_start=0.5, prob_max=0.5), diffusion)
    out = strat.training_losses(fake_model, x0, step=0, total_steps=1, generator=torch.Generator().manual_seed(1),
                                rollout_model=rollout)
    assert calls == [round(float(out["strategy_frac"]) * 4)] and 0 < calls[0] < 4  # only the strategy subset


def test_per_sample_subsets_conditioning_of_a_text_unet(diffusion):
    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64),
                                layers_per_block=1, cross_attention_dim=16, attention_head_dim=8, norm_num_groups=8,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    model = XiUNet.from_unet(unet)
    x0, _ = data(6, shape=(4, 8, 8), dtype=torch.float32)
    cond = torch.randn(6, 5, 16)
    strat = build_strategy(StrategyConfig(name="mdss", per_sample=True, prob_start=0.5, prob_max=0.5), diffusion)
    out = strat.training_losses(model, x0, step=0, total_steps=1, generator=torch.Generator().manual_seed(2),
                                model_kwargs={"encoder_hidden_states": cond})
    assert 0 < float(out["strategy_frac"]) < 1 and torch.isfinite(out["loss"])
    out["loss"].backward()
