"""The resumable units: pretrain (dim, seed) → fine-tune (dim, seed, method) → evaluate (dim, seed, method).

Each unit writes its result as JSON (and models as .pt) under the work folder, tagged with the config
fingerprint; a rerun skips every unit whose JSON exists with the same fingerprint.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Optional

import torch

from benchmarks.mixture_bias import evaluate, sample, train
from benchmarks.mixture_bias.config import BenchConfig, Method, mixture_for


class Units:
    def __init__(self, cfg: BenchConfig, work: Path, log: Callable[[str], None] = print):
        self.cfg, self.work, self.log = cfg, Path(work), log
        self.fp = cfg.fingerprint()
        self.diffusion = cfg.diffusion()
        self.ran: list[str] = []
        self.skipped: list[str] = []

    # ------------------------------------------------------------------ bookkeeping
    def _done(self, path: Path) -> Optional[dict]:
        if path.exists():
            rec = json.loads(path.read_text())
            if rec.get("fingerprint") == self.fp:
                return rec
        return None

    def _write(self, path: Path, rec: dict) -> dict:
        path.parent.mkdir(parents=True, exist_ok=True)
        rec = {"fingerprint": self.fp, **rec}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(rec, indent=1))
        tmp.replace(path)
        return rec

    def _run(self, name: str, path: Path, fn: Callable[[], dict]) -> dict:
        rec = self._done(path)
        if rec is not None:
            self.skipped.append(name)
            return rec
        started = time.perf_counter()
        rec = fn()
        rec["seconds"] = time.perf_counter() - started
        self.ran.append(name)
        self.log(f"  {name}: {rec['seconds']:.1f}s")
        return self._write(path, rec)

    # ------------------------------------------------------------------ units
    def floors(self, dim: int) -> dict:
        cfg = self.cfg
        return self._run(f"floors d{dim}", self.work / "floors" / f"d{dim}.json",
                         lambda: {"dim": dim, **evaluate.floors(mixture_for(dim), cfg.num_eval,
                                                                num_projections=cfg.num_projections,
                                                                reference_size=cfg.reference_size)})

    def pretrain(self, dim: int, seed: int) -> dict:
        path = self.work / "pretrain" / f"d{dim}_s{seed}.json"

        def go():
            model, rec = train.pretrain(self.cfg, dim, seed, mixture_for(dim), self.diffusion)
            torch.save(model.state_dict(), path.with_suffix(".pt"))
            return {"dim": dim, "seed": seed, **rec}

        path.parent.mkdir(parents=True, exist_ok=True)
        return self._run(f"pretrain d{dim} s{seed}", path, go)

    def finetune(self, dim: int, seed: int, method: Method) -> dict:
        path = self.work / "finetune" / f"d{dim}_s{seed}_{method.label}.json"

        def go():
            base = train.load_model(self.cfg, dim, torch.load(self.work / "pretrain" / f"d{dim}_s{seed}.pt"))
            model, rec = train.finetune(self.cfg, method, base, dim, seed, mixture_for(dim), self.diffusion)
            torch.save(model.state_dict(), path.with_suffix(".pt"))
            return {"dim": dim, "seed": seed, "method": method.label, **rec}

        path.parent.mkdir(parents=True, exist_ok=True)
        return self._run(f"finetune d{dim} s{seed} {method.label}", path, go)

    def evaluate(self, dim: int, seed: int, method: Method) -> dict:
        cfg = self.cfg
        path = self.work / "eval" / f"d{dim}_s{seed}_{method.label}.json"
        source = "ddpm" if method.eps_scale_search else method.label

        def go():
            state = torch.load(self.work / "finetune" / f"d{dim}_s{seed}_{source}.pt")
            model = train.load_model(cfg, dim, state)
            xi = model.xi_out is not None
            mixture = mixture_for(dim)
            cells = []
            for sampler in cfg.samplers:
                for steps in cfg.steps:
                    # the same sampling noise for every method of a (dim, seed, sampler, steps): paired
                    test_seed = 100_000 * dim + 1_000 * seed + steps + (0 if sampler == "ddpm" else 500)
                    lam, grid = 1.0, None
                    if method.eps_scale_search:
                        grid = {}
                        for cand in cfg.lambda_grid:
                            x = sample.sample_vectors(model, self.diffusion, sampler, steps, cfg.num_eval, dim,
                                                      seed=test_seed + 10_000_000, xi_denoise=False, eps_scale=cand)
                            grid[str(cand)] = evaluate.metrics(x, mixture, ref_seed=evaluate.HELDOUT_REF,
                                                               num_projections=cfg.num_projections,
                                                               reference_size=cfg.reference_size)["sw2"]
                        lam = float(min(cfg.lambda_grid, key=lambda c: grid[str(c)]))
                    x = sample.sample_vectors(model, self.diffusion, sampler, steps, cfg.num_eval, dim,
                                              seed=test_seed, xi_denoise=xi, eps_scale=lam)
                    m = evaluate.metrics(x, mixture, ref_seed=evaluate.TEST_REF, num_projections=cfg.num_projections,
                                         reference_size=cfg.reference_size)
                    cells.append({"sampler": sampler, "steps": steps, "eps_scale": lam, "xi_denoise": xi,
                                  "heldout_sw2_by_lambda": grid, **m})
            return {"dim": dim, "seed": seed, "method": method.label, "model": source, "cells": cells}

        path.parent.mkdir(parents=True, exist_ok=True)
        return self._run(f"eval d{dim} s{seed} {method.label}", path, go)

    # ------------------------------------------------------------------ all of it
    def run_all(self) -> None:
        cfg = self.cfg
        methods = cfg.method_table()
        if any(m.eps_scale_search for m in methods) and "ddpm" not in [m.label for m in methods]:
            raise ValueError("eps_scale needs the 'ddpm' fine-tune in the method table")
        for dim in cfg.dims:
            self.floors(dim)
            for seed in cfg.seeds:
                self.pretrain(dim, seed)
                for m in methods:
                    if m.strategy is not None:
                        self.finetune(dim, seed, m)
                for m in methods:
                    self.evaluate(dim, seed, m)
