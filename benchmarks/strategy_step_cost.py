"""Cost of one training step of each exposure-bias strategy relative to plain DDPM.

Same model (a diffusers UNet2DModel with the ξ head), same batch, same optimiser (AdamW); every
strategy is forced on for every batch (scheduled probability 1), so the numbers are the cost of
the strategy itself. Strategies are timed in interleaved rounds (DDPM, IP, …, DDPM, IP, …) so
that drift in machine load hits all of them alike. The table shows the minimum (least disturbed
by other load; the ratio uses it) and the median ms/step.

Target: MDSS <= 1.35x DDPM (ideal ~1.33x: one extra no-grad forward on top of forward+backward).

Needs only torch, diffusers and pydantic (no Ray):
    python benchmarks/strategy_step_cost.py                       # small CPU preset
    python benchmarks/strategy_step_cost.py --preset cifar10 --device cuda --bf16
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

import torch  # noqa: E402

PRESETS = {
    # A CPU-sized UNet: 3x32x32, channels 32/64/64, attention at 8x8.
    "small": dict(
        unet=dict(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(32, 64, 64), layers_per_block=1,
                  norm_num_groups=8, attention_head_dim=32,
                  down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                  up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D")),
        schedule=dict(kind="linear", num_train_timesteps=1000), batch=16),
    # The thesis' CIFAR-10 setting (Table A.1): 128 channels x (1,2,2,2), 3 res blocks, attention at 16 and 8,
    # dropout 0.3, cosine schedule with 4000 steps, batch 128.
    "cifar10": dict(
        unet=dict(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(128, 256, 256, 256),
                  layers_per_block=3, dropout=0.3, attention_head_dim=64,
                  down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D")),
        schedule=dict(kind="cosine", num_train_timesteps=4000), batch=128),
}
DEFAULT_STRATEGIES = ["ddpm", "ip", "ss", "sdss", "mdss", "mdss:sample", "sdss_ddim", "mdss_ddim"]


def machine_description(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    desc = f"{platform.system()} {platform.release()}, {cpu}, {os.cpu_count()} CPUs (torch threads {torch.get_num_threads()})"
    if device.type == "cuda":
        desc += f", GPU {torch.cuda.get_device_name(device)}"
    return desc


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="small")
    p.add_argument("--device", default="cpu")
    p.add_argument("--bf16", action="store_true", help="autocast the forward passes to bfloat16")
    p.add_argument("--batch", type=int, default=None, help="batch size (default: the preset's)")
    p.add_argument("--k", type=int, default=4, help="MDSS depth")
    p.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    p.add_argument("--steps", type=int, default=3, help="timed steps per strategy per round")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per strategy before timing")
    p.add_argument("--strategies", nargs="+", default=DEFAULT_STRATEGIES,
                   help="names from StrategyConfig; 'name:sample' uses posterior='sample'")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="'cpu' = this process's CPU time (robust on a CPU shared with other jobs; CPU device only)")
    return p.parse_args(argv)


def main(argv=None) -> dict[str, float]:
    args = parse_args(argv)
    from diffusers import UNet2DModel
    import diffusers

    from training.diffusion import GaussianDiffusion, ScheduleConfig
    from training.strategies import StrategyConfig, build_strategy
    from training.xi_head import XiUNet

    preset = PRESETS[args.preset]
    device = torch.device(args.device)
    if args.clock == "cpu" and device.type != "cpu":
        raise SystemExit("--clock cpu measures CPU time; use it with --device cpu only")
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    batch = args.batch or preset["batch"]
    torch.manual_seed(args.seed)
    model = XiUNet.from_unet(UNet2DModel(**preset["unet"])).to(device).train()
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    diffusion = GaussianDiffusion.from_config(ScheduleConfig(**preset["schedule"]))
    c, s = preset["unet"]["in_channels"], preset["unet"]["sample_size"]
    x0 = (torch.rand(batch, c, s, s, generator=torch.Generator().manual_seed(args.seed)) * 2 - 1).to(device)

    strategies = {}
    for spec in args.strategies:
        name, _, posterior = spec.partition(":")
        cfg = StrategyConfig(name=name, k=args.k, prob_start=1.0, prob_max=1.0, posterior=posterior or "mean")
        strategies[spec] = build_strategy(cfg, diffusion)
    if "ddpm" not in strategies:
        raise SystemExit("--strategies must include ddpm (the reference)")

    generator = torch.Generator(device=device).manual_seed(args.seed)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)

    def train_step(strategy) -> None:
        opt.zero_grad(set_to_none=True)
        with autocast:
            out = strategy.training_losses(model, x0, step=0, total_steps=1, generator=generator)
        out["loss"].backward()
        opt.step()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for strategy in strategies.values():
        for _ in range(args.warmup):
            train_step(strategy)
    times: dict[str, list[float]] = {name: [] for name in strategies}
    for _ in range(args.rounds):
        for name, strategy in strategies.items():
            for _ in range(args.steps):
                sync()
                t0 = clock()
                train_step(strategy)
                sync()
                times[name].append(clock() - t0)

    best = {name: min(v) * 1000 for name, v in times.items()}
    med = {name: statistics.median(v) * 1000 for name, v in times.items()}
    print(f"command: python {' '.join([sys.argv[0]] + (argv if argv is not None else sys.argv[1:]))}")
    print(f"machine: {machine_description(device)}")
    print(f"torch {torch.__version__}, diffusers {diffusers.__version__}, python {platform.python_version()}")
    print(f"preset {args.preset}: UNet {n_params / 1e6:.1f}M params (with ξ head), batch {batch}x{c}x{s}x{s}, "
          f"{'bf16 autocast' if args.bf16 else 'fp32'}, T={diffusion.num_timesteps}, k={args.k}, "
          f"{args.rounds} rounds x {args.steps} steps (+{args.warmup} warm-up), {args.clock} clock")
    print()
    print("| strategy       | ms/step (min) | vs DDPM (min) | ms/step (median) | vs DDPM (median) |")
    print("|----------------|--------------:|--------------:|-----------------:|-----------------:|")
    for name in best:
        print(f"| {name:<14} | {best[name]:13.1f} | {best[name] / best['ddpm']:12.2f}x "
              f"| {med[name]:16.1f} | {med[name] / med['ddpm']:15.2f}x |")
    scale = diffusion.posterior_mean_chain_noise_scale(args.k + 1)
    probe = [t for t in (0, 10, 100, diffusion.num_timesteps // 2, diffusion.num_timesteps - args.k - 2)]
    print(f"\nposterior='mean' (MDSS k={args.k}) makes ε_t = s·ε, s at t={probe}: "
          f"{[round(float(scale[t]), 3) for t in probe]}; posterior='sample' keeps s = 1")
    if "mdss" in best:
        ratio = best["mdss"] / best["ddpm"]
        print(f"\nMDSS / DDPM = {ratio:.2f}x on the minimum (target <= 1.35x): {'met' if ratio <= 1.35 else 'NOT met'}")
    return best


if __name__ == "__main__":
    main()
