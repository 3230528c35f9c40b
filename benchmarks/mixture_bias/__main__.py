"""CLI: ``python -m benchmarks.mixture_bias [--quick|--full] [--work DIR] [--out DIR] [--dim D ...] [--seed S ...]``.

Resumable: every unit's result is a JSON file under ``--work``; a rerun skips the finished units and rewrites
the report from all of them. ``--dim`` / ``--seed`` restrict a process to some units (processes with disjoint
selections can run side by side, one per core).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import torch

from benchmarks.mixture_bias import report
from benchmarks.mixture_bias.config import PRESETS
from benchmarks.mixture_bias.units import Units


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.mixture_bias", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="CI-sized smoke test (the default)")
    size.add_argument("--full", action="store_true", help="2-D and 16-D, 10 seeds (hours of CPU; resumable)")
    p.add_argument("--work", default=None, help="unit results and models (default runs/mixture_bias_<preset>)")
    p.add_argument("--out", default=None, help="report folder (default <work>/report)")
    p.add_argument("--dim", type=int, action="append", help="only these dimensions (repeatable)")
    p.add_argument("--seed", type=int, action="append", help="only these training seeds (repeatable)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: the preset's, 1)")
    p.add_argument("--report-only", action="store_true",
                   help="write the report from the units finished so far (other processes may still be running); run none")
    args = p.parse_args(argv)

    preset = "full" if args.full else "quick"
    cfg = PRESETS[preset]()
    if args.threads is not None:
        cfg = dataclasses.replace(cfg, threads=args.threads)
    torch.set_num_threads(cfg.threads)
    work = Path(args.work or f"runs/mixture_bias_{preset}")
    out = Path(args.out or work / "report")
    units = Units(cfg, work)
    run_cfg = cfg
    if args.dim or args.seed:  # a selection runs a subset of units under the full config's fingerprint
        units.cfg = dataclasses.replace(cfg, dims=tuple(args.dim or cfg.dims), seeds=tuple(args.seed or cfg.seeds))
        units.fp = cfg.fingerprint()
    started = time.perf_counter()
    if args.report_only:
        path = report.write(run_cfg, work, out)
        print(f"table (units finished so far): {path}")
        return 0
    try:
        units.run_all()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    path = report.write(run_cfg, work, out)
    print(f"done in {time.perf_counter() - started:.1f}s ({len(units.ran)} units run, {len(units.skipped)} skipped)")
    print(f"table: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
