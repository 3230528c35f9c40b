"""Side probe: held-out scores of ε-scaling factors outside the preset's λ grid, for finished variants.

The protocol's λ search follows Ning et al. 2024 (the sampler gets ε_θ/λ with λ ≥ 1). This probe asks
whether the other direction (λ < 1, i.e. ε_θ multiplied by 1/λ > 1) would have helped, on the same
held-out split, sampling seed and image count as the search, so its scores sit beside the search's own.
It reads the finished models and never touches the protocol's units or the test reference.

    python -m benchmarks.exposure_bias.lambda_probe --full --variant ddpm --lam 0.985 --lam 0.995 \\
        --cell ddim_30 --cell ddim_100 --out docs/exposure_bias/lambda_probe.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import torch

from benchmarks.exposure_bias.config import PRESETS
from benchmarks.exposure_bias.protocol import Protocol


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.exposure_bias.lambda_probe", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="store_true", help="probe the full preset's models (default: quick)")
    p.add_argument("--work", default=None, help="the protocol's work folder (default runs/exposure_bias_<preset>)")
    p.add_argument("--variant", action="append", required=True, help="finished variant label (repeatable)")
    p.add_argument("--lam", action="append", type=float, required=True, help="λ to score (repeatable)")
    p.add_argument("--cell", action="append", default=None, help="cell key such as ddim_30 (default: every cell)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True, help="JSON file for the scores")
    args = p.parse_args(argv)

    preset = "full" if args.full else "quick"
    cfg = PRESETS[preset]()
    cells = {c.key: c for c in cfg.evaluation.cells}
    unknown = sorted(set(args.cell or []) - set(cells))
    if unknown:
        print(f"error: --cell {unknown} not in the {preset} preset's cells {sorted(cells)}", file=sys.stderr)
        return 2
    if any(lam <= 0 for lam in args.lam):
        print(f"error: --lam must be positive, got {args.lam}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    work = Path(args.work or f"runs/exposure_bias_{preset}")
    try:
        protocol = Protocol(cfg, work, work / "report", only_variants=args.variant)
        ev, started, rows = cfg.evaluation, time.perf_counter(), []
        for v in protocol.variants:
            model = protocol.model(v)
            for key in args.cell or list(cells):
                for lam in args.lam:
                    rows.append({"variant": v.label, "cell": key, "lambda": lam,
                                 "val_score": protocol.held_out_score(model, cells[key], lam)})
                    print(json.dumps(rows[-1]), flush=True)
    except (RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    record = {"preset": preset, "split": "val", "images": ev.lambda_samples, "seed": ev.lambda_seed,
              "convention": "the sampler gets eps/lambda", "wall_s": round(time.perf_counter() - started, 1),
              "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
