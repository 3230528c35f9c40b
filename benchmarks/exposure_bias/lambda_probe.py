"""Side probe: held-out scores of ε-scaling factors outside the preset's λ grid, for finished variants.

The protocol's λ search follows Ning et al. 2024 (the sampler gets ε_θ/λ with λ ≥ 1). This probe asks
whether the other direction (λ < 1, i.e. ε_θ multiplied by 1/λ > 1) would have helped, on the same
held-out split, sampling seed and image count as the search, so its scores sit beside the search's own.
It reads the finished models and never touches the protocol's units or the test reference. Every training seed's
model is probed (``--train-seed`` restricts), and each record carries the search's own held-out scores of the same
cell (``search``) beside the probe's (``rows``), so the whole held-out curve sits in one file.

    python -m benchmarks.exposure_bias.lambda_probe --full --variant ddpm --lam 0.985 --lam 0.995 \\
        --cell ddim_30 --cell ddim_100 --out docs/exposure_bias/lambda_probe.json
    python -m benchmarks.exposure_bias.lambda_probe --preset converged --variant ddpm --lam 1.03 --lam 1.04 \\
        --cell ddpm_30 --test-best --out docs/exposure_bias_converged/lambda_probe.json

``--test-best`` then takes, per training seed and cell, the λ with the best held-out score over the search's grid
and the probe's factors together, scores it on the test split with the evaluation's sampling seeds and image
count, and pairs it with the protocol's unscaled test scores of the same model (``test_vs_unscaled``: the
training-seed statistic of the report's ε-scaling rows) — λ is still chosen on the held-out split only.
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
from benchmarks.exposure_bias.seed_stats import paired_difference


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.exposure_bias.lambda_probe", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default=None, help="the protocol's preset (default: quick)")
    p.add_argument("--full", action="store_true", help="same as --preset full")
    p.add_argument("--train-seed", type=int, action="append", default=None,
                   help="training seed whose models to probe (repeatable; default: every seed of the preset)")
    p.add_argument("--work", default=None, help="the protocol's work folder (default runs/exposure_bias_<preset>)")
    p.add_argument("--variant", action="append", required=True, help="finished variant label (repeatable)")
    p.add_argument("--lam", action="append", type=float, required=True, help="λ to score (repeatable)")
    p.add_argument("--cell", action="append", default=None, help="cell key such as ddim_30 (default: every cell)")
    p.add_argument("--test-best", action="store_true",
                   help="score the held-out-best λ (grid ∪ probe) on the test split, paired with the unscaled model")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True, help="JSON file for the scores")
    args = p.parse_args(argv)

    if args.full and args.preset not in (None, "full"):
        print(f"error: --full contradicts --preset {args.preset}", file=sys.stderr)
        return 2
    preset = args.preset or ("full" if args.full else "quick")
    cfg = PRESETS[preset]()
    cells = {c.key: c for c in cfg.evaluation.cells}
    unknown = sorted(set(args.cell or []) - set(cells))
    if unknown:
        print(f"error: --cell {unknown} not in the {preset} preset's cells {sorted(cells)}", file=sys.stderr)
        return 2
    seeds = args.train_seed or list(cfg.train_seeds)
    if set(seeds) - set(cfg.train_seeds):
        print(f"error: --train-seed {sorted(set(seeds) - set(cfg.train_seeds))} not in the {preset} preset's "
              f"training seeds {cfg.train_seeds}", file=sys.stderr)
        return 2
    if any(lam <= 0 for lam in args.lam):
        print(f"error: --lam must be positive, got {args.lam}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    work = Path(args.work or f"runs/exposure_bias_{preset}")
    try:
        protocol = Protocol(cfg, work, work / "report", only_variants=args.variant)
        ev, started, rows, search, test, evaluated = cfg.evaluation, time.perf_counter(), [], [], [], []
        for v in protocol.variants:
            for seed in seeds:
                model = protocol.model(v, seed)
                searched = _search_scores(work, v.label, seed)
                if args.test_best:
                    evaluated += protocol.evaluated_rows(v, seed)
                for key in args.cell or list(cells):
                    held = {}  # the held-out curve of this (model, cell): the search's grid, then the probe's factors
                    if key in searched:
                        search.append({"variant": v.label, "train_seed": seed, "cell": key,
                                       "lambda_chosen": searched[key]["lambda"], "val_scores": searched[key]["val_scores"]})
                        held = {float(lam): score for lam, score in searched[key]["val_scores"].items()}
                    for lam in args.lam:
                        held[lam] = protocol.held_out_score(model, cells[key], lam)
                        rows.append({"variant": v.label, "train_seed": seed, "cell": key, "lambda": lam,
                                     "val_score": held[lam]})
                        print(json.dumps(rows[-1]), flush=True)
                    if args.test_best:
                        test.extend(_test_at_best(protocol, model, cells[key], v.label, seed, held))
    except (RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    record = {"preset": preset, "split": "val", "images": ev.lambda_samples, "seed": ev.lambda_seed,
              "convention": "the sampler gets eps/lambda", "wall_s": round(time.perf_counter() - started, 1),
              "rows": rows, "search": search}
    if args.test_best:
        record.update(test_split={"images": ev.num_samples, "seeds": list(ev.seeds)}, test=test,
                      test_vs_unscaled=_versus_unscaled(test, evaluated, ev.bootstrap))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2))
    return 0


def _test_at_best(protocol: Protocol, model, cell, label: str, seed: int, held: dict) -> list[dict]:
    """Test-split rows at the λ with the best held-out score in ``held`` ({λ: score})."""
    best = min(held, key=held.get)
    out = [{"variant": label, "train_seed": seed, "cell": cell.key, "sampler": cell.sampler, "steps": cell.steps,
            "lambda": best, "seed": s, "score": protocol.test_score(model, cell, s, lam=best)}
           for s in protocol.cfg.evaluation.seeds]
    for r in out:
        print(json.dumps(r), flush=True)
    return out


def _versus_unscaled(test: list[dict], evaluated: list[dict], n_boot: int) -> list[dict]:
    """Per (variant, cell): the test rows at the held-out-best λ minus the protocol's unscaled test scores
    (``evaluated``: its evaluate stage's rows) of the same models and sampling seeds, over training seeds
    (seed_stats.paired_difference)."""
    out = []
    for variant, key in sorted({(r["variant"], r["cell"]) for r in test}):
        mine = [r for r in test if (r["variant"], r["cell"]) == (variant, key)]
        sampler, steps = mine[0]["sampler"], mine[0]["steps"]
        scaled, base = {}, {}
        for r in mine:
            scaled.setdefault(r["train_seed"], {})[r["seed"]] = r["score"]
        for r in evaluated:
            if (r["variant"], r["sampler"], r["steps"], r["setting"]) == (variant, sampler, steps, "off"):
                base.setdefault(r["train_seed"], {})[r["seed"]] = r["score"]
        paired = paired_difference(scaled, base, n_boot)
        out.append({"variant": variant, "cell": key, "lambda_chosen": {str(r["train_seed"]): r["lambda"] for r in mine},
                    **paired})
    return out


def _search_scores(work: Path, label: str, seed: int) -> dict:
    """The protocol's own λ search for (variant, training seed), if it ran: {cell: {"lambda", "val_scores"}}."""
    path = work / "lambda" / label / f"s{seed}" / "lambda.json"
    return json.loads(path.read_text()) if path.is_file() else {}


if __name__ == "__main__":
    sys.exit(main())
