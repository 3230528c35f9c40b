"""Why would a pretrained model get worse from DDIM-30 to DDIM-100? Sample it with diffusers' DDIM settings
varied — predicted-x₀ clipping on/off, timestep spacing — and record, beside the held-out FID, the brightness and
contrast of the samples against the references (drift shows as a mean or std off the data's) and how many pixels
saturate at ±1.

    python -m benchmarks.exposure_bias.ddim_diagnosis --preset converged \\
        --model runs/exposure_bias_converged/models/pretrained/snapshots/step_0020000 \\
        --out docs/exposure_bias_converged/ddim_diagnosis.json [--steps 10 30 100] [--images 500]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from benchmarks.exposure_bias.config import PRESETS
from benchmarks.exposure_bias.protocol import Protocol
from benchmarks.exposure_bias.sampling import generate
from benchmarks.exposure_bias.trainer import load_model
from training.samplers import SamplerConfig

SETTINGS = {  # label: (clip_sample, timestep_spacing); diffusers' DDIMScheduler defaults are True and "leading"
    "default (clip, leading)": (None, None),
    "no clip, leading": (False, "leading"),
    "clip, trailing": (True, "trailing"),
    "no clip, trailing": (False, "trailing"),
}


def pixel_stats(x: torch.Tensor) -> dict:
    return {"mean": float(x.mean()), "std": float(x.std()), "saturated": float((x.abs() >= 0.999).float().mean())}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.exposure_bias.ddim_diagnosis", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="converged")
    p.add_argument("--work", default=None, help="the preset's work folder (its feature network scores)")
    p.add_argument("--model", required=True, help="a saved XiUNet folder (e.g. a pretraining snapshot)")
    p.add_argument("--steps", type=int, nargs="+", default=[10, 30, 100])
    p.add_argument("--images", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = PRESETS[args.preset]()
    protocol = Protocol(cfg, Path(args.work or f"runs/exposure_bias_{args.preset}"), Path("/dev/null"))
    model = load_model(Path(args.model), cfg.device)
    diffusion, started = protocol.diffusion, time.perf_counter()
    rows = [{"setting": "references (held-out split)", **pixel_stats(protocol.scorer.native["val"])}]
    print(json.dumps(rows[-1]), flush=True)
    for label, (clip, spacing) in SETTINGS.items():
        for steps in args.steps:
            sampler = SamplerConfig(name="ddim", num_steps=steps, clip_sample=clip, timestep_spacing=spacing,
                                    xi_denoise=False)
            x = generate(model, diffusion, sampler, args.images, args.seed, cfg.evaluation.batch_size, cfg.device)
            rows.append({"setting": label, "steps": steps, "fid_val": protocol.scorer(x, "val"), **pixel_stats(x)})
            print(json.dumps(rows[-1]), flush=True)
    record = {"preset": args.preset, "model": args.model, "images": args.images, "seed": args.seed,
              "wall_s": round(time.perf_counter() - started, 1), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1))
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
