"""The ξ head: a diffusers UNet whose last conv also predicts the error ξ in its input (thesis Fig. A.1).

:meth:`XiUNet.from_unet` widens the UNet's ``conv_out`` from C to 2C output channels (3C for a
learned-variance UNet whose output is [ε, v]): the ε (and v) weights are copied and the ξ
channels are zero-initialised, so at step 0 the model's ε output is exactly the pretrained one
and ξ = 0. Output layout: ``[ε (C) | v (C, learned variance only) | ξ (C)]``. The forward returns
``(eps, xi)``; learned-variance channels are kept in the weights (the checkpoint stays complete)
but not returned: the strategies train L_simple and the samplers use fixed variances.

Checkpoints. :meth:`XiUNet.save_pretrained` writes an ordinary diffusers UNet folder whose
config.json has the widened ``out_channels`` and the private key ``"_xi_channels": C`` (diffusers
keeps ``_``-prefixed config keys through save/load). So:

* ``XiUNet.from_pretrained(dir)`` loads it back as a ξ model;
* plain diffusers also loads it, with no extra code: ``UNet2DModel.from_pretrained(dir)`` (or
  ``UNet2DConditionModel``) gives the widened UNet; the flag ``unet.config["_xi_channels"]``
  (C) says that ``out[:, :C]`` is ε and ``out[:, -C:]`` is ξ;
* for a stock pipeline that expects C channels, ``XiUNet.from_pretrained(dir).eps_unet()``
  returns an ordinary UNet with the ξ channels cut off (outputs identical to ε).

``XiUNet.plain(unet)`` wraps an unmodified UNet with the same call convention, returning
``(eps, None)`` (for DDPM/IP/SS training of a model without ξ head).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Optional

import torch

XI_CONFIG_KEY = "_xi_channels"
_SUPPORTED = ("UNet2DModel", "UNet2DConditionModel")


def _unet_class(name: str):
    import diffusers

    if name not in _SUPPORTED:
        raise ValueError(f"XiUNet supports {list(_SUPPORTED)}, not {name!r}")
    return getattr(diffusers, name)


def _widen_conv(conv: torch.nn.Conv2d, extra: int) -> torch.nn.Conv2d:
    """A copy of ``conv`` with ``extra`` more output channels whose weights and bias are zero."""
    new = torch.nn.Conv2d(
        conv.in_channels, conv.out_channels + extra, conv.kernel_size, stride=conv.stride,
        padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None,
        padding_mode=conv.padding_mode, device=conv.weight.device, dtype=conv.weight.dtype,
    )
    with torch.no_grad():
        new.weight.zero_()
        new.weight[: conv.out_channels].copy_(conv.weight)
        if conv.bias is not None:
            new.bias.zero_()
            new.bias[: conv.out_channels].copy_(conv.bias)
    return new


class XiUNet(torch.nn.Module):
    """Wraps a diffusers UNet2DModel/UNet2DConditionModel; ``forward(x, t, **kw) -> (eps, xi)``."""

    def __init__(self, unet: torch.nn.Module, *, eps_channels: int, xi: bool, learned_variance: bool):
        super().__init__()
        if type(unet).__name__ not in _SUPPORTED:
            raise TypeError(f"XiUNet wraps {list(_SUPPORTED)}, got {type(unet).__name__}")
        expected = eps_channels * ((2 if learned_variance else 1) + (1 if xi else 0))
        if unet.config.out_channels != expected or unet.conv_out.out_channels != expected:
            raise ValueError(
                f"UNet has {unet.conv_out.out_channels} output channels; expected {expected} for "
                f"eps_channels={eps_channels}, learned_variance={learned_variance}, xi={xi}"
            )
        self.unet = unet
        self.eps_channels, self.has_xi, self.learned_variance = eps_channels, xi, learned_variance

    # ---------------------------------------------------------------- construction
    @staticmethod
    def _infer_learned_variance(unet, learned_variance: Optional[bool], eps_plus_var: int) -> bool:
        if learned_variance is not None:
            return learned_variance
        # iDDPM/ADM-style UNets output [ε, v]: twice the input channels
        return eps_plus_var == 2 * unet.config.in_channels

    @classmethod
    def from_unet(
        cls, unet: torch.nn.Module, widen: bool = True, learned_variance: Optional[bool] = None
    ) -> "XiUNet":
        """Wrap ``unet`` (not copied). ``widen=True``: add zero-initialised ξ channels to ``conv_out``.
        ``widen=False``: ``unet`` must already carry ξ channels (its config has ``_xi_channels``).
        ``learned_variance=None`` infers it from out_channels == 2·in_channels."""
        already = int(unet.config.get(XI_CONFIG_KEY, 0) or 0)
        if widen:
            if already:
                raise ValueError(f"this UNet already has ξ channels ({XI_CONFIG_KEY}={already}); use widen=False")
            out = unet.conv_out.out_channels
            lv = cls._infer_learned_variance(unet, learned_variance, out)
            if lv and out % 2:
                raise ValueError(f"learned-variance UNet must have an even out_channels, got {out}")
            eps_c = out // 2 if lv else out
            unet.conv_out = _widen_conv(unet.conv_out, eps_c)
            unet.register_to_config(out_channels=out + eps_c, **{XI_CONFIG_KEY: eps_c})
            return cls(unet, eps_channels=eps_c, xi=True, learned_variance=lv)
        if not already:
            raise ValueError(f"widen=False needs a UNet saved with ξ channels (config key {XI_CONFIG_KEY}); "
                             "use widen=True or XiUNet.plain")
        lv = cls._infer_learned_variance(unet, learned_variance, unet.config.out_channels - already)
        return cls(unet, eps_channels=already, xi=True, learned_variance=lv)

    @classmethod
    def plain(cls, unet: torch.nn.Module, learned_variance: Optional[bool] = None) -> "XiUNet":
        """No ξ head: same call convention, ``forward`` returns ``(eps, None)``."""
        if int(unet.config.get(XI_CONFIG_KEY, 0) or 0):
            raise ValueError("this UNet has ξ channels; wrap it with XiUNet.from_unet(unet, widen=False)")
        out = unet.conv_out.out_channels
        lv = cls._infer_learned_variance(unet, learned_variance, out)
        return cls(unet, eps_channels=out // 2 if lv else out, xi=False, learned_variance=lv)

    @classmethod
    def from_pretrained(cls, path: str | Path, learned_variance: Optional[bool] = None, **kwargs: Any) -> "XiUNet":
        """Load a folder written by :meth:`save_pretrained` (or any UNet folder: without ``_xi_channels``
        it is wrapped as :meth:`plain`). ``kwargs`` go to diffusers' ``from_pretrained`` (e.g. subfolder)."""
        folder = Path(path) / kwargs.get("subfolder", "")
        config_file = folder / "config.json"
        if not config_file.is_file():
            raise FileNotFoundError(f"{config_file}: no UNet config.json")
        class_name = json.loads(config_file.read_text()).get("_class_name", "")
        unet = _unet_class(class_name).from_pretrained(str(path), **kwargs)
        if int(unet.config.get(XI_CONFIG_KEY, 0) or 0):
            return cls.from_unet(unet, widen=False, learned_variance=learned_variance)
        return cls.plain(unet, learned_variance=learned_variance)

    # ---------------------------------------------------------------- use
    def forward(self, x: torch.Tensor, t: torch.Tensor, **kwargs: Any):
        out = self.unet(x, t, return_dict=False, **kwargs)[0]
        c = self.eps_channels
        return out[:, :c], (out[:, -c:] if self.has_xi else None)

    def save_pretrained(self, path: str | Path, **kwargs: Any) -> None:
        """Write a diffusers UNet folder (loadable by diffusers' own ``from_pretrained``; see module doc)."""
        self.unet.save_pretrained(str(path), **kwargs)

    def eps_unet(self) -> torch.nn.Module:
        """A deep copy of the UNet without the ξ channels: an ordinary diffusers UNet for stock pipelines."""
        unet = copy.deepcopy(self.unet)
        if not self.has_xi:
            return unet
        keep = unet.conv_out.out_channels - self.eps_channels
        old = unet.conv_out
        new = torch.nn.Conv2d(
            old.in_channels, keep, old.kernel_size, stride=old.stride, padding=old.padding,
            dilation=old.dilation, groups=old.groups, bias=old.bias is not None, padding_mode=old.padding_mode,
            device=old.weight.device, dtype=old.weight.dtype,
        )
        with torch.no_grad():
            new.weight.copy_(old.weight[:keep])
            if old.bias is not None:
                new.bias.copy_(old.bias[:keep])
        unet.conv_out = new
        unet.register_to_config(out_channels=keep, **{XI_CONFIG_KEY: 0})
        return unet

    @property
    def config(self):
        return self.unet.config

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def device(self) -> torch.device:
        return self.unet.device
