"""Measure the per-step cost of the --full preset's pieces on this machine and extrapolate one (D, seed) unit set.

``python -m benchmarks.mixture_bias.timing`` (≈ 45 s, 1 thread): 400 pretrain steps, 200 fine-tune steps (DDPM and
MDSS), one 50-step sample of ``num_eval`` vectors and one metrics call, per dimension.
"""
from __future__ import annotations

import dataclasses
import time

import torch

from benchmarks.mixture_bias import evaluate, sample, train
from benchmarks.mixture_bias.config import full, mixture_for


def main() -> None:
    torch.set_num_threads(1)
    cfg0 = full()
    d = cfg0.diffusion()
    methods = {m.label: m for m in cfg0.method_table()}
    mdss = f"mdss_k{cfg0.k}_mean"
    total = 0.0
    for dim in cfg0.dims:
        mix = mixture_for(dim)
        cfg = dataclasses.replace(cfg0, pretrain_steps=400, finetune_steps=200)
        t = time.perf_counter()
        base, _ = train.pretrain(cfg, dim, 0, mix, d)
        pre = (time.perf_counter() - t) / 400
        ft = {}
        for lab in ("ddpm", mdss):
            t = time.perf_counter()
            model, _ = train.finetune(cfg, methods[lab], base, dim, 0, mix, d)
            ft[lab] = (time.perf_counter() - t) / 200
        model.eval()
        t = time.perf_counter()
        x = sample.sample_vectors(model, d, "ddpm", 50, cfg0.num_eval, dim, seed=1, xi_denoise=True)
        samp = (time.perf_counter() - t) / 50
        t = time.perf_counter()
        evaluate.metrics(x, mix, ref_seed=evaluate.TEST_REF, num_projections=cfg0.num_projections,
                         reference_size=cfg0.reference_size)
        met = time.perf_counter() - t
        n_ft = sum(m.strategy is not None for m in cfg0.method_table())
        n_plain_eval = sum(not m.eps_scale_search for m in cfg0.method_table())
        cells = len(cfg0.samplers) * len(cfg0.steps)
        one_eval = len(cfg0.samplers) * sum(cfg0.steps) * samp + cells * met
        est = (cfg0.pretrain_steps * pre + n_ft * cfg0.finetune_steps * ft[mdss]
               + one_eval * (n_plain_eval + len(cfg0.lambda_grid) + 1))
        total += est * len(cfg0.seeds)
        print(f"D={dim}: pretrain {pre:.4f} s/step, fine-tune {ft['ddpm']:.4f} (ddpm) / {ft[mdss]:.4f} ({mdss}) s/step, "
              f"sampling {samp:.4f} s/step at n={cfg0.num_eval}, metrics {met:.2f} s; one (D, seed) ≈ {est / 60:.0f} min")
    print(f"--full estimate: {total / 3600:.1f} CPU-hours (1 thread)")


if __name__ == "__main__":
    main()
