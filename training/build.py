"""Build what a :class:`training.config.TrainConfig` names: the UNet (optionally wrapped with the
ξ head), the frozen VAE / text encoder of a text-conditional run, and the diffusion schedule.

Sources may be local folders or hub ids: diffusers' and transformers' ``from_pretrained`` take
either, and a scheduler config given as a hub id is fetched with ``huggingface_hub`` (on each
worker, into its HF cache). Nothing here runs at import time.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from core.config import expand_path
from training.config import ModelConfig
from training.diffusion import GaussianDiffusion, ScheduleConfig


def _local_dir(source: str) -> Optional[Path]:
    path = Path(expand_path(source))
    return path if path.exists() else None


def load_unet(cfg: ModelConfig):
    """The bare diffusers UNet: fresh UNet2DModel, pretrained UNet2DModel, or a pipeline's UNet2DConditionModel."""
    from diffusers import UNet2DConditionModel, UNet2DModel

    if cfg.unet_config is not None:
        return UNet2DModel(**cfg.unet_config)
    if cfg.pretrained is not None:
        source = expand_path(cfg.pretrained)
        subfolder = cfg.subfolder
        local = _local_dir(cfg.pretrained)
        if subfolder is None and local is not None and (local / "unet" / "config.json").is_file():
            subfolder = "unet"
        overrides = {"dropout": cfg.dropout} if cfg.dropout is not None else {}
        return UNet2DModel.from_pretrained(source, subfolder=subfolder, **overrides)
    return UNet2DConditionModel.from_pretrained(expand_path(cfg.pipeline), subfolder="unet")


def wrap_for_strategy(unet, cfg: ModelConfig, uses_xi: bool):
    """The trainable module, an ``XiUNet`` returning ``(eps, xi)``: a UNet that already carries ξ channels
    keeps them; otherwise ξ channels are added (zero-initialised) when the strategy trains them, and the
    UNet is wrapped as is when it does not."""
    from training.xi_head import XI_CONFIG_KEY, XiUNet

    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    if int(unet.config.get(XI_CONFIG_KEY, 0) or 0):
        return XiUNet.from_unet(unet, widen=False)
    return XiUNet.from_unet(unet, widen=True) if uses_xi else XiUNet.plain(unet)


def load_trainable_from_folder(folder: Path, cfg: ModelConfig):
    """Rebuild the trainable ``XiUNet`` from a checkpoint's ``model/`` or ``ema/`` folder."""
    from training.xi_head import XiUNet

    model = XiUNet.from_pretrained(folder)
    if cfg.gradient_checkpointing:
        model.unet.enable_gradient_checkpointing()
    return model


def load_text_space(cfg: ModelConfig, device: torch.device, dtype: torch.dtype = torch.float32):
    """The frozen VAE, text encoder and tokenizer of ``cfg.pipeline``, as a LatentTextSpace."""
    from diffusers import AutoencoderKL
    from transformers import AutoTokenizer, CLIPTextModel

    from training.conditioning import LatentTextSpace

    source = expand_path(cfg.pipeline)
    vae = AutoencoderKL.from_pretrained(source, subfolder="vae", torch_dtype=dtype)
    text_encoder = CLIPTextModel.from_pretrained(source, subfolder="text_encoder", torch_dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(source, subfolder="tokenizer")
    return LatentTextSpace(vae, text_encoder, tokenizer, device)


def missing_local_sources(cfg) -> list[tuple[str, str]]:
    """(key, path) for each model or scheduler source of a TrainConfig that can only be a local path (absolute,
    ./, ../, ~, or more than one '/') and does not exist: refused before Ray starts, naming the key (else the
    worker would ask the hub for a "repo id" that is a path and fail with the hub's validation message)."""
    sources = [("model.pretrained", cfg.model.pretrained), ("model.pipeline", cfg.model.pipeline),
               ("schedule.from_scheduler_config", cfg.schedule.from_scheduler_config)]
    return [(key, value) for key, value in sources
            if value and _path_like(value) and _local_dir(value) is None]


def _path_like(ref: str) -> bool:
    return ref.startswith(("/", ".", "~")) or ref.count("/") > 1


def resolve_schedule(cfg: ScheduleConfig) -> ScheduleConfig:
    """``cfg`` with a hub-id ``from_scheduler_config`` replaced by the downloaded file's local path."""
    source = cfg.from_scheduler_config
    if source is None or _local_dir(source) is not None:
        return cfg
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    reasons = []
    for subfolder in ("scheduler", None):  # a pipeline repo, then a scheduler/UNet repo (google/ddpm-*)
        try:
            path = hf_hub_download(source, "scheduler_config.json", subfolder=subfolder)
        except EntryNotFoundError as exc:  # also raised, as LocalEntryNotFoundError, when offline and not cached
            reasons.append(f"{subfolder or '.'}: {str(exc).splitlines()[0]}")
            continue
        return cfg.model_copy(update={"from_scheduler_config": path})
    raise FileNotFoundError(f"schedule.from_scheduler_config={source!r}: not a local path, and no scheduler config "
                            f"could be fetched from the hub ({'; '.join(reasons)})")


def build_diffusion(cfg: ScheduleConfig) -> GaussianDiffusion:
    return GaussianDiffusion.from_config(resolve_schedule(cfg))
