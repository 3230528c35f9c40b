"""Typed config of one MDSS training run.

``python -m training.train --config configs/mdss/<name>.yaml`` validates a YAML file as
:class:`TrainConfig` (unknown keys and bad values fail naming the file and key), then hands
``TrainConfig.model_dump()`` to every Ray Train worker, which validates it again — so the worker
function is a pure function of a plain dict.

The diffusion schedule, the training strategy and the sampler configs live beside their code
(:mod:`training.diffusion`, :mod:`training.strategies`, :mod:`training.samplers`).
"""
from __future__ import annotations

import inspect
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import Field, field_validator, model_validator

from core.config import StrictModel
from core.ray_config import RayConfig
from core.ray_resources import check_custom_resources
from core.tracking import TrackingConfig
from training.diffusion import ScheduleConfig
from training.samplers import SamplerConfig
from training.strategies import StrategyConfig


# Ray's own resources, which custom_resources_per_worker must not name (Ray reads them as CPU/GPU/memory,
# or, in another case, as a custom resource no node offers: a worker that waits forever).
RESERVED_RESOURCES = {
    "CPU": "CPU is not a custom resource: set cpus_per_worker",
    "GPU": "GPU is not a custom resource: set use_gpu (one GPU per worker); Ray's ScalingConfig refuses a GPU "
           "amount with use_gpu false",
    "MEMORY": "memory is not a custom resource (Ray's heap-memory reservation is not configurable here)",
    "OBJECT_STORE_MEMORY": "object_store_memory is not a custom resource",
}

# Strategies whose Strategy.uses_xi is True (the model gets ξ channels); tests check this against build_strategy.
XI_STRATEGIES = ("sdss", "mdss", "sdss_ddim", "mdss_ddim")


class ModelConfig(StrictModel):
    """The network: exactly one of ``unet_config`` (from scratch), ``pretrained`` (an unconditional
    diffusers UNet) or ``pipeline`` (a Stable-Diffusion-style folder, trained in latent space)."""

    unet_config: Optional[dict[str, Any]] = Field(
        None, description="Constructor arguments of a fresh diffusers UNet2DModel (training from scratch).")
    pretrained: Optional[str] = Field(
        None, description="Path or hub id of a pretrained unconditional diffusers UNet2DModel: a UNet folder "
                          "(config.json + weights, e.g. google/ddpm-cifar10-32) or a pipeline folder with a unet/ "
                          "subfolder.")
    subfolder: Optional[str] = Field(
        None, description="Subfolder of `pretrained` holding the UNet. None: 'unet' if a local folder has one, "
                          "else the root.")
    pipeline: Optional[str] = Field(
        None, description="Path or hub id of a Stable-Diffusion-style pipeline (unet/, vae/, text_encoder/, "
                          "tokenizer/, scheduler/): its UNet2DConditionModel is trained on VAE latents of the "
                          "images, conditioned on the frozen text encoder's embedding of the captions.")
    dropout: Optional[float] = Field(
        None, ge=0.0, lt=1.0, description="Override the UNet's dropout when loading `pretrained` "
                                          "(Table A.1: 0.3 for CIFAR-10). None: keep the checkpoint's.")
    gradient_checkpointing: bool = Field(
        False, description="Recompute UNet activations in the backward pass (less memory, ~30% slower).")

    @model_validator(mode="after")
    def _exactly_one_source(self) -> "ModelConfig":
        given = [n for n in ("unet_config", "pretrained", "pipeline") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of unet_config, pretrained, pipeline (got {given or 'none'})")
        if self.subfolder is not None and self.pretrained is None:
            raise ValueError("subfolder only applies to `pretrained`")
        if self.dropout is not None and self.pretrained is None:
            raise ValueError("dropout overrides a `pretrained` UNet; put it in unet_config when training from "
                             "scratch")
        return self

    @field_validator("unet_config")
    @classmethod
    def _known_unet_args(cls, value: Optional[dict]) -> Optional[dict]:
        if value is None:
            return value
        from diffusers import UNet2DModel  # lazily: validating a config should not import diffusers eagerly

        known = set(inspect.signature(UNet2DModel.__init__).parameters) - {"self"}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"not UNet2DModel arguments: {unknown}")
        return value

    @property
    def text_conditional(self) -> bool:
        return self.pipeline is not None


class _DataBase(StrictModel):
    limit: Optional[int] = Field(None, ge=1, description="Use only the first N items (smoke tests, tiny runs).")
    random_flip: bool = Field(False, description="Flip each drawn image horizontally with probability 1/2.")
    loader_workers: int = Field(0, ge=0, description="DataLoader worker processes per training worker.")


class FashionMNISTData(_DataBase):
    """Fashion-MNIST from the Debian package dataset-fashion-mnist, 1×32×32."""

    kind: Literal["fashion_mnist"] = Field(description="Data source kind.")
    root: str = Field("/usr/share/datasets/fashion-mnist", description="Folder with the idx .gz files.")
    split: Literal["train", "test"] = Field("train", description="Which idx file pair to read.")


class ImageFolderData(_DataBase):
    """Every image under a folder (recursive), centre-cropped and resized."""

    kind: Literal["image_folder"] = Field(description="Data source kind.")
    path: str = Field(description="Folder of images (.png .jpg .jpeg .webp .bmp).")
    image_size: int = Field(ge=8, description="Square side in pixels after resize and centre crop.")
    channels: Literal[1, 3] = Field(3, description="1: greyscale, 3: RGB.")


class CaptionedImagesData(_DataBase):
    """Images with captions for text-conditional (latent) training."""

    kind: Literal["captioned_images"] = Field(description="Data source kind.")
    path: str = Field(description="Folder holding the images and the captions file.")
    captions_file: Optional[str] = Field(
        None, description="captions.jsonl ({'file','text'} per line) or .csv (columns file,text), relative to "
                          "`path`. None: captions.jsonl, else captions.csv.")
    image_size: int = Field(ge=8, description="Square side in pixels fed to the VAE (512 for SD 1.5).")
    caption_dropout: float = Field(
        0.0, ge=0.0, le=1.0, description="Probability of training on the empty caption (keeps classifier-free "
                                         "guidance working).")


DataConfig = Annotated[Union[FashionMNISTData, ImageFolderData, CaptionedImagesData], Field(discriminator="kind")]


class OptimizerConfig(StrictModel):
    """AdamW (the thesis trains every model with AdamW)."""

    lr: float = Field(1e-4, gt=0, description="Peak learning rate (Table A.1: 1e-4 CIFAR-10 and LSUN, 1e-5 ImageNet).")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW decoupled weight decay.")
    eps: float = Field(1e-8, gt=0, description="AdamW epsilon.")
    warmup_steps: int = Field(0, ge=0, description="Linear learning-rate warm-up from 0 over this many steps.")


class EMAConfig(StrictModel):
    """Exponential moving average of the weights (used for the sample grids and saved with each checkpoint)."""

    decay: float = Field(0.9999, ge=0.0, lt=1.0, description="EMA rate (Table A.1: 0.9999).")
    warmup: bool = Field(
        False, description="Ramp the rate as min(decay, (1+n)/(10+n)) over update n (good from scratch); False: "
                           "constant rate from the start (fine-tuning, where the EMA starts at the pretrained "
                           "weights).")


class SampleGridConfig(StrictModel):
    """A PNG grid of samples from the EMA weights, written into some checkpoints."""

    every: int = Field(0, ge=0, description="Write a grid at every checkpoint whose step is a multiple of this "
                                            "(must be a multiple of checkpoint_every). 0: never.")
    num_images: int = Field(16, ge=1, description="Images in the grid.")
    seed: int = Field(0, description="Sampling seed (the same seed at every checkpoint, so grids are comparable).")
    sampler: SamplerConfig = Field(default_factory=SamplerConfig, description="Which sampler draws the grid.")
    prompts: list[str] = Field(
        default_factory=list, description="Text-conditional runs: prompts, cycled over the grid's images.")


class FIDEvalConfig(StrictModel):
    """FID of EMA samples against the run's own first training images, at some checkpoints (a training-progress
    signal logged beside the losses, not a test-set FID: the exposure-bias benchmark does that)."""

    every: int = Field(0, ge=0, description="Score at every checkpoint whose step is a multiple of this (a multiple of "
                                            "checkpoint_every). 0: never.")
    num_images: int = Field(500, ge=2, description="Samples drawn and reference images read (the first N of the "
                                                   "data).")
    feature_net: Optional[str] = Field(
        None, description="Folder of the project's Fashion-MNIST feature network (metric fid_featurenet; 1×32×32 "
                          "images; `python -m benchmarks.exposure_bias --stage feature_net` trains it).")
    inception_weights: Optional[str] = Field(
        None, description="torch-fidelity's FID Inception-v3 weights file (metric fid_inception; needs the "
                          "torch-fidelity package). Give exactly one of feature_net and inception_weights.")
    seed: int = Field(0, description="Sampling seed (the same at every checkpoint, so scores are comparable).")
    sampler: SamplerConfig = Field(default_factory=SamplerConfig, description="Which sampler draws the samples.")

    @model_validator(mode="after")
    def _one_network(self) -> "FIDEvalConfig":
        if self.every and (self.feature_net is None) == (self.inception_weights is None):
            raise ValueError("fid.every is set: give exactly one of fid.feature_net and fid.inception_weights")
        return self

    @property
    def metric_name(self) -> str:
        return "fid_inception" if self.inception_weights else "fid_featurenet"


class TrainConfig(StrictModel):
    """One data-parallel MDSS (or baseline) training run on Ray Train."""

    name: str = Field(description="Run name: the folder under run_dir holding its checkpoints. Rerunning with "
                                  "the same run_dir and name resumes from the latest checkpoint.")
    run_dir: str = Field("runs/mdss", description="Ray Train storage_path: a local folder (relative to the "
                                                  "driver's cwd), shared folder or URI (s3://...).")
    model: ModelConfig = Field(description="The network to train.")
    data: DataConfig = Field(description="Training images.")
    schedule: ScheduleConfig = Field(description="Noise schedule of the diffusion process.")
    strategy: StrategyConfig = Field(description="Training strategy: ddpm, ip, ss, sdss, mdss, ...")
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig, description="AdamW settings.")
    ema: EMAConfig = Field(default_factory=EMAConfig, description="Weight EMA.")
    grad_clip: Optional[float] = Field(1.0, gt=0, description="Clip the global gradient norm to this. None: off.")
    batch_size: int = Field(ge=1, description="Images per worker per step (global batch = batch_size × num_workers; "
                                              "Table A.1's 128 on 2 GPUs is 64 per worker).")
    total_steps: int = Field(ge=1, description="Optimiser steps of the whole run (Table A.1 'Iterations').")
    checkpoint_every: int = Field(ge=1, description="Save model + EMA + optimiser + step every N steps (and at "
                                                    "the end).")
    keep_checkpoints: Optional[int] = Field(3, ge=1, description="Keep only the newest N checkpoints. None: all.")
    log_every: int = Field(50, ge=1, description="Report mean loss terms and strategy mix every N steps.")
    sample: SampleGridConfig = Field(default_factory=SampleGridConfig, description="Sample grids.")
    fid: FIDEvalConfig = Field(default_factory=FIDEvalConfig, description="Periodic FID during training.")
    tracking: TrackingConfig = Field(
        default_factory=lambda: TrackingConfig(experiment="expectdiff-mdss"),
        description="MLflow tracking: params, losses, learning rate, throughput, FID, sample grids and the final "
                    "checkpoint's path, logged from the rank-0 worker; a relaunch continues the same MLflow run.")
    num_workers: int = Field(1, ge=1, description="Ray Train workers (data-parallel replicas).")
    use_gpu: bool = Field(False, description="One GPU per worker.")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs reserved per worker.")
    custom_resources_per_worker: dict[str, float] = Field(
        default_factory=dict,
        description="Ray custom resources each worker also reserves, on top of cpus_per_worker and use_gpu's GPU: "
                    "e.g. {gpu_small: 1} puts every worker on a node of cluster.yaml's gpu_small type, alone on its "
                    "GPU (serving roles there ask for fractions of it). Amounts in (0, 64]; above 1 whole numbers; "
                    "at most 4 decimals (Ray's resource precision). CPU and GPU are not custom resources: use "
                    "cpus_per_worker and use_gpu. {}: no custom resource (any node with the CPUs/GPU).")
    bf16: bool = Field(True, description="bf16 autocast for forward passes on GPU (ignored on CPU).")
    seed: int = Field(0, description="Seeds model init, data order, noise and timesteps.")
    max_failures: int = Field(3, ge=-1, description="Worker-group restarts (each resumes from the latest "
                                                    "checkpoint) before the run fails; -1: unlimited.")
    ray: RayConfig = Field(default_factory=RayConfig, description="How the driver reaches Ray.")
    inject_crash_at_step: Optional[int] = Field(
        None, ge=1, description="TESTS ONLY (fault injection): rank 0 hard-exits (os._exit) just before this step, "
                                "once per run folder (a marker file in the run folder stops a second crash). "
                                "Leave None.")

    @field_validator("custom_resources_per_worker")
    @classmethod
    def _custom_resources(cls, value: dict[str, float]) -> dict[str, float]:
        return check_custom_resources(value, "custom_resources_per_worker", RESERVED_RESOURCES)

    def worker_resources(self) -> dict[str, float]:
        """What each Ray Train worker reserves (``ScalingConfig.resources_per_worker``): CPUs, one GPU when
        ``use_gpu``, and the custom resources that pin it to a node type."""
        return {"CPU": self.cpus_per_worker, **({"GPU": 1.0} if self.use_gpu else {}),
                **{k: float(v) for k, v in self.custom_resources_per_worker.items()}}

    @model_validator(mode="after")
    def _consistent(self) -> "TrainConfig":
        if self.sample.every and self.sample.every % self.checkpoint_every:
            raise ValueError(f"sample.every ({self.sample.every}) must be a multiple of checkpoint_every "
                             f"({self.checkpoint_every}): grids are written into checkpoints")
        text_data = self.data.kind == "captioned_images"
        if text_data != self.model.text_conditional:
            raise ValueError("captioned_images data goes with model.pipeline (text-conditional), and only with it")
        if self.sample.every and self.sample.sampler.xi_denoise and self.strategy.name not in XI_STRATEGIES:
            raise ValueError(f"sample.sampler.xi_denoise needs a ξ head, which strategy {self.strategy.name!r} does "
                             f"not train: set sample.sampler.xi_denoise=false")
        if self.fid.every:
            if self.fid.every % self.checkpoint_every:
                raise ValueError(f"fid.every ({self.fid.every}) must be a multiple of checkpoint_every "
                                 f"({self.checkpoint_every}): FID is scored at checkpoints")
            if self.model.text_conditional:
                raise ValueError("fid applies to pixel-space models; a text-conditional (latent) run has no FID here")
            if self.fid.feature_net is not None and not (self.data.kind == "fashion_mnist" or (
                    getattr(self.data, "channels", 3) == 1 and getattr(self.data, "image_size", 0) == 32)):
                raise ValueError("fid.feature_net scores 1×32×32 images (Fashion-MNIST's feature network); this data "
                                 "is not: use fid.inception_weights")
            if self.fid.sampler.xi_denoise and self.strategy.name not in XI_STRATEGIES:
                raise ValueError(f"fid.sampler.xi_denoise needs a ξ head, which strategy {self.strategy.name!r} does "
                                 f"not train: set fid.sampler.xi_denoise=false")
        if self.sample.prompts and not self.model.text_conditional:
            raise ValueError("sample.prompts only apply to a text-conditional model (model.pipeline)")
        return self
