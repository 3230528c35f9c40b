"""The Ray Train worker function: one pure ``train_loop_per_worker(config)`` run on every worker.

Each worker validates the config dict, builds the model (an ``XiUNet``: with ξ channels when the
strategy trains them), its own data shard, AdamW and the weight EMA, and resumes from
``ray.train.get_checkpoint()`` when Ray hands it one (after a worker-group restart, or when the
same run is launched again). Every ``log_every`` steps all workers report the loss terms and the
strategy mix averaged over the window and over workers; every ``checkpoint_every`` steps rank 0
also writes a checkpoint (see :mod:`training.checkpoint`) — ``ray.train.report`` is a barrier, so
every worker reports at the same steps.

Randomness is a function of ``(seed, rank, step)`` — the batch (see :mod:`training.data`) and one
generator per step for timesteps, noise and the scheduled-sampling draws — so a resumed run takes
the same steps an uninterrupted one would have (up to floating-point reduction order).
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from core.config import expand_path
from training import fid_eval
from training.build import (build_diffusion, load_text_space, load_trainable_from_folder, load_unet,
                            wrap_for_strategy)
from training.checkpoint import (EMA_DIR, MODEL_DIR, SAMPLES_FILE, read_history, read_training_state,
                                 write_checkpoint, write_sample_grid)
from training.conditioning import PixelSpace
from training.config import OptimizerConfig, TrainConfig
from training.data import worker_batches
from training.ema import EMA
from training.strategies import build_strategy

CRASH_MARKER = ".injected_crash_done"
# Ray Train routes worker logging to the driver (a print would show twice: stdout and its log copy).
logger = logging.getLogger(__name__)


def step_seed(seed: int, rank: int, step: int) -> int:
    """Seed of the per-step generator: distinct per worker and step, the same on every attempt."""
    return ((seed * 1_000_003 + step) * 1_009 + rank) % (2**63 - 1)


def learning_rate(cfg: OptimizerConfig, step: int) -> float:
    """Linear warm-up over ``warmup_steps``, then constant."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    return cfg.lr


class MetricWindow:
    """Sums loss terms over the steps since the last report; averages them over steps and workers."""

    NAMES = ("loss", "eps_loss", "xi_loss", "strategy_frac", "grad_norm")

    def __init__(self, device: torch.device):
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.sums = torch.zeros(len(self.NAMES) + 1, dtype=torch.float64, device=self.device)
        self.started = time.perf_counter()

    def add(self, out: dict, grad_norm: Optional[torch.Tensor]) -> None:
        values = [out[n] for n in self.NAMES[:-1]] + [grad_norm if grad_norm is not None else 0.0]
        self.sums += torch.stack([torch.as_tensor(v, device=self.device).detach().double() for v in values]
                                 + [torch.ones((), dtype=torch.float64, device=self.device)])

    def summary(self, world_size: int) -> dict[str, float]:
        """Mean of each term over steps and workers (an all-reduce when there are several workers)."""
        sums = self.sums.clone()
        if world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(sums)
        steps = float(sums[-1])
        means = {n: float(v) / steps for n, v in zip(self.NAMES, sums[:-1])}
        means["window_steps"] = steps / world_size
        means["window_seconds"] = time.perf_counter() - self.started
        return means


def _autocast(cfg: TrainConfig, device: torch.device):
    # bf16 autocast on GPU only: CPU autocast would slow these runs down rather than speed them up.
    if device.type == "cuda" and cfg.bf16:
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext()


def _inject_crash(cfg: TrainConfig, rank: int, step: int) -> None:
    """TESTS ONLY: rank 0 hard-exits once per run folder (see TrainConfig.inject_crash_at_step)."""
    marker = Path(expand_path(cfg.run_dir)) / cfg.name / CRASH_MARKER
    if rank != 0 or marker.exists():
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"crashed before step {step + 1}\n")
    logger.warning("fault injection: rank 0 exits before step %d", step + 1)
    os._exit(1)


def _sample_grid(cfg: TrainConfig, model, ema: EMA, diffusion, space, x0_shape, device, folder: Path) -> None:
    from training.samplers import sample

    n = cfg.sample.num_images
    prompts = [cfg.sample.prompts[i % len(cfg.sample.prompts)] for i in range(n)] if cfg.sample.prompts else [""] * n
    kwargs = space.prompt_kwargs(prompts) if space.text_conditional else {}
    was_training = model.training
    with ema.applied_to(model), _autocast(cfg, device):
        model.eval()
        x = sample(model, diffusion, cfg.sample.sampler, (n, *x0_shape), seed=cfg.sample.seed, device=device,
                   model_kwargs=kwargs, clamp=not space.text_conditional)
        write_sample_grid(folder / SAMPLES_FILE, space.decode(x))
    model.train(was_training)


def tracked_run(cfg: TrainConfig):
    """Rank 0's handle on the MLflow run the driver opened (training.train.open_tracking), or None."""
    if not (cfg.tracking.enabled and cfg.tracking.uri and cfg.tracking.run_id):
        return None  # the loop run without the CLI's driver (tests of the loop alone): nothing was opened
    from core.tracking import RunTracker

    return RunTracker.attach(cfg.tracking.uri, cfg.tracking.run_id)


def _log_grid(tracker, grid: Path, step: int) -> None:
    """The grid as the artifact samples/samples_<step>.png (one name per step: the grids would otherwise
    overwrite each other), copied outside the checkpoint folder so the checkpoint holds no extra file."""
    with tempfile.TemporaryDirectory(prefix="mdss_grid_") as tmp:
        named = Path(tmp) / f"samples_{step:08d}.png"
        shutil.copyfile(grid, named)
        tracker.log_artifact(named, "samples")


@dataclass
class Resumed:
    """What a checkpoint restores: the trainable module and EMA weights, the step and the history."""

    model: torch.nn.Module
    ema_weights: torch.nn.Module
    state: dict
    history: list[dict]


def restore(checkpoint, cfg: TrainConfig, device: torch.device) -> Resumed:
    with checkpoint.as_directory() as folder:
        folder = Path(folder)
        return Resumed(model=load_trainable_from_folder(folder / MODEL_DIR, cfg.model),
                       ema_weights=load_trainable_from_folder(folder / EMA_DIR, cfg.model),
                       state=read_training_state(folder, device), history=read_history(folder))


def report(metrics: dict, *, rank: int, save: Optional[Callable[[Path], None]] = None) -> None:
    """``ray.train.report`` on every worker (it is a barrier); with ``save``, rank 0 also writes a
    checkpoint folder with it and hands it to Ray Train."""
    import ray.train

    if save is None:
        ray.train.report(metrics)
        return
    name = f"checkpoint_{metrics['step']:08d}"
    if rank != 0:
        ray.train.report(metrics, checkpoint=None, checkpoint_dir_name=name)
        return
    with tempfile.TemporaryDirectory(prefix="mdss_ckpt_") as tmp:
        save(Path(tmp))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp), checkpoint_dir_name=name)


def train_loop_per_worker(config: dict) -> dict:
    """Train as ``config`` (a ``TrainConfig`` dumped to a dict) says, on this worker's data shard.

    Returns ``{"step", "attempt_starts"}`` (Ray Train hands rank 0's back as ``Result.return_value``)."""
    import ray.train
    import ray.train.torch

    cfg = TrainConfig.model_validate(config)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(cfg.seed)  # identical fresh weights on every worker (DDP also broadcasts rank 0's)

    diffusion = build_diffusion(cfg.schedule)
    strategy = build_strategy(cfg.strategy, diffusion)
    checkpoint = ray.train.get_checkpoint()
    resumed = restore(checkpoint, cfg, device) if checkpoint is not None else None
    if resumed is not None:
        model, history = resumed.model, resumed.history
        step, attempt_starts = int(resumed.state["step"]), list(resumed.state["attempt_starts"])
    else:
        model, history, step, attempt_starts = wrap_for_strategy(load_unet(cfg.model), cfg.model,
                                                                 strategy.uses_xi), [], 0, []
    attempt_starts.append(step)
    if rank == 0:
        where = f"resuming at step {step}" if resumed is not None else "starting at step 0"
        logger.info("%s: %s of %d; strategy %s, %d worker(s) on %s, torch threads %d", cfg.name, where,
                    cfg.total_steps, cfg.strategy.name, world, device, torch.get_num_threads())

    frozen_dtype = torch.bfloat16 if device.type == "cuda" and cfg.bf16 else torch.float32
    space = load_text_space(cfg.model, device, frozen_dtype) if cfg.model.text_conditional else PixelSpace(device)
    prepared = ray.train.torch.prepare_model(model)  # moves to device; DDP when world > 1
    is_ddp = isinstance(prepared, torch.nn.parallel.DistributedDataParallel)
    model = prepared.module if is_ddp else prepared  # the bare module: rollouts, EMA, saving
    model.train()
    ema = EMA(model, cfg.ema.decay, cfg.ema.warmup)
    opt = cfg.optimizer
    optimizer = torch.optim.AdamW(model.parameters(), lr=opt.lr, betas=opt.betas, eps=opt.eps,
                                  weight_decay=opt.weight_decay)
    if resumed is not None:
        ema.load_shadow_from(resumed.ema_weights.to(device), resumed.state["ema_updates"])
        optimizer.load_state_dict(resumed.state["optimizer"])
        del resumed

    def save(folder: Path) -> None:
        write_checkpoint(folder, model=model, ema=ema, optimizer=optimizer, step=step, attempt_starts=attempt_starts,
                         config=cfg.model_dump(mode="json"), history=history)
        if cfg.sample.every and step % cfg.sample.every == 0:
            _sample_grid(cfg, model, ema, diffusion, space, x0_shape, device, folder)
            if tracker is not None:
                _log_grid(tracker, folder / SAMPLES_FILE, step)

    tracker = tracked_run(cfg) if rank == 0 else None
    progress_fid = fid_eval.build(cfg) if rank == 0 else None
    batches = worker_batches(cfg.data, cfg.batch_size, rank=rank, world_size=world, seed=cfg.seed,
                             start_step=step, end_step=cfg.total_steps)
    window, x0_shape = MetricWindow(device), None
    for batch in batches:
        if cfg.inject_crash_at_step is not None and step + 1 == cfg.inject_crash_at_step:
            _inject_crash(cfg, rank, step)
        generator = torch.Generator(device=device).manual_seed(step_seed(cfg.seed, rank, step))
        x0, model_kwargs = space.encode_batch(batch, generator)
        if x0_shape is None and x0.shape[1] != model.config.in_channels:
            raise ValueError(f"data {cfg.data.kind!r} gives {x0.shape[1]}-channel inputs but the UNet takes "
                             f"{model.config.in_channels} (model.unet_config in_channels / data.channels)")
        x0_shape = tuple(x0.shape[1:])
        lr = learning_rate(opt, step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with _autocast(cfg, device):
            out = strategy.training_losses(prepared, x0, step=step, total_steps=cfg.total_steps,
                                           generator=generator, model_kwargs=model_kwargs, rollout_model=model)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip) if cfg.grad_clip else None
        optimizer.step()
        ema.update(model)
        step += 1
        window.add(out, grad_norm)

        is_checkpoint = step % cfg.checkpoint_every == 0 or step == cfg.total_steps
        if not (is_checkpoint or step % cfg.log_every == 0):
            continue
        summary = window.summary(world)
        metrics = {"step": step, "lr": lr, **summary,
                   "samples_per_s": summary["window_steps"] * cfg.batch_size * world / summary["window_seconds"]}
        if rank == 0:
            if is_checkpoint and progress_fid is not None and progress_fid.due(step):
                metrics[progress_fid.name] = progress_fid.score(model, ema, diffusion, x0_shape, device,
                                                                _autocast(cfg, device))
            history.append(metrics)
            logger.info("step %d/%d loss %.4f eps %.4f xi %.4f strategy %.2f lr %.2e %.1f img/s", step,
                        cfg.total_steps, metrics["loss"], metrics["eps_loss"], metrics["xi_loss"],
                        metrics["strategy_frac"], lr, metrics["samples_per_s"])
            if tracker is not None:
                tracker.log_metrics({k: v for k, v in metrics.items() if k != "step"}, step)
        report(metrics, rank=rank, save=save if is_checkpoint else None)
        window.reset()
    return {"step": step, "attempt_starts": attempt_starts}
