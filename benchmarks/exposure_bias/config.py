"""The protocol's typed config and its two presets, ``quick`` (CI smoke run) and ``full`` (the recorded run).

Every stage fingerprints the part of this config it depends on (plus its inputs' fingerprints), so a
rerun skips a stage whose artefacts exist for the same settings and redoes it when they changed.
"""
from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field, model_validator

from core.config import StrictModel
from training.diffusion import ScheduleConfig
from training.metrics.feature_net import FeatureNetTrainConfig
from training.samplers import SamplerName
from training.strategies import StrategyConfig


class TrainSpec(StrictModel):
    """One single-process training run (pretraining or one fine-tuning variant)."""

    steps: int = Field(ge=1, description="Optimiser steps.")
    batch_size: int = Field(ge=1, description="Images per step.")
    lr: float = Field(gt=0, description="AdamW learning rate (constant after warm-up).")
    warmup_steps: int = Field(0, ge=0, description="Linear learning-rate warm-up.")
    ema_decay: float = Field(ge=0, lt=1, description="EMA rate; the EMA weights are what gets sampled.")
    ema_warmup: bool = Field(description="Ramp the EMA rate (from scratch) or not (fine-tuning).")
    grad_clip: float = Field(1.0, gt=0, description="Global gradient-norm clip.")
    checkpoint_every: int = Field(ge=1, description="Write a resumable checkpoint every N steps.")
    snapshot_every: int = Field(0, ge=0, description="Keep the EMA weights every N steps (metric-vs-iterations); 0: none.")
    seed: int = Field(0, description="Seeds batches, timesteps and noise (the same for every variant: common random numbers).")


class Variant(StrictModel):
    """One fine-tuning method: a label and the strategy it trains with."""

    label: str = Field(pattern=r"^[a-z0-9_]+$", description="Name used in tables and folders, e.g. mdss_k4.")
    strategy: StrategyConfig = Field(description="The training strategy.")
    oracle_rollout: bool = Field(False, description="Chain-only control: the chain's one-step prediction uses the "
                                                    "true ε instead of the model's, so x̂_t = x_t and only the chain's "
                                                    "effect on the input (e.g. the posterior mean's noise shrinkage) "
                                                    "remains, with no model error.")

    @model_validator(mode="after")
    def _check(self) -> "Variant":
        if self.oracle_rollout and self.strategy.name in ("ddpm", "ip"):
            raise ValueError(f"{self.label}: oracle_rollout needs a strategy with a sampling chain, not {self.strategy.name}")
        return self


class Cell(StrictModel):
    """A sampler at a number of steps."""

    sampler: SamplerName = Field(description="ddpm, ddim, dpm1, dpm2 or dpm3.")
    steps: int = Field(ge=1, description="Sampling steps.")

    @property
    def key(self) -> str:
        return f"{self.sampler}_{self.steps}"


class EvalSpec(StrictModel):
    """How the method × sampler × steps grid is scored."""

    cells: list[Cell] = Field(description="Sampler/steps cells of the main tables.")
    num_samples: int = Field(ge=2, description="Generated images per (cell, seed).")
    seeds: list[int] = Field(min_length=1, description="Sampling seeds; cells report mean ± std over them.")
    lambda_grid: list[float] = Field(description="ε-scaling candidates λ (1.0 = off) searched on the held-out split.")
    lambda_grid_extended: Optional[list[float]] = Field(None, description="More λ searched beside ``lambda_grid`` "
                                                        "(issue #28: the side probe's factors made part of the "
                                                        "protocol). The held-out search then scores the union, and "
                                                        "the ε-scaled variants get two choices from the same held-out "
                                                        "scores: ``eps_scaled`` (best of lambda_grid) and "
                                                        "``eps_scaled_ext`` (best of the union). None: no extension.")
    lambda_samples: int = Field(ge=2, description="Images per λ candidate in the held-out search.")
    lambda_seed: int = Field(10_000, description="Sampling seed of the λ search (never one of `seeds`).")
    lambda_labels: Optional[list[str]] = Field(None, description="Variants that get the λ search and the ε-scaled "
                                                                 "cells (None: every variant).")
    batch_size: int = Field(256, ge=1, description="Images per sampling batch.")
    xi_ablation_label: str = Field("sdss", description="Variant sampled also without ξ-denoising (Table 3.5).")
    k_selection_labels: list[str] = Field(default_factory=list, description="MDSS variants (one per k) among which "
                                          "'mdss (k by held-out)' picks, per cell and training seed, the one with the "
                                          "best held-out score: k is never chosen on the test split.")
    bootstrap: int = Field(2000, ge=100, description="Bootstrap resamples of the training-seed confidence intervals.")

    @model_validator(mode="after")
    def _check(self) -> "EvalSpec":
        if 1.0 not in self.lambda_grid:
            raise ValueError("lambda_grid must contain 1.0 (no scaling) so the search can decline to scale")
        if self.lambda_seed in self.seeds:
            raise ValueError("lambda_seed must differ from the evaluation seeds")
        if self.lambda_grid_extended is not None and (not self.lambda_grid_extended
                                                      or set(self.lambda_grid_extended) & set(self.lambda_grid)
                                                      or min(self.lambda_grid_extended) <= 0):
            raise ValueError("lambda_grid_extended must hold positive λ that are not in lambda_grid")
        return self


class NoiseFloorSpec(StrictModel):
    """The metric's spread over seeds before any comparison: real-vs-real and the pretrained model."""

    cell: Cell = Field(description="Sampler cell for the pretrained model's spread.")
    sizes: list[int] = Field(description="Set sizes whose spread is measured.")
    seeds: list[int] = Field(min_length=2, description="Seeds per size.")


class CurveSpec(StrictModel):
    """Metric vs fine-tuning iterations (Figure 3.3), from the EMA snapshots."""

    labels: list[str] = Field(description="Variants to follow.")
    cell: Cell = Field(description="Sampler cell (the thesis used DDPM with its largest step count).")
    num_samples: int = Field(ge=2, description="Images per (snapshot, seed).")
    seeds: list[int] = Field(min_length=1, description="Sampling seeds.")


class DiagnosticsSpec(StrictModel):
    """ε-error per step (Figure 3.2) and the variance error along the trajectory."""

    samplers: list[Cell] = Field(description="Sampler grids on which per-step errors are measured (ddpm/ddim only).")
    num_images: int = Field(ge=2, description="Test images (clean / one-step / fully-sampled inputs).")
    num_trajectories: int = Field(ge=2, description="Samples drawn from noise for the variance error.")
    seed: int = Field(0, description="Seed of images, noise and sampling.")

    @model_validator(mode="after")
    def _check(self) -> "DiagnosticsSpec":
        bad = [c.sampler for c in self.samplers if c.sampler not in ("ddpm", "ddim")]
        if bad:
            raise ValueError(f"diagnostics support ddpm/ddim grids only, got {bad}")
        return self


class SamplesSpec(StrictModel):
    """Image grids for a qualitative comparison (thesis Fig. 3.4): every variant from the same initial noise."""

    cells: list[Cell] = Field(min_length=1, description="Sampler cells, one grid each.")
    num_images: int = Field(ge=1, le=64, description="Images per variant (one grid row).")
    seed: int = Field(0, description="Sampling seed: the same initial noise for every variant.")


class PretrainCurveSpec(StrictModel):
    """Is the pretrained model converged? The metric at every pretraining snapshot, and the final model at several
    DDIM step counts (on a converged model more steps should not be worse)."""

    cell: Cell = Field(description="Sampler cell scored at every snapshot.")
    num_samples: int = Field(ge=2, description="Images per snapshot.")
    seed: int = Field(0, description="Sampling seed (the same noise at every snapshot).")
    final_cells: list[Cell] = Field(description="Cells the final pretrained model is scored at (e.g. DDIM 10/30/100).")
    converged_below: float = Field(0.05, gt=0, lt=1, description="Converged when the last quarter of pretraining "
                                                                  "improves the metric by less than this fraction.")


class ExtraSeeds(StrictModel):
    """More fine-tuning runs for some variants only (issue #28: six training seeds on the headline methods). The
    seeds of ``train_seeds`` stay the same units for every variant; these are new units of the named variants, so a
    run with them reuses every unit of the run without them."""

    seeds: list[int] = Field(min_length=1, description="Training seeds beyond train_seeds.")
    labels: list[str] = Field(min_length=1, description="Variants that get them (with the DDPM fine-tune: the "
                                                        "baseline every paired difference needs).")


class ImageFolders(StrictModel):
    """Another dataset than Fashion-MNIST: its images as files (e.g. CIFAR-10 exported to PNG), any layout below
    each folder, read sorted; the reference splits come from the first images of ``test``."""

    train: str = Field(description="Folder of training images.")
    test: str = Field(description="Folder of test images (held-out and test references).")
    channels: Literal[1, 3] = Field(3, description="1 (grey) or 3 (RGB).")
    limit: Optional[int] = Field(None, ge=1, description="Use only the first N training images.")


class ProtocolConfig(StrictModel):
    """The whole exposure-bias benchmark."""

    preset: str = Field(description="quick or full (recorded in every output).")
    data_root: str = Field("/usr/share/datasets/fashion-mnist", description="Fashion-MNIST idx files.")
    image_folders: Optional[ImageFolders] = Field(None, description="Train and test images from folders instead of "
                                                                    "Fashion-MNIST (RGB needs inception_weights).")
    pretrained: Optional[str] = Field(None, description="A diffusers UNet2DModel folder (e.g. a local snapshot of "
                                                        "google/ddpm-cifar10-32) used as the pretrained model instead "
                                                        "of pretraining one here.")
    train_limit: Optional[int] = Field(None, ge=1, description="Use only the first N training images.")
    val_size: int = Field(ge=2, description="Held-out reference images (λ search): the first N of the test split.")
    test_size: int = Field(ge=2, description="Reference images of the reported metric: the next N of the test split.")
    feature_net: FeatureNetTrainConfig = Field(description="Training of the FID feature network.")
    inception_weights: Optional[str] = Field(None, description="torch-fidelity Inception-v3 weights file: use standard "
                                                              "FID instead of the feature network.")
    schedule: ScheduleConfig = Field(description="Diffusion noise schedule.")
    unet_config: Optional[dict[str, Any]] = Field(None, description="diffusers UNet2DModel arguments of the model "
                                                                    "pretrained here (exactly one of this and "
                                                                    "`pretrained`).")
    image_size: int = Field(32, description="Training and sampling resolution: 32 (Fashion-MNIST padded) or 16 "
                                            "(2×2 average-pooled); the metric sees both at 32×32.")
    pretrain: TrainSpec = Field(description="DDPM pretraining from scratch (the 'well-trained model').")
    pretrain_curve: Optional[PretrainCurveSpec] = Field(None, description="Convergence evidence of the pretrained model.")
    finetune: TrainSpec = Field(description="Fine-tuning budget, identical for every variant.")
    train_seeds: list[int] = Field(default_factory=lambda: [0], min_length=1,
                                   description="Independent fine-tuning runs per variant (seed offsets of batches, "
                                               "timesteps and noise; every variant of one seed shares them).")
    extra_seeds: Optional[ExtraSeeds] = Field(None, description="More training seeds for some variants (on every "
                                                              "evaluation cell).")
    variants: list[Variant] = Field(min_length=1, description="Fine-tuning methods.")
    evaluation: EvalSpec = Field(description="Main grid.")
    noise_floor: NoiseFloorSpec = Field(description="Metric spread.")
    curve: CurveSpec = Field(description="Metric vs iterations.")
    diagnostics: DiagnosticsSpec = Field(description="Per-step ε error and variance error.")
    samples: SamplesSpec = Field(description="Qualitative comparison grids.")
    clip_sample: Optional[bool] = Field(None, description="Clip the predicted x₀ to [-1, 1] at every DDPM/DDIM step "
                                                          "(None: diffusers' default, True). diffusers' DDIM then keeps "
                                                          "the unclipped ε for the direction term, which drifts samples "
                                                          "brighter over many steps (docs/exposure_bias.md).")
    device: str = Field("cpu", description="torch device for training and sampling.")
    threads: Optional[int] = Field(None, ge=1, description="torch.set_num_threads (None: torch's default).")

    @model_validator(mode="after")
    def _check(self) -> "ProtocolConfig":
        labels = [v.label for v in self.variants]
        if len(set(labels)) != len(labels):
            raise ValueError(f"variant labels must be unique, got {labels}")
        for name, wanted in (("curve.labels", self.curve.labels), ("evaluation.xi_ablation_label",
                                                                   [self.evaluation.xi_ablation_label]),
                             ("evaluation.lambda_labels", self.evaluation.lambda_labels or [])):
            missing = sorted(set(wanted) - set(labels))
            if missing:
                raise ValueError(f"{name} names unknown variants {missing}")
        if self.val_size + self.test_size > 10_000:
            raise ValueError("val_size + test_size must fit in the 10,000 test images")
        missing = sorted(set(self.evaluation.k_selection_labels) - set(labels))
        if missing:
            raise ValueError(f"evaluation.k_selection_labels names unknown variants {missing}")
        if self.image_size not in (16, 32):
            raise ValueError(f"image_size must be 16 or 32, got {self.image_size}")
        if (self.unet_config is None) == (self.pretrained is None):
            raise ValueError("give exactly one of unet_config (pretrain here) and pretrained (a UNet folder)")
        if self.unet_config is not None and self.unet_config.get("sample_size") != self.image_size:
            raise ValueError(f"unet_config.sample_size {self.unet_config.get('sample_size')} differs from image_size "
                             f"{self.image_size}")
        if self.image_folders is not None and self.image_folders.channels == 3 and not self.inception_weights:
            raise ValueError("RGB image folders need inception_weights: the feature network is Fashion-MNIST's (grey)")
        if len(set(self.train_seeds)) != len(self.train_seeds):
            raise ValueError(f"train_seeds must be distinct, got {self.train_seeds}")
        if self.extra_seeds is not None:
            self._check_extra_seeds(labels)
        return self

    def _check_extra_seeds(self, labels: list[str]) -> None:
        x = self.extra_seeds
        if len(set(x.seeds)) != len(x.seeds) or set(x.seeds) & set(self.train_seeds):
            raise ValueError(f"extra_seeds.seeds must be distinct and not in train_seeds, got {x.seeds}")
        missing = sorted(set(x.labels) - set(labels))
        if missing:
            raise ValueError(f"extra_seeds.labels names unknown variants {missing}")
        if "ddpm" in labels and "ddpm" not in x.labels:
            raise ValueError("extra_seeds.labels must include ddpm: every paired difference needs the baseline's seed")
        # a held-out choice among the k candidates (and the chain-only row at the chosen k) needs all of them
        cands = self.evaluation.k_selection_labels
        for group in (cands, [c for c in map(self.chain_only_for, cands) if c]):
            if 0 < len(set(group) & set(x.labels)) < len(group):
                raise ValueError(f"extra_seeds.labels must hold all or none of {group}")

    def all_train_seeds(self) -> list[int]:
        """Every training seed of the run: ``train_seeds``, then the extra seeds."""
        return list(self.train_seeds) + (list(self.extra_seeds.seeds) if self.extra_seeds else [])

    def seeds_for(self, label: str) -> list[int]:
        """The training seeds of one variant."""
        extra = self.extra_seeds.seeds if self.extra_seeds and label in self.extra_seeds.labels else []
        return list(self.train_seeds) + list(extra)

    def chain_only_for(self, label: str) -> Optional[str]:
        """The chain-only control of an MDSS variant: the variant with the same strategy and the oracle rollout."""
        v = next((v for v in self.variants if v.label == label), None)
        if v is None or v.oracle_rollout:
            return None
        return next((c.label for c in self.variants if c.oracle_rollout and c.strategy == v.strategy), None)

    def searched_labels(self) -> list[str]:
        """Variants with a held-out search: the ε-scaled ones (full λ grid) and the k candidates (λ = 1 only)."""
        wanted = set(self.scaled_labels()) | set(self.evaluation.k_selection_labels)
        return [v.label for v in self.variants if v.label in wanted]

    def lambda_grid_for(self, label: str) -> list[float]:
        """The λ the held-out search scores for ``label``: [1.0] for a k candidate that is not ε-scaled."""
        ev = self.evaluation
        if label not in self.scaled_labels():
            return [1.0]
        if ev.lambda_grid_extended is None:
            return list(ev.lambda_grid)
        return sorted(set(ev.lambda_grid) | set(ev.lambda_grid_extended))

    def scaled_labels(self) -> list[str]:
        """Variants that get the ε-scaling search and the scaled cells."""
        wanted = self.evaluation.lambda_labels
        return [v.label for v in self.variants if wanted is None or v.label in wanted]


def _variants(ks: list[int], ddim_k: int) -> list[Variant]:
    s = StrategyConfig
    out = [Variant(label="ddpm", strategy=s(name="ddpm")),
           # IP as published (Ning et al. 2023): every batch perturbed, γ = 0.1
           Variant(label="ip", strategy=s(name="ip", ip_gamma=0.1, prob_start=1.0, prob_max=1.0)),
           Variant(label="ss", strategy=s(name="ss")),
           Variant(label="sdss", strategy=s(name="sdss"))]
    out += [Variant(label=f"mdss_k{k}", strategy=s(name="mdss", k=k)) for k in ks]
    out += [Variant(label="sdss_ddim", strategy=s(name="sdss_ddim")),
            Variant(label=f"mdss_ddim_k{ddim_k}", strategy=s(name="mdss_ddim", k=ddim_k))]
    return out


def _controls(k: int) -> list[Variant]:
    """The controls that decide what MDSS does (issue #13): the posterior *sample* chains (x_t keeps the forward
    marginal's noise) beside the default posterior-mean ones, and the chain-only control (the k-step chain with the
    true ε: the chain's input shrinkage alone, no model error)."""
    s = StrategyConfig
    return [Variant(label="sdss_sample", strategy=s(name="sdss", posterior="sample")),
            Variant(label=f"mdss_k{k}_sample", strategy=s(name="mdss", k=k, posterior="sample")),
            _chain_only(k)]


def _chain_only(k: int) -> Variant:
    """MDSS k's chain with the true ε in its rollout (``oracle_rollout``): its strategy is ``mdss_k{k}``'s, so
    ``ProtocolConfig.chain_only_for`` pairs the two."""
    return Variant(label=f"chain_only_k{k}", strategy=StrategyConfig(name="mdss", k=k), oracle_rollout=True)


def _cells(spec: dict[str, list[int]]) -> list[Cell]:
    return [Cell(sampler=name, steps=n) for name, steps in spec.items() for n in steps]


def quick() -> ProtocolConfig:
    """Small enough for CI (about 2-3 min on 2 shared cores); its numbers mean nothing. It runs every feature of
    the converged protocol: 16×16 images, two training seeds, the controls, the pretraining curve, k by held-out."""
    unet = dict(sample_size=16, in_channels=1, out_channels=1, block_out_channels=[8, 16], layers_per_block=1,
                down_block_types=["DownBlock2D", "DownBlock2D"], up_block_types=["UpBlock2D", "UpBlock2D"],
                norm_num_groups=4)
    return ProtocolConfig(
        preset="quick", train_limit=2000, val_size=48, test_size=48,
        feature_net=FeatureNetTrainConfig(epochs=1, batch_size=64, train_limit=1024, test_limit=500),
        schedule=ScheduleConfig(kind="linear", num_train_timesteps=100),
        unet_config=unet, image_size=16,
        pretrain=TrainSpec(steps=40, batch_size=16, lr=1e-3, ema_decay=0.9, ema_warmup=True, checkpoint_every=20,
                           snapshot_every=20),
        pretrain_curve=PretrainCurveSpec(cell=Cell(sampler="ddim", steps=4), num_samples=16,
                                         final_cells=_cells({"ddim": [2, 4, 8]})),
        finetune=TrainSpec(steps=6, batch_size=16, lr=1e-4, ema_decay=0.5, ema_warmup=False, checkpoint_every=6,
                           snapshot_every=3),
        train_seeds=[0, 1],
        variants=_variants([4, 2], 4) + _controls(4) + [_chain_only(2)],
        evaluation=EvalSpec(cells=_cells({"ddpm": [4, 8], "ddim": [4, 8], "dpm1": [4], "dpm2": [4], "dpm3": [4]}),
                            num_samples=16, seeds=[0, 1], lambda_grid=[0.99, 1.0, 1.01], lambda_grid_extended=[1.05],
                            lambda_samples=16, lambda_labels=["ddpm", "mdss_k4", "mdss_k2"],
                            k_selection_labels=["mdss_k4", "mdss_k2"], bootstrap=200),
        noise_floor=NoiseFloorSpec(cell=Cell(sampler="ddim", steps=4), sizes=[8, 16], seeds=[0, 1]),
        curve=CurveSpec(labels=["ddpm", "mdss_k4"], cell=Cell(sampler="ddim", steps=4), num_samples=16, seeds=[0]),
        diagnostics=DiagnosticsSpec(samplers=_cells({"ddpm": [8], "ddim": [8]}), num_images=8, num_trajectories=8),
        samples=SamplesSpec(cells=_cells({"ddim": [4]}), num_images=4),
        threads=1,
    )


def full() -> ProtocolConfig:
    """The recorded run, sized to about 3 CPU-hours on this 2-core machine (two processes, one thread each;
    minutes on a GPU). Budget and measured wall times: docs/exposure_bias.md."""
    # Attention only at the 8×8 level: 3.4 ms per image-forward and 0.46 s per batch-64 training step on one
    # thread here, against 5.0 ms and 0.8 s with attention at 16×16 (measured on the idle machine).
    unet = dict(sample_size=32, in_channels=1, out_channels=1, block_out_channels=[16, 32, 32], layers_per_block=1,
                down_block_types=["DownBlock2D", "DownBlock2D", "AttnDownBlock2D"],
                up_block_types=["AttnUpBlock2D", "UpBlock2D", "UpBlock2D"], norm_num_groups=8, attention_head_dim=8,
                dropout=0.1)
    return ProtocolConfig(
        preset="full", val_size=5000, test_size=5000,
        feature_net=FeatureNetTrainConfig(epochs=3),
        schedule=ScheduleConfig(kind="linear", num_train_timesteps=1000),
        unet_config=unet,
        pretrain=TrainSpec(steps=3000, batch_size=64, lr=5e-4, warmup_steps=200, ema_decay=0.995, ema_warmup=True,
                           checkpoint_every=500),
        finetune=TrainSpec(steps=500, batch_size=64, lr=1e-4, ema_decay=0.99, ema_warmup=False,
                           checkpoint_every=250, snapshot_every=100),
        variants=_variants([4, 10], 4),
        # DDIM-30 and DDIM-100 are the thesis' headline cells; DPM-Solver-1 is DDIM, so it is left out.
        evaluation=EvalSpec(cells=_cells({"ddpm": [30], "ddim": [10, 30, 100], "dpm2": [10], "dpm3": [10]}),
                            num_samples=250, seeds=[0, 1, 2], lambda_grid=[1.0, 1.005, 1.015], lambda_samples=250,
                            lambda_labels=["ddpm", "mdss_k4"], batch_size=250),
        noise_floor=NoiseFloorSpec(cell=Cell(sampler="ddim", steps=10), sizes=[250, 500], seeds=[0, 1, 2, 3, 4]),
        curve=CurveSpec(labels=["ddpm", "mdss_k4"], cell=Cell(sampler="ddim", steps=30), num_samples=250, seeds=[0]),
        diagnostics=DiagnosticsSpec(samplers=_cells({"ddpm": [30], "ddim": [30]}), num_images=64,
                                    num_trajectories=64),
        samples=SamplesSpec(cells=_cells({"ddim": [30, 100]}), num_images=12),
        threads=None,
    )


SIX_SEED_LABELS = ["ddpm", "mdss_k4", "mdss_k10", "chain_only_k4", "chain_only_k10"]
"""Issue #28's six-seed methods: the DDPM fine-tune and its ε-scaling, MDSS k = 4 and k = 10 (so k by held-out, and
MDSS + ε-scaling, have six seeds too) and both chain-only controls; on every cell of the converged preset, which
are the headline cells (DDPM-30, DDIM-10/30/100, DPM-Solver-2-10)."""

# The λ of the side probe past the preset grid (docs/exposure_bias_converged/lambda_probe.json), made part of the
# protocol by issue #28: the ε-scaled variants' held-out search scores them beside the preset grid.
PROBE_LAMBDAS = [1.03, 1.04, 1.06, 1.08, 1.10, 1.13]


def converged(seeds: int = 3) -> ProtocolConfig:
    """Issue #13's protocol: a pretrained model that can converge within this machine's budget (16×16
    Fashion-MNIST, a 0.28 M-parameter UNet, 40k pretraining steps = 43 epochs, with its metric curve), the
    controls, three fine-tuning seeds per method, k and a two-sided λ chosen on the held-out split. About 4.5
    CPU-hours here (``python -m benchmarks.exposure_bias.timing --preset converged`` measures and extrapolates).

    Issue #28 adds the decisive controls: ``chain_only_k10``; ε-scaling of MDSS k = 4 and k = 10 (so MDSS with k
    by held-out + ε-scaling is a row); and the side probe's λ (``PROBE_LAMBDAS``) in the held-out search of every
    ε-scaled variant. ``seeds=6`` gives ``SIX_SEED_LABELS`` training seeds 3, 4, 5 as well; every unit of the
    3-seed run (and the pretraining and feature network above all) keeps its fingerprint and folder."""
    if seeds not in (3, 6):
        raise ValueError(f"the converged preset has 3 or 6 training seeds, not {seeds}")
    unet = dict(sample_size=16, in_channels=1, out_channels=1, block_out_channels=[16, 32, 32], layers_per_block=1,
                down_block_types=["DownBlock2D", "DownBlock2D", "AttnDownBlock2D"],
                up_block_types=["AttnUpBlock2D", "UpBlock2D", "UpBlock2D"], norm_num_groups=8, attention_head_dim=8,
                dropout=0.1)
    headline = Cell(sampler="ddim", steps=30)
    return ProtocolConfig(
        preset="converged", val_size=5000, test_size=5000,
        feature_net=FeatureNetTrainConfig(epochs=3),
        schedule=ScheduleConfig(kind="linear", num_train_timesteps=1000),
        unet_config=unet, image_size=16,
        # 20k steps (21 epochs) left the last quarter still improving DDIM-30 FID by 10 % (stage 1,
        # docs/exposure_bias_converged/): 40k continues that run (Protocol._extend_pretraining); 1,000 images per
        # snapshot halve the curve's sampling noise.
        pretrain=TrainSpec(steps=40_000, batch_size=64, lr=5e-4, warmup_steps=500, ema_decay=0.999, ema_warmup=True,
                           checkpoint_every=1000, snapshot_every=2000),
        pretrain_curve=PretrainCurveSpec(cell=headline, num_samples=1000, final_cells=_cells({"ddim": [10, 30, 100]})),
        finetune=TrainSpec(steps=1000, batch_size=64, lr=1e-4, ema_decay=0.995, ema_warmup=False,
                           checkpoint_every=250, snapshot_every=250),
        train_seeds=[0, 1, 2],
        extra_seeds=ExtraSeeds(seeds=[3, 4, 5], labels=SIX_SEED_LABELS) if seeds == 6 else None,
        variants=_variants([4, 10], 4) + _controls(4) + [_chain_only(10)],
        # Stage 1's diagnosis (ddim_diagnosis.json): with diffusers' default clipping DDIM-100 is worse than
        # DDIM-30 and drifts brighter; without it FID falls 10 → 30 → 100 steps.
        clip_sample=False,
        evaluation=EvalSpec(cells=_cells({"ddpm": [30], "ddim": [10, 30, 100], "dpm2": [10]}),
                            num_samples=500, seeds=[0, 1], batch_size=500,
                            lambda_grid=[0.98, 0.99, 0.995, 1.0, 1.005, 1.01, 1.02],
                            lambda_grid_extended=PROBE_LAMBDAS, lambda_samples=500,
                            lambda_labels=["ddpm", "mdss_k4", "mdss_k10"], k_selection_labels=["mdss_k4", "mdss_k10"]),
        noise_floor=NoiseFloorSpec(cell=Cell(sampler="ddim", steps=10), sizes=[500], seeds=[0, 1, 2, 3, 4]),
        curve=CurveSpec(labels=["ddpm", "mdss_k4"], cell=headline, num_samples=500, seeds=[0]),
        diagnostics=DiagnosticsSpec(samplers=_cells({"ddpm": [30], "ddim": [30]}), num_images=64, num_trajectories=64),
        samples=SamplesSpec(cells=_cells({"ddim": [30, 100]}), num_images=12),
        threads=None,
    )


def gpu_cifar10(train_images: str, test_images: str, pretrained: str, inception_weights: str) -> ProtocolConfig:
    """The converged protocol on the thesis' data, for one GPU: CIFAR-10 (exported as PNG folders: 50k train,
    10k test), the released DDPM CIFAR-10 UNet (a local snapshot of google/ddpm-cifar10-32: 1000-step linear
    schedule, as here) as the pretrained model, Inception FID on 5,000 images per set against 5,000 references.
    Fine-tuning is 5k steps, not the thesis' 50k (Table A.1): 33 fine-tuning runs (11 methods × 3 seeds) of 50k
    steps each would be far beyond one GPU-day. Not run here (no GPU, no CIFAR-10, no Inception weights); the
    cost knobs are ``finetune.steps``, ``evaluation.num_samples`` and the variant list."""
    base = converged()
    return ProtocolConfig.model_validate({**base.model_dump(), **dict(
        preset="gpu_cifar10", image_size=32, unet_config=None, pretrained=pretrained,
        image_folders=ImageFolders(train=train_images, test=test_images, channels=3),
        inception_weights=inception_weights, device="cuda", pretrain_curve=PretrainCurveSpec(
            cell=Cell(sampler="ddim", steps=30), num_samples=5000, final_cells=_cells({"ddim": [10, 30, 100]})),
        finetune=TrainSpec(steps=5000, batch_size=128, lr=1e-4, ema_decay=0.9999, ema_warmup=False,
                           checkpoint_every=1000, snapshot_every=1000),
        evaluation=base.evaluation.model_copy(update=dict(num_samples=5000, lambda_samples=5000, batch_size=1000)),
        noise_floor=NoiseFloorSpec(cell=Cell(sampler="ddim", steps=10), sizes=[5000], seeds=[0, 1, 2]),
        curve=CurveSpec(labels=["ddpm", "mdss_k4"], cell=Cell(sampler="ddim", steps=30), num_samples=5000, seeds=[0]),
        samples=SamplesSpec(cells=_cells({"ddim": [30, 100]}), num_images=16),
    )})


PRESETS = {"quick": quick, "full": full, "converged": converged}
