"""Single-process training with the project's strategies (no Ray: on one 2-core machine the Ray Train
worker group only adds start-up time; the strategy, EMA and checkpoint code are the same as
:mod:`training.loop`'s). Resumable: a checkpoint every ``checkpoint_every`` steps; batches, timesteps
and noise are functions of ``(seed, step)`` (the same for every variant: common random numbers)."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import torch

from benchmarks.exposure_bias.config import TrainSpec
from training.checkpoint import EMA_DIR, MODEL_DIR, read_history, read_training_state, write_checkpoint
from training.ema import EMA
from training.loop import step_seed
from training.diffusion import GaussianDiffusion
from training.strategies import Strategy
from training.xi_head import XiUNet

CKPT, FINAL, SNAPSHOTS = "checkpoint", "final", "snapshots"


def _lr(spec: TrainSpec, step: int) -> float:
    return spec.lr * (step + 1) / spec.warmup_steps if step < spec.warmup_steps else spec.lr


class _IgnoringOracleInput(torch.nn.Module):
    """The trained model, called with the oracle's extra keyword (which only the rollout reads)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x, t, oracle_x0=None, **kwargs):
        return self.model(x, t, **kwargs)


def oracle_rollout(diffusion: GaussianDiffusion):
    """The chain-only control's rollout model: the true ε of its input given the clean batch (passed as
    ``oracle_x0``, subset with the batch by the strategy), so x̂ = x: no model error enters the chain."""

    def model(x: torch.Tensor, t: torch.Tensor, oracle_x0: torch.Tensor, **_ignored):
        return diffusion.predict_eps_from_x0(x, t, oracle_x0.to(x.dtype)), None

    return model


def train(model: XiUNet, strategy: Strategy, images: torch.Tensor, spec: TrainSpec, out_dir: Path,
          device: str = "cpu", log_every: int = 0, oracle: bool = False) -> dict:
    """Train ``model`` on ``images`` (N, C, H, W) in [-1, 1]; write ``final/`` (EMA weights), ``snapshots/step_*``
    (EMA weights, every ``snapshot_every``) and ``history``; resume from ``checkpoint/`` if present.
    ``oracle``: the chain-only control (:func:`oracle_rollout` makes the chain's prediction)."""
    out_dir = Path(out_dir)
    ckpt = out_dir / CKPT
    step, history, model = 0, [], model.to(device)
    ema = EMA(model, spec.ema_decay, spec.ema_warmup)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr)
    if (ckpt / "training_state.pt").is_file():  # resume
        model = XiUNet.from_pretrained(ckpt / MODEL_DIR).to(device)
        state = read_training_state(ckpt, torch.device(device))
        ema = EMA(model, spec.ema_decay, spec.ema_warmup)
        ema.load_shadow_from(XiUNet.from_pretrained(ckpt / EMA_DIR).to(device), state["ema_updates"])
        opt = torch.optim.AdamW(model.parameters(), lr=spec.lr)
        opt.load_state_dict(state["optimizer"])
        step, history = int(state["step"]), read_history(ckpt)
    model.train()
    started, window = time.perf_counter(), []
    while step < spec.steps:
        gen = torch.Generator().manual_seed(step_seed(spec.seed, 0, step))
        idx = torch.randint(0, len(images), (spec.batch_size,), generator=gen)
        x0 = images[idx].to(device)
        for group in opt.param_groups:
            group["lr"] = _lr(spec, step)
        if oracle:
            out = strategy.training_losses(_IgnoringOracleInput(model), x0, step=step, total_steps=spec.steps,
                                           generator=gen, model_kwargs={"oracle_x0": x0},
                                           rollout_model=oracle_rollout(strategy.diffusion))
        else:
            out = strategy.training_losses(model, x0, step=step, total_steps=spec.steps, generator=gen)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), spec.grad_clip)
        opt.step()
        ema.update(model)
        step += 1
        window.append([float(out[k].detach()) for k in ("loss", "eps_loss", "xi_loss", "strategy_frac")])
        if spec.snapshot_every and step % spec.snapshot_every == 0:
            with ema.applied_to(model):
                model.save_pretrained(out_dir / SNAPSHOTS / f"step_{step:07d}")
        if step % spec.checkpoint_every == 0 or step == spec.steps:
            means = torch.tensor(window).mean(0).tolist()
            history.append({"step": step, "loss": means[0], "eps_loss": means[1], "xi_loss": means[2],
                            "strategy_frac": means[3], "seconds": time.perf_counter() - started})
            window = []
            tmp = out_dir / (CKPT + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            write_checkpoint(tmp, model=model, ema=ema, optimizer=opt, step=step, attempt_starts=[],
                             config=spec.model_dump(), history=history)
            shutil.rmtree(ckpt, ignore_errors=True)
            tmp.rename(ckpt)
            if log_every:
                print(f"  step {step}/{spec.steps} loss {means[0]:.4f} ({time.perf_counter() - started:.0f}s)",
                      flush=True)
    with ema.applied_to(model):
        model.save_pretrained(out_dir / FINAL)
    return {"steps": step, "history": history}


def load_model(folder: Path, device: str = "cpu", widen_xi: bool = False) -> XiUNet:
    """Load saved weights as an XiUNet in eval mode; ``widen_xi`` adds fresh ξ channels to a plain model."""
    model = XiUNet.from_pretrained(folder)
    if widen_xi and not model.has_xi:
        model = XiUNet.from_unet(model.unet, widen=True)
    return model.to(device)


def snapshot_folders(out_dir: Path) -> list[tuple[int, Path]]:
    folder = Path(out_dir) / SNAPSHOTS
    if not folder.is_dir():
        return []
    return sorted((int(p.name.split("_")[1]), p) for p in folder.iterdir() if p.name.startswith("step_"))
