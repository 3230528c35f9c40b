"""Measure a preset's per-step costs on this machine and extrapolate its CPU budget (no result is trained).

    python -m benchmarks.exposure_bias.timing [--preset converged [--seeds 6] | --preset full] [--threads 1]
    python -m benchmarks.exposure_bias.timing --preset converged --seeds 6 --costs 0.126 0.144 0.000681

``--costs`` extrapolates from recorded per-step costs (docs/benchmarks/exposure_converged_timing.txt) instead of
measuring (a busy machine measures high). It prints a split of the per-variant units into two groups of about
equal cost (one single-thread process each).

Times (CPU seconds, one torch thread): a pretraining step (plain DDPM), a fine-tuning step of the costliest
chain (MDSS with the preset's largest k: one extra no-grad forward), and one network evaluation on a sampling
batch; then multiplies by the preset's step and image counts (each variant over its own training seeds).
Metric (feature-network) time is left out: it is small beside sampling at these sizes; so are the noise floor and
the curve, diagnostics and samples stages (minutes).
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


def measure(cfg: ProtocolConfig) -> dict:
    """This machine's per-step costs for ``cfg`` (CPU seconds): {pretrain_step_s, finetune_step_s (the costliest
    chain), nfe_per_image_s, parameters}."""
    from diffusers import UNet2DModel

    d = GaussianDiffusion.from_config(cfg.schedule)
    size = cfg.image_size
    unet = UNet2DModel.from_pretrained(cfg.pretrained) if cfg.pretrained else UNet2DModel(**cfg.unet_config)
    plain = XiUNet.plain(unet)
    k = max([v.strategy.k for v in cfg.variants if v.strategy.name == "mdss"] or [1])
    pre = _step_cost(plain, build_strategy(StrategyConfig(name="ddpm"), d), cfg.pretrain.batch_size, size)
    fine = _step_cost(XiUNet.from_unet(plain.unet, widen=True), build_strategy(StrategyConfig(name="mdss", k=k), d),
                      cfg.finetune.batch_size, size)
    nfe = _nfe_cost(plain, cfg.evaluation.batch_size, size) / cfg.evaluation.batch_size  # per image
    return {"pretrain_step_s": pre, "finetune_step_s": fine, "nfe_per_image_s": nfe,
            "parameters": sum(p.numel() for p in plain.parameters())}


def _nfe_per_set(cells) -> int:
    return sum(c.steps * (2 if c.sampler == "dpm2" else 3 if c.sampler == "dpm3" else 1) for c in cells)


def variant_costs(cfg: ProtocolConfig, costs: dict) -> dict[str, float]:
    """CPU seconds of each variant's per-variant units over its training seeds: fine-tuning (at the costliest
    chain's step), its held-out search, and its evaluation — the unscaled cells, the ξ ablation, and each ε-scaled
    setting counted as if its λ were not 1 (an upper bound: a λ of 1, or the other grid's λ, is copied)."""
    ev = cfg.evaluation
    per_set = _nfe_per_set(ev.cells)
    xi_set = _nfe_per_set([c for c in ev.cells if c.sampler in ("ddpm", "ddim")])
    scaled = set(cfg.scaled_labels())
    out = {}
    for v in cfg.variants:
        n = len(cfg.seeds_for(v.label))
        sets = per_set * (1 + (v.label in scaled) * (1 + (ev.lambda_grid_extended is not None)))
        sets += xi_set * (v.label == ev.xi_ablation_label and v.strategy.name not in ("ddpm", "ip", "ss"))
        held = (len(cfg.lambda_grid_for(v.label)) * ev.lambda_samples * per_set
                if v.label in cfg.searched_labels() else 0)
        out[v.label] = n * (cfg.finetune.steps * costs["finetune_step_s"]
                            + (len(ev.seeds) * ev.num_samples * sets + held) * costs["nfe_per_image_s"])
    return out


def budget(cfg: ProtocolConfig, costs: dict | None = None) -> dict:
    """The CPU budget of ``cfg`` from per-step ``costs`` (``measure``'s keys; measured here when None)."""
    costs = dict(measure(cfg) if costs is None else costs)
    pre, fine, nfe = costs["pretrain_step_s"], costs["finetune_step_s"], costs["nfe_per_image_s"]
    ev = cfg.evaluation
    per_set = _nfe_per_set(ev.cells)
    runs = sum(len(cfg.seeds_for(v.label)) for v in cfg.variants)
    scaled_runs = sum(len(cfg.seeds_for(lab)) for lab in cfg.scaled_labels())
    eval_sets = runs * len(ev.seeds) * ev.num_samples * per_set
    scaled_sets = scaled_runs * (1 + (ev.lambda_grid_extended is not None)) * len(ev.seeds) * ev.num_samples * per_set
    held_out = sum(len(cfg.lambda_grid_for(lab)) * len(cfg.seeds_for(lab))
                   for lab in cfg.searched_labels()) * ev.lambda_samples * per_set
    curve_imgs = 0
    if cfg.pretrain_curve is not None and cfg.pretrain.snapshot_every:
        pc = cfg.pretrain_curve
        curve_imgs = pc.num_samples * (cfg.pretrain.steps // cfg.pretrain.snapshot_every * pc.cell.steps
                                       + sum(c.steps for c in pc.final_cells))
    parts = {
        "pretrain": cfg.pretrain.steps * pre,
        f"finetune ({runs} runs: variants × their seeds, at the costliest step)": runs * cfg.finetune.steps * fine,
        "evaluation sampling (unscaled)": eval_sets * nfe,
        "evaluation sampling (ε-scaled settings, at most)": scaled_sets * nfe,
        "held-out searches (λ, k)": held_out * nfe,
        "pretraining curve": curve_imgs * nfe,
    }
    return {**costs, "parts_s": parts, "total_s": sum(parts.values()),
            "variants_s": variant_costs(cfg, costs)}


def balanced_groups(costs: dict[str, float], n: int = 2) -> list[list[str]]:
    """The variants split into ``n`` groups of about equal cost (largest first, each to the cheapest group)."""
    groups: list[list[str]] = [[] for _ in range(n)]
    totals = [0.0] * n
    for label in sorted(costs, key=costs.get, reverse=True):
        i = totals.index(min(totals))
        groups[i].append(label)
        totals[i] += costs[label]
    return groups


def main(argv=None) -> int:
    from benchmarks.exposure_bias.config import converged

    p = argparse.ArgumentParser(prog="python -m benchmarks.exposure_bias.timing", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="converged")
    p.add_argument("--seeds", type=int, choices=(3, 6), default=None, help="--preset converged: its --seeds")
    p.add_argument("--costs", type=float, nargs=3, metavar=("PRETRAIN_STEP_S", "FINETUNE_STEP_S", "NFE_PER_IMAGE_S"),
                   help="extrapolate from these per-step costs (e.g. a recorded measurement) instead of measuring")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    if args.seeds is not None and args.preset != "converged":
        p.error("--seeds goes with --preset converged")
    torch.set_num_threads(args.threads)
    cfg = converged(args.seeds or 3) if args.preset == "converged" else PRESETS[args.preset]()
    costs = None if args.costs is None else dict(zip(("pretrain_step_s", "finetune_step_s", "nfe_per_image_s"),
                                                     args.costs))
    b = budget(cfg, costs)
    size = f"{b['parameters']:,} parameters; " if "parameters" in b else "given costs: "
    print(f"{args.preset}{f' --seeds {args.seeds}' if args.seeds else ''}: {size}CPU s per pretraining step "
          f"{b['pretrain_step_s']:.3f}, per fine-tuning step (costliest chain) {b['finetune_step_s']:.3f}, per "
          f"image-NFE {b['nfe_per_image_s'] * 1e3:.3f} ms")
    for name, sec in b["parts_s"].items():
        print(f"  {name:66s} {sec / 3600:6.2f} CPU-h")
    print(f"  {'total (metric time left out)':66s} {b['total_s'] / 3600:6.2f} CPU-h")
    groups = balanced_groups(b["variants_s"])
    for name, g in zip("AB", groups):
        print(f"  group {name} (per-variant units, {sum(b['variants_s'][x] for x in g) / 3600:.2f} CPU-h): "
              + " ".join(f"--variant {x}" for x in g))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
