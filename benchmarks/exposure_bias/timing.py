"""Measure a preset's per-step costs on this machine and extrapolate its CPU budget (no result is trained).

    python -m benchmarks.exposure_bias.timing [--converged | --full] [--threads 1]

Times (CPU seconds, one torch thread): a pretraining step (plain DDPM), a fine-tuning step of the costliest
chain (MDSS with the preset's largest k: one extra no-grad forward), and one network evaluation on a sampling
batch; then multiplies by the preset's step and image counts. Metric (feature-network) time is left out: it
is small beside sampling at these sizes.
"""
from __future__ import annotations

import argparse
import time

import torch

from benchmarks.exposure_bias.config import PRESETS, ProtocolConfig
from training.diffusion import GaussianDiffusion
from training.strategies import StrategyConfig, build_strategy
from training.xi_head import XiUNet


def _step_cost(model, strategy, batch: int, size: int, repeats: int = 5) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x0 = torch.randn(batch, model.config.in_channels, size, size).clamp(-1, 1)
    for i in range(repeats + 1):
        if i == 1:
            t0 = time.process_time()
        out = strategy.training_losses(model, x0, step=1, total_steps=2)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    return (time.process_time() - t0) / repeats


@torch.no_grad()
def _nfe_cost(model, n: int, size: int, repeats: int = 3) -> float:
    model.eval()
    x, t = torch.randn(n, model.config.in_channels, size, size), torch.full((n,), 500)
    model(x, t)
    t0 = time.process_time()
    for _ in range(repeats):
        model(x, t)
    return (time.process_time() - t0) / repeats


def budget(cfg: ProtocolConfig) -> dict:
    from diffusers import UNet2DModel

    d = GaussianDiffusion.from_config(cfg.schedule)
    size = cfg.image_size
    unet = UNet2DModel.from_pretrained(cfg.pretrained) if cfg.pretrained else UNet2DModel(**cfg.unet_config)
    plain = XiUNet.plain(unet)
    parameters = sum(p.numel() for p in plain.parameters())
    k = max([v.strategy.k for v in cfg.variants if v.strategy.name == "mdss"] or [1])
    pre = _step_cost(plain, build_strategy(StrategyConfig(name="ddpm"), d), cfg.pretrain.batch_size, size)
    fine = _step_cost(XiUNet.from_unet(plain.unet, widen=True), build_strategy(StrategyConfig(name="mdss", k=k), d),
                      cfg.finetune.batch_size, size)
    ev = cfg.evaluation
    nfe = _nfe_cost(plain, ev.batch_size, size) / ev.batch_size  # per image
    per_set = sum(c.steps * (2 if c.sampler == "dpm2" else 3 if c.sampler == "dpm3" else 1) for c in ev.cells)
    n_train, n_var = len(cfg.train_seeds), len(cfg.variants)
    eval_sets = n_var * n_train * len(ev.seeds) * ev.num_samples * per_set
    held_out = sum(len(cfg.lambda_grid_for(lab)) for lab in cfg.searched_labels()) * n_train * ev.lambda_samples * per_set
    curve_imgs = 0
    if cfg.pretrain_curve is not None and cfg.pretrain.snapshot_every:
        pc = cfg.pretrain_curve
        curve_imgs = pc.num_samples * (cfg.pretrain.steps // cfg.pretrain.snapshot_every * pc.cell.steps
                                       + sum(c.steps for c in pc.final_cells))
    parts = {
        "pretrain": cfg.pretrain.steps * pre,
        "finetune (all variants × seeds, at the costliest step)": n_var * n_train * cfg.finetune.steps * fine,
        "evaluation sampling": eval_sets * nfe,
        "held-out searches (λ, k)": held_out * nfe,
        "pretraining curve": curve_imgs * nfe,
    }
    return {"pretrain_step_s": pre, "finetune_step_s": fine, "nfe_per_image_s": nfe,
            "parameters": parameters, "parts_s": parts, "total_s": sum(parts.values())}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.exposure_bias.timing", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="converged")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    b = budget(PRESETS[args.preset]())
    print(f"{args.preset}: {b['parameters']:,} parameters; CPU s per pretraining step {b['pretrain_step_s']:.3f}, "
          f"per fine-tuning step (costliest chain) {b['finetune_step_s']:.3f}, per image-NFE {b['nfe_per_image_s'] * 1e3:.3f} ms")
    for name, sec in b["parts_s"].items():
        print(f"  {name:58s} {sec / 3600:6.2f} CPU-h")
    print(f"  {'total (metric time left out)':58s} {b['total_s'] / 3600:6.2f} CPU-h")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
