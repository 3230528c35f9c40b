"""The converged protocol's verdict on each thesis claim, computed from its committed tables (issue #28).

``python -m benchmarks.exposure_bias.verdicts [--dir docs/exposure_bias_converged]`` reads ``results.csv`` (every
score), ``headline.csv`` (the held-out k choices and the vs-DDPM rows), ``contrasts.csv`` and ``lambda_probe.json``
of a finished converged report and writes two files beside them:

* ``posthoc_contrasts.csv``: paired differences between methods that the report does not compute but the analysis
  compares (ε-scaling against MDSS with k chosen on the held-out split, MDSS and SDSS against SS), with the report's
  own statistics (``seed_stats.paired_difference``: the same bootstrap, t interval, MDE and p) and a
  Benjamini–Hochberg q over this file's rows. They were added after the results had been seen.
* ``verdicts.csv``: per thesis claim, the pre-specified row (MDSS with k by held-out, ε-scaling with λ by held-out),
  the thesis-sized effect (the thesis' relative change in its table times the reference method's mean here), the
  Δ with its CI, the MDE (as tabled, and exact from the noncentral t: ``paired_stats.mde_factors``), q, and the
  verdict by the rules of ``judge``.
* ``control_verdicts.csv`` (a report of the issue #28 protocol only: its ``contrasts.csv`` has the pre-specified
  family): per control question of ``CONTROL_CLAIMS`` and cell, the pre-specified contrast between held-out-chosen
  rows (``seed_stats.PRESPECIFIED``; never a fixed-k or fixed-λ row, never a post hoc one), the size it is judged
  against (the reference row's gain over the DDPM fine-tune in that cell), and the verdict by ``judge_control``.
* ``joint_verdicts.csv`` (the same reports only): the tests of ``JOINT`` over several cells at once, with the
  training seed as the unit (cells share their fine-tunes): per seed the mean over the cells of the relative
  paired difference, its interval, exact sign-flip p, exact MDE and the verdict.

It prints the verdict table as Markdown. No training and no sampling: it works on the committed files alone.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path
from typing import Callable

import numpy as np

from benchmarks.exposure_bias.seed_stats import (CHAIN_HELD_OUT, EPS_EXT, EXT, HELD_OUT_K, HELD_OUT_K_EPS,
                                                 PRESPECIFIED_FAMILY, _scores, exact_mde, paired_by_seed,
                                                 paired_difference)
from benchmarks.paired_stats import mde_factors, paired_summary, q_values, sign_flip_p

DOCS = Path("docs/exposure_bias_converged")
EPS = "ddpm + ε-scaling"
PROBE = "ddpm + ε-scaling (λ probe)"

# Issue #28's control questions, fixed before the six-seed run: (claim, first, second, reference). Each is judged on
# the pre-specified contrast first − second (held-out-chosen rows only, seed_stats.PRESPECIFIED), sized by the
# reference row's gain over the DDPM fine-tune in the same cell (what the claim says should, or should not, differ).
CONTROL_CLAIMS = [
    ("the chain alone, with no model error, gains as much as MDSS (the shrinkage reading)", CHAIN_HELD_OUT,
     HELD_OUT_K, HELD_OUT_K),
    ("untrained ε-scaling gains as much as MDSS", EPS_EXT, HELD_OUT_K, HELD_OUT_K),
    ("MDSS adds to ε-scaling", HELD_OUT_K_EPS, EPS_EXT, HELD_OUT_K),
    ("ε-scaling adds to MDSS", HELD_OUT_K_EPS, HELD_OUT_K, EPS_EXT),
]

# Issue #28's joint tests over cells, fixed on 2026-12-05 before any number of the six-seed run was reported. They
# replace the "pattern over cells" argument: the headline cells share their fine-tuned models, the DDPM fine-tune
# and the sampling noise, so cells are not independent tests and the replication unit is the training seed. Per
# training seed, each cell's paired difference first − second (mean over the sampling seeds) is divided by the DDPM
# fine-tune's mean in that cell (the cells' scales differ), then averaged over the cells: one value per training
# seed, with the t interval (union with the bootstrap), the exact sign-flip p and the exact MDE over those values,
# and a Benjamini–Hochberg q over this list. (claim, first, second, cells, thesis (reference, method) values per
# cell or None, reference row for the size or None). With thesis values the size is the thesis' mean relative
# change and ``judge`` decides; without, the size is the reference row's joint relative gain over the DDPM
# fine-tune and ``judge_control`` decides.
HEADLINE_CELLS = [("ddpm", 30), ("ddim", 10), ("ddim", 30), ("ddim", 100), ("dpm2", 10)]
JOINT = [
    ("MDSS gains over plain fine-tuning where the thesis reports a gain (Tables 3.2, 3.3: DDPM-30, DDIM-30, "
     "DDIM-100)", HELD_OUT_K, "ddpm", [("ddpm", 30), ("ddim", 30), ("ddim", 100)],
     [(7.81, 5.54), (7.47, 5.25), (4.99, 3.86)], None),
    ("the chain alone, with no model error, gains as much as MDSS (the shrinkage reading), over the five headline "
     "cells", CHAIN_HELD_OUT, HELD_OUT_K, HEADLINE_CELLS, None, HELD_OUT_K),
    ("untrained ε-scaling gains as much as MDSS, over the five headline cells", EPS_EXT, HELD_OUT_K, HEADLINE_CELLS,
     None, HELD_OUT_K),
]

# (first, second, question, cells): first − second, negative = first better
POSTHOC = [
    (EPS, HELD_OUT_K, "ε-scaling (λ by held-out, preset grid) vs MDSS (k by held-out)",
     [("ddpm", 30), ("ddim", 10), ("ddim", 30), ("ddim", 100), ("dpm2", 10)]),
    (PROBE, HELD_OUT_K, "ε-scaling at the side probe's λ (outside the protocol) vs MDSS (k by held-out)",
     [("ddpm", 30)]),
    (HELD_OUT_K, "ss", "MDSS (k by held-out) vs SS (Table 3.3)", [("ddim", 30), ("ddim", 100)]),
    ("sdss", "ss", "SDSS vs SS (Table 3.3)", [("ddim", 30), ("ddim", 100)]),
]

# (claim, thesis source, (reference name, value as printed), (method name, value as printed), table, first, second,
# cell)
CLAIMS = [
    ("MDSS gains with DDPM at few steps", "Table 3.2, CIFAR-10, 30 steps", ("DDPM", "7.81"), ("MDSS", "5.54"),
     "headline", HELD_OUT_K, "ddpm", ("ddpm", 30)),
    ("MDSS 'significantly enhances' DDIM", "Table 3.3, CIFAR-10, 30 steps", ("DDPM", "7.47"), ("MDSS", "5.25"),
     "headline", HELD_OUT_K, "ddpm", ("ddim", 30)),
    ("MDSS 'significantly enhances' DDIM", "Table 3.3, CIFAR-10, 100 steps", ("DDPM", "4.99"), ("MDSS", "3.86"),
     "headline", HELD_OUT_K, "ddpm", ("ddim", 100)),
    ("MDSS beats SS", "Table 3.3, CIFAR-10, 30 steps", ("SS", "7.02"), ("MDSS", "5.25"),
     "posthoc", HELD_OUT_K, "ss", ("ddim", 30)),
    ("MDSS beats SS", "Table 3.3, CIFAR-10, 100 steps", ("SS", "4.78"), ("MDSS", "3.86"),
     "posthoc", HELD_OUT_K, "ss", ("ddim", 100)),
    ("SDSS beats SS", "Table 3.3, CIFAR-10, 30 steps", ("SS", "7.02"), ("SDSS", "6.92"),
     "posthoc", "sdss", "ss", ("ddim", 30)),
    ("SDSS beats SS", "Table 3.3, CIFAR-10, 100 steps", ("SS", "4.78"), ("SDSS", "4.53"),
     "posthoc", "sdss", "ss", ("ddim", 100)),
    ("IP is poor with DDIM", "Table 3.3, CIFAR-10, 100 steps", ("DDPM", "4.99"), ("IP", "6.95"),
     "headline", "ip", "ddpm", ("ddim", 100)),
    ("IP is poor with DDIM (the thesis' own 30-step row has IP better)", "Table 3.3, CIFAR-10, 30 steps",
     ("DDPM", "7.47"), ("IP", "5.35"), "headline", "ip", "ddpm", ("ddim", 30)),
    ("MDSS brings 'minimal or no improvement' with DPM-Solver-2", "Table 3.4, CIFAR-10, DPM-Solver-2, 10 steps",
     ("DDPM", "10.43"), ("MDSS", "12.149"), "headline", HELD_OUT_K, "ddpm", ("dpm2", 10)),
    ("ξ input denoising improves slightly", "Table 3.5, CIFAR-10, DDPM 30 steps", ("SDSS w/o", "7.93"), ("SDSS", "7.92"),
     "contrasts", "sdss/off", "sdss/no_xi_denoise", ("ddpm", 30)),
    ("ξ input denoising improves slightly", "Table 3.5, CIFAR-10, DDIM 30 steps", ("SDSS w/o", "6.93"), ("SDSS", "6.92"),
     "contrasts", "sdss/off", "sdss/no_xi_denoise", ("ddim", 30)),
    ("ξ input denoising improves slightly", "Table 3.5, CIFAR-10, DDIM 100 steps", ("SDSS w/o", "4.60"), ("SDSS", "4.53"),
     "contrasts", "sdss/off", "sdss/no_xi_denoise", ("ddim", 100)),
    ("DDIM: k = 10 beats k = 4 at 30 steps", "Table 3.7, CIFAR-10, DDIM 30 steps", ("k = 4", "5.25"), ("k = 10", "4.45"),
     "contrasts", "mdss_k10/off", "mdss_k4/off", ("ddim", 30)),
    ("DDIM: k = 4 beats k = 10 at 100 steps", "Table 3.7, CIFAR-10, DDIM 100 steps", ("k = 4", "3.86"), ("k = 10", "4.04"),
     "contrasts", "mdss_k10/off", "mdss_k4/off", ("ddim", 100)),
    ("The DDIM-modified MDSS is better at few steps", "Table 3.8, CIFAR-10, DDIM 30 steps", ("MDSS", "5.25"), ("DDIM MDSS", "4.82"),
     "contrasts", "mdss_ddim_k4/off", "mdss_k4/off", ("ddim", 30)),
    ("The DDIM-modified MDSS is better at few steps (the thesis has no 10-step row: its 30-step change applied)",
     "Table 3.8, CIFAR-10, DDIM 30 steps", ("MDSS", "5.25"), ("DDIM MDSS", "4.82"),
     "contrasts", "mdss_ddim_k4/off", "mdss_k4/off", ("ddim", 10)),
]


def judge(effect: float, diff: float, lo: float, hi: float, mde_exact: float, q: float) -> str:
    """The verdict on a claim whose thesis-sized effect is ``effect`` (signed; negative = the first method better):
    reproduced: a discovery at 5 % FDR (q < 0.05) in the thesis' direction; not reproduced: a discovery the other
    way, or the 95 % CI excludes the thesis-sized effect while the exact MDE is below it; inconclusive
    (underpowered): the exact MDE is at or above the thesis-sized effect; inconclusive: anything else (noting a CI
    that excludes 0 in the thesis' direction without a discovery)."""
    if q < 0.05:
        return "reproduced" if diff * effect > 0 else "not reproduced (a discovery the other way)"
    if mde_exact >= abs(effect):
        return "inconclusive (underpowered)"
    if (effect < 0 and effect < lo) or (effect > 0 and effect > hi):
        return "not reproduced"
    if (effect < 0 and hi < 0) or (effect > 0 and lo > 0):
        return "inconclusive (the thesis' direction, CI excludes 0, q ≥ 0.05)"
    return "inconclusive"


def judge_control(diff: float, lo: float, hi: float, mde_exact: float, q: float, size: float) -> str:
    """The verdict on a control contrast (first − second) sized by ``size``, the reference row's gain (positive:
    it gains): a discovery (q < 0.05 in the pre-specified family) names the better row; without one, an exact MDE at
    or above ``size`` cannot tell ("inconclusive (underpowered)"); a CI inside (−size, +size) with a smaller MDE
    rules out a difference as large as the reference gain; anything else is inconclusive. Without a reference gain
    (size ≤ 0) there is nothing to size the question by."""
    if not math.isfinite(q):
        return "n/a (no test)"
    if q < 0.05:
        return "first better (a discovery)" if diff < 0 else "second better (a discovery)"
    if not (size > 0):
        return "inconclusive (the reference row does not gain here)"
    if mde_exact >= size:
        return "inconclusive (underpowered)"
    if -size < lo and hi < size:
        return "no difference as large as the reference gain"
    return "inconclusive"


def control_verdicts(headline: list[dict], contrasts: list[dict]) -> list[dict]:
    """The verdicts of ``CONTROL_CLAIMS`` from a report's ``headline.csv`` and ``contrasts.csv`` rows: only the rows
    of the pre-specified family are read ([] for a report without it)."""
    pre = {(r["first"], r["second"], r["sampler"], int(r["steps"])): r for r in contrasts
           if r.get("family") == PRESPECIFIED_FAMILY}
    gain = {(r["method"], r["sampler"], int(r["steps"])): -float(r["diff_vs_ddpm"]) for r in headline
            if r.get("diff_vs_ddpm") not in (None, "")}
    out = []
    for claim, first, second, ref in CONTROL_CLAIMS:
        for (a, b, sampler, steps), r in pre.items():
            if (a, b) != (first, second):
                continue
            n = int(r["n_train_seeds"])
            diff, lo, hi, mde, q = (float(r[k]) for k in ("diff", "ci_low", "ci_high", "mde", "q"))
            approx, exact = mde_factors(n) if n >= 2 else (math.nan, math.nan)
            mde_exact = float(r["mde_exact"]) if r.get("mde_exact") not in (None, "") else mde * exact / approx
            size = gain.get((ref, sampler, steps), math.nan)
            out.append(dict(claim=claim, row=f"{first} − {second}", sampler=sampler, steps=steps, reference=ref,
                            reference_gain=size, diff=diff, ci_low=lo, ci_high=hi, mde=mde, mde_exact=mde_exact,
                            p=float(r["p"]), p_sign_flip=float(r.get("p_sign_flip") or math.nan), q=q,
                            q_family=f"contrasts.csv, {PRESPECIFIED_FAMILY}", n_train_seeds=n,
                            verdict=judge_control(diff, lo, hi, mde_exact, q, size)))
    return out


def joint_relative(data: "Committed", first: str, second: str, cells: list) -> dict:
    """{training seed: mean over ``cells`` of (first − second) / the DDPM fine-tune's mean in the cell}, over the
    training seeds that both rows have in every cell (each seed's sampling seeds paired, as ``paired_difference``)."""
    per_cell = []
    for sampler, steps in cells:
        ref = data.mean("ddpm", sampler, steps)
        diffs = paired_by_seed(data.series(first, sampler, steps), data.series(second, sampler, steps))
        per_cell.append({t: float(np.mean(d)) / ref for t, d in diffs.items()})
    seeds = sorted(set.intersection(*(set(c) for c in per_cell))) if per_cell else []
    return {t: float(np.mean([c[t] for c in per_cell])) for t in seeds}


def joint_verdicts(data: "Committed", n_boot: int) -> list[dict]:
    """The tests of ``JOINT`` on a report of issue #28's protocol (relative differences: −0.05 is 5 % better)."""
    out = []
    for claim, first, second, cells, thesis, ref in JOINT:
        d = joint_relative(data, first, second, cells)
        vals = np.array(list(d.values()))
        if len(vals) < 2:
            raise NotAConvergedReport(f"{data.folder}: fewer than two training seeds with {first} and {second} in "
                                      f"every cell of {cells}")
        summary = paired_summary(vals, n_boot)
        row = dict(claim=claim, row=f"{first} − {second}", cells=" ".join(f"{a}-{b}" for a, b in cells),
                   n_train_seeds=len(vals), per_seed=json.dumps({str(t): v for t, v in d.items()}),
                   diff=summary["diff"], ci_low=summary["ci"][0], ci_high=summary["ci"][1], mde=summary["mde"],
                   mde_exact=exact_mde(summary["mde"], len(vals)), p=summary["p"], p_sign_flip=sign_flip_p(vals))
        if thesis is not None:
            size = float(np.mean([(m - r) / r for r, m in thesis]))
            row.update(size_from="the thesis' mean relative change", size=size,
                       thesis_size_in_ci=bool(row["ci_low"] <= size <= row["ci_high"]))
        else:
            row.update(size_from=f"{ref}'s joint relative gain over ddpm",
                       size=-float(np.mean(list(joint_relative(data, ref, "ddpm", cells).values()))))
        out.append(row)
    for r, q in q_values(out, lambda r: r.get("p")):
        r["q"] = q
    for r, (_, _, _, _, thesis, _) in zip(out, JOINT):
        args = (r["diff"], r["ci_low"], r["ci_high"], r["mde_exact"], r["q"])
        r["verdict"] = judge(r["size"], *args) if thesis is not None else judge_control(*args, r["size"])
    return out


def _read_csv(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


class Committed:
    """The committed report of one converged run: scores per method and cell, and the held-out k choices."""

    def __init__(self, folder: Path):
        self.folder = folder
        rows = [dict(variant=r["variant"], setting=r["setting"], sampler=r["sampler"], steps=int(r["steps"]),
                     train_seed=int(r["train_seed"]), seed=int(r["seed"]), score=float(r["score"]))
                for r in _read_csv(folder / "results.csv")]
        self.scores = _scores(rows)
        self.headline = _read_csv(folder / "headline.csv")
        self.contrasts = _read_csv(folder / "contrasts.csv")
        self.chosen = {(r["sampler"], int(r["steps"])): {int(t): lab for t, lab in json.loads(r["k_chosen"]).items()}
                       for r in self.headline if r["method"] == HELD_OUT_K}
        probe_file = folder / "lambda_probe.json"  # the side probe of the 3-seed run; a later report may lack it
        probe = json.loads(probe_file.read_text()) if probe_file.is_file() else {}
        self.probe: dict = {}
        for r in probe.get("test", []):
            self.probe.setdefault((r["sampler"], r["steps"]), {}).setdefault(r["train_seed"], {})[r["seed"]] = r["score"]

    def series(self, name: str, sampler: str, steps: int) -> dict:
        """{train seed: {sampling seed: score}} of a method as the tables name it."""
        if name in (HELD_OUT_K, HELD_OUT_K_EPS, CHAIN_HELD_OUT):
            from benchmarks.exposure_bias.config import converged

            picks = self.chosen.get((sampler, steps), {})
            setting = "eps_scaled_ext" if name == HELD_OUT_K_EPS else "off"
            of = converged().chain_only_for if name == CHAIN_HELD_OUT else (lambda lab: lab)
            return {t: self.scores[(of(lab), setting, sampler, steps)][t] for t, lab in picks.items()}
        if name == PROBE:
            return self.probe.get((sampler, steps), {})
        if name.endswith(EXT):
            label, setting = name[:-len(EXT)], "eps_scaled_ext"
        else:
            label, setting = ("ddpm", "eps_scaled") if name == EPS else (name.split("/") if "/" in name else (name, "off"))
        return dict(self.scores.get((label, setting, sampler, steps), {}))

    def mean(self, name: str, sampler: str, steps: int) -> float:
        """Mean over training seeds of each seed's mean score (the headline's ``mean``)."""
        return float(np.mean([np.mean(list(v.values())) for v in self.series(name, sampler, steps).values()]))


def posthoc_contrasts(data: Committed, n_boot: int) -> list[dict]:
    # A report of issue #28's protocol has the probe's λ in its own held-out search (the extended-grid rows), and
    # lambda_probe.json beside it is the 3-seed run's, of other models: it is never paired with such a report.
    protocol_has_probe = any(r["method"] == EPS_EXT for r in data.headline)
    out = []
    for first, second, question, cells in POSTHOC:
        if PROBE in (first, second) and protocol_has_probe:
            continue
        for sampler, steps in cells:
            got = paired_difference(data.series(first, sampler, steps), data.series(second, sampler, steps), n_boot)
            if got:
                out.append({"first": first, "second": second, "question": question, "sampler": sampler,
                            "steps": steps, **got})
    for r, q in q_values(out, lambda r: r.get("p")):
        r["q"] = q
    return out


class NotAConvergedReport(ValueError):
    """A claim's row is missing: the folder is not a finished report of the converged protocol."""


def _the_row(rows: list[dict], wanted: tuple, fields: tuple, where: str) -> dict:
    for x in rows:
        if tuple(int(x[f]) if f == "steps" else x[f] for f in fields) == wanted:
            return x
    raise NotAConvergedReport(f"{where} has no row {dict(zip(fields, wanted))}: the verdicts read a finished report of "
                              "the converged protocol (its cells and methods), and this one lacks it")


def verdicts(data: Committed, posthoc: list[dict]) -> list[dict]:
    out = []
    for claim, source, (ref_name, ref), (meth_name, meth), table, first, second, (sampler, steps) in CLAIMS:
        if table == "headline":
            r = _the_row(data.headline, (first, sampler, steps), ("method", "sampler", "steps"),
                         str(data.folder / "headline.csv"))
            diff, n = float(r["diff_vs_ddpm"]), int(r["n_train_seeds"])
        else:
            rows = data.contrasts if table == "contrasts" else posthoc
            r = _the_row(rows, (first, second, sampler, steps), ("first", "second", "sampler", "steps"),
                         str(data.folder / "contrasts.csv") if table == "contrasts" else "the post hoc contrasts")
            diff, n = float(r["diff"]), int(r["n_train_seeds"])
        approx, exact = mde_factors(n)
        relative = (float(meth) - float(ref)) / float(ref)
        reference = data.mean(second, sampler, steps)
        effect = relative * reference
        lo, hi, mde, q = float(r["ci_low"]), float(r["ci_high"]), float(r["mde"]), float(r["q"])
        mde_exact = mde * exact / approx
        out.append(dict(claim=claim, thesis=f"{source}: {ref_name} {ref}, {meth_name} {meth}",
                        thesis_relative_change=relative, row=f"{first} − {second}", sampler=sampler, steps=steps,
                        reference_mean_here=reference, thesis_sized_effect=effect, diff=diff, ci_low=lo, ci_high=hi,
                        mde=mde, mde_exact=mde_exact, q=q, q_family=f"{table}.csv" if table != "posthoc" else
                        "posthoc_contrasts.csv", verdict=judge(effect, diff, lo, hi, mde_exact, q),
                        # beside the verdict, not part of it: is the thesis-sized effect inside the CI (a
                        # "reproduced" gain as large as the thesis', or only in its direction)?
                        thesis_size_in_ci=bool(lo <= effect <= hi)))
    return out


def _write(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        w.writeheader()
        w.writerows(rows)


def _signed(x: float) -> str:
    return f"{x:+.3f}" if abs(x) >= 0.0095 else f"{x:+.4f}"


def _percent(x: float) -> str:
    return f"{100 * x:+.1f} %"


def _md_table(header: list[str], rows: list[dict], cells: Callable[[dict], list[str]]) -> str:
    """A Markdown table: ``header``, then one line of ``cells(r)`` per row."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cells(r)) + " |" for r in rows])


def _ci(r: dict, fmt: Callable[[float], str]) -> str:
    return f"{fmt(r['diff'])} [{fmt(r['ci_low'])}, {fmt(r['ci_high'])}]"


def markdown_controls(rows: list[dict]) -> str:
    return _md_table(
        ["control claim", "row, cell", "Δ [95 % CI]", "p (t) / p (sign flip)", "q", "reference gain", "MDE (exact)",
         "verdict"], rows,
        lambda r: [r["claim"], f"{r['row']}, {r['sampler']}-{r['steps']} (n = {r['n_train_seeds']})", _ci(r, _signed),
                   f"{r['p']:.2g} / {r['p_sign_flip']:.2g}", f"{r['q']:.2g}",
                   f"{_signed(r['reference_gain'])} ({r['reference']})", f"{r['mde']:#.3g} ({r['mde_exact']:#.3g})",
                   f"**{r['verdict']}**"])


def markdown_joint(rows: list[dict]) -> str:
    return _md_table(
        ["joint claim", "row", "cells", "Δ relative [95 % CI]", "p (t) / p (sign flip)", "q", "size", "MDE (exact)",
         "verdict"], rows,
        lambda r: [r["claim"], f"{r['row']} (n = {r['n_train_seeds']})", r["cells"], _ci(r, _percent),
                   f"{r['p']:.2g} / {r['p_sign_flip']:.2g}", f"{r['q']:.2g}", f"{_percent(r['size'])} ({r['size_from']})",
                   f"{100 * r['mde']:.1f} % ({100 * r['mde_exact']:.1f} %)", f"**{r['verdict']}**"])


def markdown(rows: list[dict]) -> str:
    return _md_table(
        ["thesis claim", "thesis", "here: row, cell", "Δ [95 % CI]", "q", "thesis-sized Δ", "MDE (exact)", "verdict"],
        rows,
        lambda r: [r["claim"], f"{r['thesis']} ({100 * r['thesis_relative_change']:+.1f} %)",
                   f"{r['row']}, {r['sampler']}-{r['steps']}", _ci(r, _signed), f"{r['q']:.2g}",
                   _signed(r["thesis_sized_effect"]), f"{r['mde']:#.3g} ({r['mde_exact']:#.3g})", f"**{r['verdict']}**"])


def main(argv: list[str] | None = None) -> int:
    from benchmarks.exposure_bias.config import converged

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", type=Path, default=DOCS, help="a converged report's folder (default: %(default)s)")
    args = ap.parse_args(argv)
    data = Committed(args.dir)
    posthoc = posthoc_contrasts(data, converged().evaluation.bootstrap)
    try:
        rows = verdicts(data, posthoc)
    except NotAConvergedReport as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _write(args.dir / "posthoc_contrasts.csv", posthoc)
    _write(args.dir / "verdicts.csv", rows)
    print(markdown(rows))
    controls = control_verdicts(data.headline, data.contrasts)
    if controls:
        _write(args.dir / "control_verdicts.csv", controls)
        print("\n" + markdown_controls(controls))
        joint = joint_verdicts(data, converged().evaluation.bootstrap)
        _write(args.dir / "joint_verdicts.csv", joint)
        print("\n" + markdown_joint(joint))
    else:
        print(f"\n(no {PRESPECIFIED_FAMILY} contrasts in {args.dir / 'contrasts.csv'}: a report from before issue "
              "#28's protocol; no control verdicts)")
    return 0 if all(math.isfinite(r["q"]) for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
