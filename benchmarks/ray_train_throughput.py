"""Ray Train throughput of the MDSS loop on CPU: samples/s with 1 worker vs 2 data-parallel workers.

    python benchmarks/ray_train_throughput.py [--steps 40] [--batch-size 16] [--layouts 1x1,1x2,2x1]

Each layout ``WxC`` (W workers with C CPUs each) runs configs/mdss/tiny_fashion_mnist.yaml's model
and data through the real ``TorchTrainer`` (DDP over gloo for W > 1) for ``--steps`` steps, with one
checkpoint at the end and no sample grids. The steady-state rate is the images of all workers over
the logged windows after the first (which holds start-up and the first DDP synchronisation),
divided by their wall time; "fit" is the wall time of the whole ``fit()`` including Ray Train's
worker start-up. Prints a Markdown table with the machine, date and command.
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # keep a local Ray on loopback
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def run_layout(workers: int, cpus: int, args, run_dir: str) -> dict:
    from core.config import load_config
    from training.checkpoint import read_history
    from training.config import TrainConfig
    from training.train import run

    cfg = load_config(TrainConfig, ROOT / "configs" / "mdss" / "tiny_fashion_mnist.yaml", [
        f"name=bench_{workers}x{cpus}", f"run_dir={run_dir}", f"num_workers={workers}", f"cpus_per_worker={cpus}",
        f"total_steps={args.steps}", f"checkpoint_every={args.steps}", f"log_every={args.log_every}",
        f"batch_size={args.batch_size}", f"strategy.name={args.strategy}", "sample.every=0", "data.limit=null",
        "max_failures=0",
    ])
    started = time.perf_counter()
    result = run(cfg)
    fit_s = time.perf_counter() - started
    rows = read_history(Path(result.checkpoint.path))
    steady = rows[1:] or rows
    images = sum(r["window_steps"] * args.batch_size * workers for r in steady)
    seconds = sum(r["window_seconds"] for r in steady)
    return {"layout": f"{workers} x {cpus} CPU", "global_batch": args.batch_size * workers,
            "samples_per_s": images / seconds, "step_s": seconds / sum(r["window_steps"] for r in steady),
            "fit_s": fit_s}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--log-every", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16, help="per worker")
    parser.add_argument("--strategy", default="mdss")
    parser.add_argument("--layouts", default="1x1,1x2,2x1", help="comma-separated WORKERSxCPUS")
    args = parser.parse_args()
    layouts = [tuple(int(v) for v in item.split("x")) for item in args.layouts.split(",")]

    import ray
    import torch

    from core.ray_config import RayConfig, init_ray

    init_ray(RayConfig(num_cpus=max(w * c for w, c in layouts)))
    load_before = os.getloadavg()
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="ray_train_bench_") as run_dir:
            for workers, cpus in layouts:
                results.append(run_layout(workers, cpus, args, run_dir))
    finally:
        ray.shutdown()

    print(f"\nmachine: {cpu_model()}, {os.cpu_count()} CPUs visible; Python {platform.python_version()}, "
          f"torch {torch.__version__}, ray {ray.__version__}")
    print(f"date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; 1-min load average before/after: "
          f"{load_before[0]:.1f}/{os.getloadavg()[0]:.1f} (this benchmark itself keeps 1-2 CPUs busy; more means other work shared the CPUs)")
    print(f"command: python {shlex.join(sys.argv)}")
    print(f"model: tiny_fashion_mnist UNet (45k params), 1x32x32, strategy {args.strategy}, "
          f"{args.steps} steps, per-worker batch {args.batch_size}\n")
    base = results[0]["samples_per_s"]
    print("| workers x CPUs | global batch | samples/s (steady) | s/step | speed-up vs first | fit wall s |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['layout']} | {r['global_batch']} | {r['samples_per_s']:.1f} | {r['step_s']:.3f} | "
              f"{r['samples_per_s'] / base:.2f}x | {r['fit_s']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
