"""The protocol's stages. Each stage (and each variant within one) is a resumable unit under ``work_dir``
(see :mod:`benchmarks.exposure_bias.units`); ``report`` turns the units' records into ``out_dir``.

    feature_net → pretrain → pretrain_curve → finetune (one unit per variant and training seed) → noise_floor
                → lambda → evaluate → curve → diagnostics → samples → report

Per-variant units live in ``<kind>/<label>/s<training seed>/``; a variant's training seeds are ``train_seeds``
plus, for the variants ``extra_seeds`` names, its seeds (``ProtocolConfig.seeds_for``). The curve, diagnostics and
samples stages use the first training seed only.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Optional

import torch

from benchmarks.exposure_bias import units
from benchmarks.exposure_bias.config import Cell, ProtocolConfig, Variant
from benchmarks.exposure_bias.diagnostics import step_errors, variance_error
from benchmarks.exposure_bias.sampling import Scorer, at_resolution, generate, sampler_config
from benchmarks.exposure_bias.records import read_jsonl
from benchmarks.exposure_bias.trainer import FINAL, load_model, snapshot_folders, train
from training.diffusion import GaussianDiffusion
from benchmarks.exposure_bias.data import load_split, train_limit
from training.metrics.feature_net import train_feature_net
from training.strategies import StrategyConfig, build_strategy

STAGES = ("feature_net", "pretrain", "pretrain_curve", "finetune", "noise_floor", "lambda", "evaluate", "curve", "diagnostics", "samples",
          "report")


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


class Protocol:
    def __init__(self, cfg: ProtocolConfig, work_dir: Path, out_dir: Path, log: Callable[[str], None] = print,
                 only_variants: Optional[list[str]] = None):
        self.cfg, self.work, self.out, self.log = cfg, Path(work_dir), Path(out_dir), log
        known = [v.label for v in cfg.variants]
        unknown = sorted(set(only_variants or []) - set(known))
        if unknown:
            raise ValueError(f"--variant: unknown variant(s) {unknown}; the {cfg.preset} preset has {known}")
        # Per-variant units write to their own folders, so processes given disjoint variants can run side by side.
        self.variants = [v for v in cfg.variants if not only_variants or v.label in only_variants]
        self.diffusion = GaussianDiffusion.from_config(cfg.schedule)
        self._scorer: Optional[Scorer] = None
        self._train_images: Optional[torch.Tensor] = None
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------------ fingerprints
    def fp(self, stage: str, variant: Optional[Variant] = None, seed: Optional[int] = None) -> str:
        c = self.cfg
        clip = [("clip_sample", c.clip_sample)] if c.clip_sample is not None else []  # absent: units made before it
        if stage == "feature_net":
            return units.fingerprint("feature_net", c.feature_net, c.data_root)
        if stage == "metric":  # what every score depends on (image_size too, through the pretrain fingerprint)
            sources = [c.image_folders] if c.image_folders else []
            return units.fingerprint(self.fp("feature_net"), c.inception_weights, c.val_size, c.test_size, *sources)
        if stage in ("pretrain", "pretrain_extendable"):  # the latter: everything of the pretraining but its length
            spec = c.pretrain if stage == "pretrain" else c.pretrain.model_copy(update={"steps": 0})
            # the data and model sources enter only when set, so Fashion-MNIST units made before they existed stay valid
            sources = [c.image_folders, c.pretrained] if (c.image_folders or c.pretrained) else []
            return units.fingerprint("pretrain", c.schedule, c.unet_config, spec, c.train_limit, c.data_root,
                                     c.image_size, *sources)
        if stage == "pretrain_curve":
            return units.fingerprint("pretrain_curve", self.fp("metric"), self.fp("pretrain"), c.pretrain_curve, *clip)
        if stage == "finetune":
            return units.fingerprint("finetune", self.fp("pretrain"), c.finetune, variant, seed)
        if stage == "noise_floor":
            return units.fingerprint("noise_floor", self.fp("metric"), self.fp("pretrain"), c.noise_floor, *clip)
        if stage == "lambda":
            e = c.evaluation
            # the extension enters only when set, so units of presets without it keep their fingerprints
            ext = ([("lambda_grid_extended", e.lambda_grid_extended, "lambda_grid", e.lambda_grid)]
                   if e.lambda_grid_extended and variant.label in c.scaled_labels() else [])
            return units.fingerprint("lambda", self.fp("metric"), self.fp("finetune", variant, seed), e.cells,
                                     c.lambda_grid_for(variant.label), e.lambda_samples, e.lambda_seed, *clip, *ext)
        if stage == "evaluate":
            return units.fingerprint("evaluate", self.fp("lambda", variant, seed), c.evaluation)
        if stage == "curve":
            return units.fingerprint("curve", self.fp("metric"), self.fp("finetune", variant, seed), c.curve, *clip)
        if stage == "diagnostics":
            return units.fingerprint("diagnostics", self.fp("finetune", variant, seed), c.diagnostics, *clip)
        if stage == "samples":
            return units.fingerprint("samples", self.fp("finetune", variant, seed), c.samples, *clip)
        raise ValueError(f"unknown stage {stage!r}")

    # ------------------------------------------------------------------ shared inputs
    @property
    def scorer(self) -> Scorer:
        if self._scorer is None:
            self._scorer = Scorer(self.cfg, self.work / "feature_net")
        return self._scorer

    @property
    def train_images(self) -> torch.Tensor:
        if self._train_images is None:
            images = load_split(self.cfg, "train", train_limit(self.cfg))
            self._train_images = at_resolution(images, self.cfg.image_size)
        return self._train_images

    def sampler(self, cell: Cell, *, xi_denoise: bool, lam: float = 1.0):
        return sampler_config(cell, xi_denoise=xi_denoise, lam=lam, clip_sample=self.cfg.clip_sample)

    def unit_dir(self, kind: str, variant: Variant, seed: int) -> Path:
        return self.work / kind / variant.label / f"s{seed}"

    @property
    def first_seed(self) -> int:
        return self.cfg.train_seeds[0]

    def _require(self, folder: Path, fp: str, stage: str) -> None:
        if not units.is_done(folder, fp):
            raise RuntimeError(f"{folder}: stage {stage!r} has not been run for this config (run --stage {stage} "
                               "first, or run all stages)")

    def model(self, variant: Optional[Variant], seed: Optional[int] = None):
        if variant is None:
            folder, fp, stage = self.work / "models" / "pretrained", self.fp("pretrain"), "pretrain"
        else:
            seed = self.first_seed if seed is None else seed
            folder, fp, stage = self.unit_dir("models", variant, seed), self.fp("finetune", variant, seed), "finetune"
        self._require(folder, fp, stage)
        return load_model(folder / FINAL, self.cfg.device)

    def _unit(self, folder: Path, fp: str, what: str, body: Callable[[Path], dict]) -> None:
        if units.is_done(folder, fp):
            self.log(f"  {what}: done already, skipped")
            return
        started = time.perf_counter()
        units.fresh(folder, fp)
        info = body(folder) or {}
        wall = time.perf_counter() - started
        units.mark_done(folder, fp, wall_s=round(wall, 1), **info)
        self.log(f"  {what}: {wall:.1f}s")

    # ------------------------------------------------------------------ stages
    def run(self, stages: tuple[str, ...] = STAGES) -> None:
        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)
        for stage in stages:
            started = time.perf_counter()
            self.log(f"[{stage}]")
            getattr(self, f"stage_{stage}")()
            self.timings[stage] = time.perf_counter() - started

    def stage_feature_net(self) -> None:
        if self.cfg.inception_weights:
            self.log("  scoring with Inception FID (inception_weights): no feature network to train")
            return

        def body(folder: Path) -> dict:
            info = train_feature_net(self.cfg.feature_net, self.cfg.data_root, folder)
            self.log(f"  feature net test accuracy {info['test_accuracy']:.4f}")
            return {}
        self._unit(self.work / "feature_net", self.fp("feature_net"), "feature net", body)

    def stage_pretrain(self) -> None:
        def body(folder: Path) -> dict:
            from diffusers import UNet2DModel

            from training.xi_head import XiUNet

            if self.cfg.pretrained:  # a released checkpoint is the pretrained model: nothing to train here
                unet = UNet2DModel.from_pretrained(self.cfg.pretrained)
                if unet.config.sample_size != self.cfg.image_size:
                    raise RuntimeError(f"{self.cfg.pretrained}: sample_size {unet.config.sample_size} is not the "
                                       f"protocol's image_size {self.cfg.image_size}")
                XiUNet.plain(unet).save_pretrained(folder / FINAL)
                return {"parameters": sum(p.numel() for p in unet.parameters()), "loaded_from": self.cfg.pretrained}
            torch.manual_seed(self.cfg.pretrain.seed)
            model = XiUNet.plain(UNet2DModel(**self.cfg.unet_config))
            strategy = build_strategy(StrategyConfig(name="ddpm"), self.diffusion)
            out = train(model, strategy, self.train_images, self.cfg.pretrain, folder, self.cfg.device,
                        log_every=self.cfg.pretrain.checkpoint_every)
            return {"parameters": sum(p.numel() for p in model.parameters()), "final_loss": out["history"][-1]["loss"],
                    "extendable": self.fp("pretrain_extendable"), "steps": self.cfg.pretrain.steps}
        folder = self.work / "models" / "pretrained"
        self._extend_pretraining(folder)
        self._unit(folder, self.fp("pretrain"), "pretrain", body)

    def _extend_pretraining(self, folder: Path) -> None:
        """A longer pretraining of the same model continues the finished shorter one instead of starting over:
        batches, timesteps and noise are functions of (seed, step), the learning rate is constant after warm-up
        and the checkpoint holds the model, optimiser and EMA state, so the longer run is the shorter one
        continued — the same as a resume after a kill, whose only difference from an uninterrupted run is
        dropout's masks (the global RNG is not checkpointed)."""
        if self.cfg.pretrained or not (folder / units.MARKER).is_file() or units.is_done(folder, self.fp("pretrain")):
            return
        done = units.read_done(folder)
        shorter = int(done.get("steps", self.cfg.pretrain.steps)) < self.cfg.pretrain.steps
        if done.get("extendable") != self.fp("pretrain_extendable") or not shorter:
            return
        if self.cfg.pretrain.warmup_steps > int(done["steps"]):  # the learning rate still ramping: not the same run
            return
        self.log(f"  pretrain: continuing the finished {done['steps']}-step run to {self.cfg.pretrain.steps} steps")
        (folder / units.MARKER).unlink()
        (folder / "STARTED.json").write_text(json.dumps({"fingerprint": self.fp("pretrain")}))

    def stage_pretrain_curve(self) -> None:
        pc = self.cfg.pretrain_curve
        if pc is None:
            self.log("  no pretrain_curve in this preset: skipped")
            return
        self._require(self.work / "models" / "pretrained", self.fp("pretrain"), "pretrain")

        def body(folder: Path) -> dict:
            ev = self.cfg.evaluation
            rows = []
            for step, path in snapshot_folders(self.work / "models" / "pretrained"):
                x = generate(load_model(path, self.cfg.device), self.diffusion, self.sampler(pc.cell, xi_denoise=False),
                             pc.num_samples, pc.seed, ev.batch_size, self.cfg.device)
                rows.append({"kind": "snapshot", "step": step, "sampler": pc.cell.sampler, "steps": pc.cell.steps,
                             "score": self.scorer(x, "val")})
            final = self.model(None)
            for cell in pc.final_cells:
                x = generate(final, self.diffusion, self.sampler(cell, xi_denoise=False), pc.num_samples, pc.seed,
                             ev.batch_size, self.cfg.device)
                rows.append({"kind": "final", "step": self.cfg.pretrain.steps, "sampler": cell.sampler,
                             "steps": cell.steps, "score": self.scorer(x, "val")})
            _write_jsonl(folder / "rows.jsonl", rows)
            return {}
        self._unit(self.work / "pretrain_curve", self.fp("pretrain_curve"), "pretrain curve", body)

    def seeded_variants(self, variants: Optional[list[Variant]] = None) -> list[tuple[int, Variant]]:
        """(training seed, variant) of every per-variant unit, seed by seed: ``train_seeds`` first (the same units
        with or without extra seeds), then the extra seeds of the variants that have them."""
        variants = self.variants if variants is None else variants
        return [(seed, v) for seed in self.cfg.all_train_seeds() for v in variants if seed in self.cfg.seeds_for(v.label)]

    def stage_finetune(self) -> None:
        self._require(self.work / "models" / "pretrained", self.fp("pretrain"), "pretrain")
        for seed, v in self.seeded_variants():
            def body(folder: Path, v: Variant = v, seed: int = seed) -> dict:
                strategy = build_strategy(v.strategy, self.diffusion)
                torch.manual_seed(self.cfg.finetune.seed + seed)  # fresh ξ channels: the same per seed
                model = load_model(self.work / "models" / "pretrained" / FINAL, self.cfg.device,
                                   widen_xi=strategy.uses_xi)
                spec = self.cfg.finetune.model_copy(update={"seed": self.cfg.finetune.seed + seed})
                out = train(model, strategy, self.train_images, spec, folder, self.cfg.device, oracle=v.oracle_rollout)
                _write_jsonl(folder / "history.jsonl", out["history"])
                return {"final_loss": out["history"][-1]["loss"]}
            self._unit(self.unit_dir("models", v, seed), self.fp("finetune", v, seed), f"finetune {v.label} s{seed}",
                       body)

    def stage_noise_floor(self) -> None:
        nf, ev = self.cfg.noise_floor, self.cfg.evaluation

        def body(folder: Path) -> dict:
            rows = []
            for n in nf.sizes:
                for s in nf.seeds:
                    idx = torch.randperm(len(self.train_images), generator=torch.Generator().manual_seed(s))[:n]
                    rows.append({"source": "real_train_subset", "size": n, "seed": s,
                                 "score": self.scorer(self.train_images[idx])})
            model = self.model(None)
            for n in nf.sizes:
                for s in nf.seeds:
                    x = generate(model, self.diffusion, self.sampler(nf.cell, xi_denoise=False), n, s,
                                 ev.batch_size, self.cfg.device)
                    rows.append({"source": f"pretrained_{nf.cell.key}", "size": n, "seed": s, "score": self.scorer(x)})
            _write_jsonl(folder / "rows.jsonl", rows)
            return {}
        self._unit(self.work / "noise_floor", self.fp("noise_floor"), "noise floor", body)

    def stage_lambda(self) -> None:
        """Held-out scores: the λ grid for the ε-scaled variants, λ = 1 for the k candidates (k by held-out).
        ``lambda.json`` holds per cell every λ's held-out score (``val_scores``), ``lambda``: the best of
        ``lambda_grid``, and with ``lambda_grid_extended`` also ``lambda_extended``: the best of the union."""
        ev = self.cfg.evaluation
        searched = [v for v in self.variants if v.label in self.cfg.searched_labels()]
        for seed, v in self.seeded_variants(searched):
            def body(folder: Path, v: Variant = v, seed: int = seed) -> dict:
                model = self.model(v, seed)
                extended = ev.lambda_grid_extended is not None and v.label in self.cfg.scaled_labels()
                choice = {}
                # each score is recorded as it is made: a search killed part-way (or carried to another machine)
                # resumes from its last score; each is seeded by (model, cell, λ) alone, so the order changes nothing
                partial = units.PartialRecords(folder)
                for cell in ev.cells:
                    scores = {str(lam): partial.get(f"{cell.key} lambda={lam!r}",
                                                    lambda cell=cell, lam=lam: self.held_out_score(model, cell, lam))
                              for lam in self.cfg.lambda_grid_for(v.label)}
                    preset = {k: sc for k, sc in scores.items() if float(k) in ev.lambda_grid}
                    choice[cell.key] = {"lambda": float(min(preset, key=preset.get)), "val_scores": scores}
                    if extended:
                        choice[cell.key]["lambda_extended"] = float(min(scores, key=scores.get))
                (folder / "lambda.json").write_text(json.dumps(choice, indent=2))
                return {"resumed_records": partial.resumed}
            self._unit(self.unit_dir("lambda", v, seed), self.fp("lambda", v, seed), f"lambda {v.label} s{seed}", body)

    def held_out_score(self, model, cell: Cell, lam: float) -> float:
        """The λ search's score of one (model, cell, λ): its own sampling seed and image count, on the held-out
        split (never the test reference). The side probe (``lambda_probe``) scores through this too."""
        ev = self.cfg.evaluation
        x = generate(model, self.diffusion, self.sampler(cell, xi_denoise=model.has_xi, lam=lam),
                     ev.lambda_samples, ev.lambda_seed, ev.batch_size, self.cfg.device)
        return self.scorer(x, "val")

    def test_score(self, model, cell: Cell, seed: int, *, lam: float = 1.0, xi_denoise: Optional[bool] = None) -> float:
        """The evaluation's score of one (model, cell, λ, sampling seed) on the test reference."""
        ev = self.cfg.evaluation
        xi = model.has_xi if xi_denoise is None else xi_denoise
        x = generate(model, self.diffusion, self.sampler(cell, xi_denoise=xi, lam=lam), ev.num_samples, seed,
                     ev.batch_size, self.cfg.device)
        return self.scorer(x, "test")

    def evaluated_rows(self, variant: Variant, seed: int) -> list[dict]:
        """The evaluate stage's recorded test rows of (variant, training seed), for this config only."""
        folder = self.unit_dir("eval", variant, seed)
        self._require(folder, self.fp("evaluate", variant, seed), "evaluate")
        return read_jsonl(folder / "rows.jsonl")

    def stage_evaluate(self) -> None:
        for seed, v in self.seeded_variants():
            self._evaluate(v, seed)

    def _evaluate(self, v: Variant, seed: int) -> None:
        ev = self.cfg.evaluation

        def body(folder: Path) -> dict:
            scaled = v.label in self.cfg.scaled_labels()
            if scaled:
                lam_dir = self.unit_dir("lambda", v, seed)
                self._require(lam_dir, self.fp("lambda", v, seed), "lambda")
                choice = json.loads((lam_dir / "lambda.json").read_text())
            model = self.model(v, seed)
            rows = []
            partial = units.PartialRecords(folder)  # as in the λ search: a killed evaluation resumes, not restarts
            for cell in ev.cells:
                settings = [("off", 1.0, model.has_xi)]
                # the ε-scaled settings and their λ: the preset grid's choice, and the extended grid's if any
                scaled_at = {}
                if scaled:
                    scaled_at["eps_scaled"] = choice[cell.key]["lambda"]
                    if "lambda_extended" in choice[cell.key]:
                        scaled_at["eps_scaled_ext"] = choice[cell.key]["lambda_extended"]
                # a λ already sampled (1 = the unscaled cell, or the other grid's choice) is copied, not resampled
                sampled = {1.0: "off"}
                copies = []
                for setting, lam in scaled_at.items():
                    if lam in sampled:
                        copies.append((setting, sampled[lam]))
                    else:
                        sampled[lam] = setting
                        settings.append((setting, lam, model.has_xi))
                if v.label == ev.xi_ablation_label and model.has_xi and cell.sampler in ("ddpm", "ddim"):
                    settings.append(("no_xi_denoise", 1.0, False))
                for setting, lam_s, xi in settings:
                    for s in ev.seeds:
                        score = partial.get(f"{cell.key} lambda={lam_s!r} xi={xi} seed={s}",
                                            lambda cell=cell, s=s, lam_s=lam_s, xi=xi:
                                            self.test_score(model, cell, s, lam=lam_s, xi_denoise=xi))
                        rows.append({"variant": v.label, "train_seed": seed, "sampler": cell.sampler,
                                     "steps": cell.steps, "setting": setting, "lambda": lam_s, "xi_denoise": xi,
                                     "seed": s, "score": score})
                for setting, source in copies:
                    rows += [dict(r, setting=setting) for r in rows if r["sampler"] == cell.sampler
                             and r["steps"] == cell.steps and r["setting"] == source]
            _write_jsonl(folder / "rows.jsonl", rows)
            return {"resumed_records": partial.resumed}
        self._unit(self.unit_dir("eval", v, seed), self.fp("evaluate", v, seed), f"evaluate {v.label} s{seed}", body)

    def stage_curve(self) -> None:
        cv, ev = self.cfg.curve, self.cfg.evaluation
        for v in (v for v in self.variants if v.label in cv.labels):
            def body(folder: Path, v: Variant = v) -> dict:
                model_dir = self.unit_dir("models", v, self.first_seed)
                self._require(model_dir, self.fp("finetune", v, self.first_seed), "finetune")
                points = [(0, self.work / "models" / "pretrained" / FINAL)]
                points += snapshot_folders(model_dir)
                rows = []
                for step, path in points:
                    model = load_model(path, self.cfg.device)
                    for s in cv.seeds:
                        x = generate(model, self.diffusion, self.sampler(cv.cell, xi_denoise=model.has_xi),
                                     cv.num_samples, s, ev.batch_size, self.cfg.device)
                        rows.append({"variant": v.label, "step": step, "seed": s, "score": self.scorer(x, "test")})
                _write_jsonl(folder / "rows.jsonl", rows)
                return {}
            self._unit(self.work / "curve" / v.label, self.fp("curve", v, self.first_seed), f"curve {v.label}", body)

    def stage_diagnostics(self) -> None:
        dg = self.cfg.diagnostics
        test_images = self.scorer.native["test"]
        x0 = test_images[:dg.num_images]
        for v in self.variants:
            def body(folder: Path, v: Variant = v) -> dict:
                model = self.model(v)
                errors, variances = [], []
                for cell in dg.samplers:
                    errors += [dict(r, variant=v.label, sampler=cell.key) for r in
                               step_errors(model, self.diffusion, cell, x0, dg.seed, self.cfg.device,
                                           clip_sample=self.cfg.clip_sample)]
                    variances += [dict(r, variant=v.label, sampler=cell.key) for r in
                                  variance_error(model, self.diffusion, cell, test_images, dg.num_trajectories, dg.seed,
                                                 self.cfg.device, clip_sample=self.cfg.clip_sample)]
                _write_jsonl(folder / "step_errors.jsonl", errors)
                _write_jsonl(folder / "variance_error.jsonl", variances)
                return {}
            self._unit(self.work / "diagnostics" / v.label, self.fp("diagnostics", v, self.first_seed),
                       f"diagnostics {v.label}", body)

    def stage_samples(self) -> None:
        sp = self.cfg.samples
        for v in self.variants:
            def body(folder: Path, v: Variant = v) -> dict:
                model = self.model(v)
                for cell in sp.cells:
                    x = generate(model, self.diffusion, self.sampler(cell, xi_denoise=model.has_xi), sp.num_images,
                                 sp.seed, self.cfg.evaluation.batch_size, self.cfg.device)
                    torch.save(x, folder / f"{cell.key}.pt")
                return {}
            self._unit(self.work / "samples" / v.label, self.fp("samples", v, self.first_seed), f"samples {v.label}", body)

    def stage_report(self) -> None:
        from benchmarks.exposure_bias.report import write_report

        write_report(self)
