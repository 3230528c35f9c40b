"""The ξ head: zero-init widening keeps pretrained outputs, checkpoints round-trip through diffusers."""
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from diffusers import UNet2DConditionModel, UNet2DModel  # noqa: E402

from training.xi_head import XI_CONFIG_KEY, XiUNet  # noqa: E402


def pixel_unet(out_channels=3, seed=0):
    torch.manual_seed(seed)
    unet = UNet2DModel(sample_size=8, in_channels=3, out_channels=out_channels, block_out_channels=(16, 32),
                       norm_num_groups=8, layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"))
    return unet.eval()


def text_unet(seed=0):
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64),
                                layers_per_block=1, cross_attention_dim=16, attention_head_dim=8, norm_num_groups=8,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    return unet.eval()


def inputs(c, b=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, 8, 8, generator=g), torch.tensor([3, 870])[:b]


def test_widened_pixel_unet_keeps_the_pretrained_output():
    unet = pixel_unet()
    x, t = inputs(3)
    with torch.no_grad():
        before = unet(x, t).sample
        model = XiUNet.from_unet(unet)
        eps, xi = model(x, t)
    assert torch.equal(eps, before) and torch.equal(xi, torch.zeros_like(xi))
    assert unet.config.out_channels == 6 and unet.conv_out.out_channels == 6 and unet.config[XI_CONFIG_KEY] == 3
    with pytest.raises(ValueError, match="already has"):
        XiUNet.from_unet(unet)


def test_widened_text_unet_keeps_the_pretrained_output():
    unet = text_unet()
    x, t = inputs(4)
    cond = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        before = unet(x, t, encoder_hidden_states=cond).sample
        eps, xi = XiUNet.from_unet(unet)(x, t, encoder_hidden_states=cond)
    assert torch.equal(eps, before) and not xi.any()


def test_learned_variance_unet_keeps_eps_and_variance_channels():
    unet = pixel_unet(out_channels=6)  # [ε, v] like iDDPM/ADM
    x, t = inputs(3)
    with torch.no_grad():
        before = unet(x, t).sample
        model = XiUNet.from_unet(unet)
        eps, xi = model(x, t)
        full = model.unet(x, t).sample
    assert model.learned_variance and model.eps_channels == 3 and unet.config.out_channels == 9
    assert torch.equal(eps, before[:, :3]) and torch.equal(full[:, :6], before) and not xi.any()
    plain = XiUNet.plain(pixel_unet(out_channels=6))
    assert plain(x, t)[0].shape == x.shape and plain(x, t)[1] is None


def test_xi_channels_are_trainable():
    model = XiUNet.from_unet(pixel_unet())
    model.train()
    x, t = inputs(3)
    _, xi = model(x, t)
    ((xi - 1.0) ** 2).mean().backward()
    grad = model.unet.conv_out.weight.grad
    assert grad[3:].abs().sum() > 0 and grad[:3].abs().sum() == 0


def test_checkpoint_round_trip_with_xi_unet_and_plain_diffusers(tmp_path):
    model = XiUNet.from_unet(pixel_unet())
    with torch.no_grad():
        model.unet.conv_out.weight[3:].normal_(0, 0.1)  # a "trained" ξ head
    x, t = inputs(3)
    with torch.no_grad():
        eps, xi = model(x, t)
    model.save_pretrained(tmp_path / "ckpt")

    loaded = XiUNet.from_pretrained(tmp_path / "ckpt").eval()
    assert loaded.has_xi and loaded.eps_channels == 3
    with torch.no_grad():
        eps2, xi2 = loaded(x, t)
    assert torch.equal(eps, eps2) and torch.equal(xi, xi2)

    raw = UNet2DModel.from_pretrained(tmp_path / "ckpt").eval()  # plain diffusers, nothing else
    c = raw.config[XI_CONFIG_KEY]
    with torch.no_grad():
        out = raw(x, t).sample
    assert c == 3 and torch.equal(out[:, :c], eps) and torch.equal(out[:, -c:], xi)

    stock = loaded.eps_unet().eval()  # an ordinary UNet for stock pipelines
    stock.save_pretrained(tmp_path / "stock")
    stock = UNet2DModel.from_pretrained(tmp_path / "stock").eval()
    assert stock.config.out_channels == 3
    with torch.no_grad():
        assert torch.equal(stock(x, t).sample, eps)
    assert not XiUNet.from_pretrained(tmp_path / "stock").has_xi


def test_text_unet_checkpoint_in_a_pipeline_subfolder(tmp_path):
    model = XiUNet.from_unet(text_unet())
    model.save_pretrained(tmp_path / "pipe" / "unet")
    loaded = XiUNet.from_pretrained(tmp_path / "pipe", subfolder="unet")
    assert isinstance(loaded.unet, UNet2DConditionModel) and loaded.has_xi and loaded.eps_channels == 4


def test_plain_wrapper_and_errors(tmp_path):
    unet = pixel_unet()
    x, t = inputs(3)
    plain = XiUNet.plain(unet)
    with torch.no_grad():
        eps, xi = plain(x, t)
        assert torch.equal(eps, unet(x, t).sample) and xi is None
    with pytest.raises(ValueError, match="widen=False needs"):
        XiUNet.from_unet(pixel_unet(), widen=False)
    with pytest.raises(TypeError, match="wraps"):
        XiUNet(torch.nn.Conv2d(3, 3, 1), eps_channels=3, xi=False, learned_variance=False)
    with pytest.raises(FileNotFoundError):
        XiUNet.from_pretrained(tmp_path / "nothing")
