"""Samplers: with ξ off they are the plain diffusers loop bit for bit; ξ-denoising and ε-scaling do what they say."""
import os

import numpy as np
import pytest
import torch
from pydantic import ValidationError

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from diffusers import DDIMPipeline, DDPMPipeline, UNet2DModel  # noqa: E402
from PIL import Image  # noqa: E402

from training.diffusion import GaussianDiffusion, ScheduleConfig  # noqa: E402
from training.samplers import SamplerConfig, generate, make_scheduler, sample, save_images, to_uint8  # noqa: E402
from training.xi_head import XiUNet  # noqa: E402

NAMES = ["ddpm", "ddim", "dpm1", "dpm2", "dpm3"]
SHAPE = (2, 3, 8, 8)


@pytest.fixture(scope="module")
def diffusion():
    return GaussianDiffusion.from_config(ScheduleConfig(kind="linear", num_train_timesteps=200))


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(16, 32), norm_num_groups=8,
                       layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D")).eval()


@pytest.fixture(scope="module")
def xi_model(unet):
    import copy

    model = XiUNet.from_unet(copy.deepcopy(unet)).eval()
    with torch.no_grad():
        model.unet.conv_out.weight[3:].normal_(0, 0.05, generator=torch.Generator().manual_seed(5))
    return model


def plain_loop(unet, scheduler, num_steps, shape, seed, eta=None):
    """The diffusers loop as the stock pipelines write it."""
    scheduler.set_timesteps(num_steps)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * scheduler.init_noise_sigma
    extra = {} if eta is None else {"eta": eta}
    for t in scheduler.timesteps:
        with torch.no_grad():
            out = unet(scheduler.scale_model_input(x, t), t).sample
        x = scheduler.step(out[:, :3], t, x, generator=g, **extra).prev_sample
    return x.clamp(-1, 1)


@pytest.mark.parametrize("name", NAMES)
def test_xi_off_is_the_plain_diffusers_loop_bit_for_bit(diffusion, unet, xi_model, name):
    cfg = SamplerConfig(name=name, num_steps=6, xi_denoise=False)
    ref = plain_loop(unet, make_scheduler(cfg, diffusion), 6, SHAPE, seed=7, eta=0.0 if name == "ddim" else None)
    ours = sample(XiUNet.plain(unet), diffusion, cfg, SHAPE, seed=7)
    assert torch.equal(ours, ref)
    # the ξ model (ξ channels non-zero but unused) gives the same result: its ε weights are the pretrained ones
    assert torch.equal(sample(xi_model, diffusion, cfg, SHAPE, seed=7), ref)


def test_ddpm_and_ddim_match_the_stock_pipelines(diffusion, unet):
    for cls, cfg, kwargs in [(DDPMPipeline, SamplerConfig(name="ddpm", num_steps=5, xi_denoise=False), {}),
                             (DDIMPipeline, SamplerConfig(name="ddim", num_steps=5, xi_denoise=False), {"eta": 0.0})]:
        pipe = cls(unet=unet, scheduler=make_scheduler(cfg, diffusion))
        ref = pipe(batch_size=2, generator=torch.Generator().manual_seed(3), num_inference_steps=5,
                   output_type="np", **kwargs).images
        ours = to_uint8(sample(XiUNet.plain(unet), diffusion, cfg, (2, 3, 8, 8), seed=3))
        assert np.array_equal(ours, (ref * 255).round().astype(np.uint8))


@pytest.mark.parametrize("name", ["ddpm", "ddim", "dpm2"])
def test_xi_denoising_subtracts_xi_before_each_step(diffusion, xi_model, name):
    cfg = SamplerConfig(name=name, num_steps=5, eps_scale=1.02)
    sched = make_scheduler(cfg, diffusion)
    sched.set_timesteps(5)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(SHAPE, generator=g)
    for t in sched.timesteps:
        with torch.no_grad():
            eps, xi = xi_model(x, t.expand(2))
        x = sched.step(eps / 1.02, t, x - xi, generator=g).prev_sample
    ours = sample(xi_model, diffusion, cfg, SHAPE, seed=2)
    assert torch.equal(ours, x.clamp(-1, 1))
    off = sample(xi_model, diffusion, cfg.model_copy(update={"xi_denoise": False}), SHAPE, seed=2)
    assert not torch.equal(ours, off)


def test_zero_initialised_xi_head_changes_nothing(diffusion, unet):
    import copy

    fresh = XiUNet.from_unet(copy.deepcopy(unet)).eval()
    cfg = SamplerConfig(name="ddim", num_steps=4)
    assert torch.equal(sample(fresh, diffusion, cfg, SHAPE, seed=1),
                       sample(XiUNet.plain(unet), diffusion, cfg.model_copy(update={"xi_denoise": False}), SHAPE, seed=1))


def test_seeding_steps_and_trajectory(diffusion, xi_model):
    cfg = SamplerConfig(name="dpm3", num_steps=7)
    a = sample(xi_model, diffusion, cfg, SHAPE, seed=4)
    assert torch.equal(a, sample(xi_model, diffusion, cfg, SHAPE, seed=4))
    assert not torch.equal(a, sample(xi_model, diffusion, cfg, SHAPE, seed=5))
    out, traj = sample(xi_model, diffusion, cfg, SHAPE, seed=4, return_trajectory=True)
    assert traj.shape == (8, *SHAPE) and torch.equal(out, a) and out.abs().max() <= 1
    for n in (1, 3):
        assert sample(xi_model, diffusion, SamplerConfig(name="ddpm", num_steps=n), SHAPE, seed=0).shape == SHAPE
    d2 = sample(xi_model, diffusion, SamplerConfig(name="dpm2", num_steps=7), SHAPE, seed=4, clamp=False)
    d3 = sample(xi_model, diffusion, cfg, SHAPE, seed=4, clamp=False)
    assert not torch.equal(d2, d3)  # solver order really changes


def test_scheduler_from_a_pretrained_config(diffusion, tmp_path):
    sd_like = {"_class_name": "PNDMScheduler", "beta_schedule": "scaled_linear", "beta_start": 0.00085,
               "beta_end": 0.012, "num_train_timesteps": 1000, "steps_offset": 1, "set_alpha_to_one": False,
               "clip_sample": False}
    ddim = make_scheduler(SamplerConfig(name="ddim"), sd_like)
    assert ddim.config.steps_offset == 1 and not ddim.config.set_alpha_to_one and not ddim.config.clip_sample
    gd = GaussianDiffusion.from_betas(np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2)
    np.testing.assert_allclose(ddim.betas.numpy(), gd.betas, rtol=1e-6)
    dpm = make_scheduler(SamplerConfig(name="dpm3", dpm_singlestep=True), sd_like)
    assert type(dpm).__name__ == "DPMSolverSinglestepScheduler" and dpm.config.solver_order == 3
    with pytest.raises(ValueError, match="prediction_type"):
        make_scheduler(SamplerConfig(name="ddim"), dict(sd_like, prediction_type="v_prediction"))
    with pytest.warns(UserWarning, match="fixed_small"):
        s = make_scheduler(SamplerConfig(name="ddpm"), dict(sd_like, variance_type="learned_range"))
    assert s.config.variance_type == "fixed_small"


def test_config_validation_and_missing_xi(diffusion, unet):
    with pytest.raises(ValidationError, match="eta"):
        SamplerConfig(name="ddpm", eta=0.5)
    with pytest.raises(ValidationError, match="clip_sample"):
        SamplerConfig(name="dpm2", clip_sample=True)
    with pytest.raises(ValidationError):
        SamplerConfig(num_steps=0)
    with pytest.raises(ValueError, match="no ξ head"):
        sample(XiUNet.plain(unet), diffusion, SamplerConfig(name="ddim", num_steps=2), SHAPE, seed=0)
    for field in SamplerConfig.model_fields.values():
        assert field.description


def test_generate_writes_seeded_batches(diffusion, xi_model, tmp_path):
    cfg = SamplerConfig(name="ddim", num_steps=3)
    imgs = generate(xi_model, diffusion, cfg, 5, (3, 8, 8), seed=10, batch_size=2, out_dir=tmp_path)
    assert imgs.shape == (5, 8, 8, 3) and imgs.dtype == np.uint8
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{i:06d}.png" for i in range(5)]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "000004.png")), imgs[4])
    second_batch = to_uint8(sample(xi_model, diffusion, cfg, (2, 3, 8, 8), seed=11))
    assert np.array_equal(imgs[2:4], second_batch)
    gray = save_images(torch.zeros(1, 1, 4, 4), tmp_path / "gray")
    assert np.asarray(Image.open(gray[0])).tolist() == [[128] * 4] * 4
    assert to_uint8(torch.tensor([-1.0, 0.0, 1.0]).view(1, 3, 1, 1)).ravel().tolist() == [0, 128, 255]
