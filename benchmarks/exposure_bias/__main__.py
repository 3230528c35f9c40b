"""CLI: ``python -m benchmarks.exposure_bias [--quick|--full|--converged [--seeds 6]] [--out DIR] [--work DIR] [--stage S ...] [--variant L ...]``.

Every stage is resumable and skips itself when its artefacts exist for the same config fingerprint,
so the same command continues an interrupted run; ``--stage`` runs only the named stages (their
inputs must exist). ``report`` is cheap and rewrites the tables and plots from whatever units exist.
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from benchmarks.exposure_bias.config import PRESETS, converged, gpu_cifar10
from benchmarks.exposure_bias.protocol import STAGES, Protocol


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.exposure_bias", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="CI-sized smoke run (the default)")
    size.add_argument("--full", action="store_true", help="the recorded run (hours; resumable)")
    size.add_argument("--converged", action="store_true",
                      help="issue #13's protocol: converged 16×16 model, controls, 3 training seeds (CPU-hours; resumable)")
    size.add_argument("--gpu-cifar10", action="store_true",
                      help="the same protocol on CIFAR-10 with the released DDPM UNet and Inception FID, on a GPU; "
                           "needs --train-images, --test-images, --pretrained and --inception-weights")
    p.add_argument("--seeds", type=int, choices=(3, 6), default=None,
                   help="--converged: 6 gives the DDPM fine-tune, MDSS k = 4 and 10 and both chain-only controls "
                        "training seeds 3-5 as well (issue #28); the units of seeds 0-2, the pretrained model and the "
                        "feature network are the 3-seed run's (default 3)")
    p.add_argument("--train-images", help="--gpu-cifar10: folder of the 50k CIFAR-10 training images (PNG)")
    p.add_argument("--test-images", help="--gpu-cifar10: folder of the 10k CIFAR-10 test images (PNG)")
    p.add_argument("--pretrained", help="--gpu-cifar10: a local google/ddpm-cifar10-32 snapshot (UNet2DModel folder)")
    p.add_argument("--out", default=None, help="tables/plots folder (default docs/exposure_bias for --full, "
                                               "docs/exposure_bias_converged for --converged, "
                                               "runs/exposure_bias_quick/report for --quick)")
    p.add_argument("--work", default=None, help="models and records (default runs/exposure_bias_<preset>)")
    p.add_argument("--stage", action="append", choices=STAGES, help="run only these stages (repeatable)")
    p.add_argument("--variant", action="append", metavar="LABEL",
                   help="run the per-variant units of only these variants (repeatable); processes given disjoint "
                        "variants can run side by side, one per core")
    p.add_argument("--device", default=None, help="torch device, e.g. cuda (default: the preset's, cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--inception-weights", default=None, help="torch-fidelity Inception-v3 weights: standard FID")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    carry = p.add_mutually_exclusive_group()
    carry.add_argument("--pack", metavar="DIR", help="instead of running stages: write the work folder's finished "
                       "units and the weights an unfinished unit still reads to DIR (small enough to commit; "
                       "benchmarks/exposure_bias/carry.py), then exit")
    carry.add_argument("--unpack", metavar="DIR", help="instead of running stages: copy a packed DIR into the work "
                       "folder, which must not exist yet, then exit")
    args = p.parse_args(argv)

    preset = "full" if args.full else "converged" if args.converged else "gpu_cifar10" if args.gpu_cifar10 else "quick"
    if args.seeds is not None and preset != "converged":
        print("error: --seeds goes with --converged", file=sys.stderr)
        return 2
    if args.gpu_cifar10:
        missing = [f"--{n.replace('_', '-')}" for n in ("train_images", "test_images", "pretrained", "inception_weights")
                   if not getattr(args, n)]
        if missing:
            print(f"error: --gpu-cifar10 needs {', '.join(missing)}", file=sys.stderr)
            return 2
        cfg = gpu_cifar10(args.train_images, args.test_images, args.pretrained, args.inception_weights)
    elif preset == "converged":
        cfg = converged(args.seeds or 3)
    else:
        cfg = PRESETS[preset]()
    updates = {k: v for k, v in (("device", args.device), ("threads", args.threads),
                                 ("inception_weights", args.inception_weights)) if v is not None}
    if updates:
        cfg = cfg.model_validate({**cfg.model_dump(), **updates})
    if args.print_config:
        print(json.dumps(cfg.model_dump(mode="json"), indent=2))
        return 0
    work = Path(args.work or f"runs/exposure_bias_{preset}")
    default_out = {"full": "docs/exposure_bias", "converged": "docs/exposure_bias_converged",
                   "gpu_cifar10": "docs/exposure_bias_gpu_cifar10"}
    out = Path(args.out or default_out.get(preset, work / "report"))
    stages = tuple(s for s in STAGES if s in args.stage) if args.stage else STAGES
    started = time.perf_counter()
    try:
        # each unit's line reaches a redirected log as it finishes (runs of hours are followed with tail -f)
        protocol = Protocol(cfg, work, out, log=functools.partial(print, flush=True), only_variants=args.variant)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.pack or args.unpack:
        return _carry(protocol, args.pack, args.unpack)
    try:
        protocol.run(stages)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"done in {time.perf_counter() - started:.1f}s: " + ", ".join(f"{k} {v:.1f}s" for k, v in protocol.timings.items()))
    print(f"tables: {out / 'tables.md'}")
    return 0


def _carry(protocol: Protocol, pack_to: Optional[str], unpack_from: Optional[str]) -> int:
    from benchmarks.exposure_bias import carry

    try:
        if pack_to:
            info = carry.pack(protocol, Path(pack_to))
            print(f"packed {info['units_done']} of {info['units_in_config']} units, {len(info['weights_kept'])} "
                  f"weights folders, {info['bytes'] / 1e6:.1f} MB into {pack_to}")
        else:
            info = carry.unpack(Path(unpack_from), protocol.work)
            print(f"unpacked {info['units_done']} finished units into {protocol.work}")
        for line in info["unfinished"]:
            print(f"  {line}")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
