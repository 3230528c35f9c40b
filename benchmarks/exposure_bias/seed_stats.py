"""Statistics over independent fine-tuning runs (training seeds), sampling seeds nested within each.

For every method and cell: mean ± std over training seeds of the per-seed mean score; the paired difference to
the DDPM fine-tune (same training seed, same sampling seed: the same data stream and initial noise), with a
hierarchical bootstrap CI (training seeds resampled, then each one's sampling seeds) and, because a percentile
bootstrap over 3 seeds is too narrow, the t interval over the training seeds' mean differences; the reported CI is
the union of the two. A verdict: better / worse when that CI excludes 0, else inconclusive; and the minimal
detectable effect (80 % power, two-sided 5 %: (t₀.₉₇₅ + t₀.₈) · sd over training seeds / √n, n − 1 degrees of
freedom). Two selected rows: ``ddpm + ε-scaling`` (λ per cell and seed on the held-out
split) and ``mdss (k by held-out)`` (per cell and seed, the k candidate with the best held-out score).
"""
from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from benchmarks.paired_stats import min_detectable_effect, q_values, t_interval, t_test_p, union, verdict

BASE = ("ddpm", "off")


def _scores(rows: list[dict]) -> dict:
    """{(variant, setting, sampler, steps): {train_seed: {sampling seed: score}}}"""
    out: dict = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        out[(r["variant"], r["setting"], r["sampler"], r["steps"])][r["train_seed"]][r["seed"]] = r["score"]
    return out


def k_choices(cfg, work: Path) -> dict:
    """{(train_seed, cell key): label} — the k candidate with the lowest held-out score at λ = 1."""
    out = {}
    for seed in cfg.train_seeds:
        held = {}
        for lab in cfg.evaluation.k_selection_labels:
            f = work / "lambda" / lab / f"s{seed}" / "lambda.json"
            if f.is_file():
                held[lab] = {k: c["val_scores"]["1.0"] for k, c in json.loads(f.read_text()).items()}
        for cell in cfg.evaluation.cells:
            cands = {lab: h[cell.key] for lab, h in held.items() if cell.key in h}
            if len(cands) == len(cfg.evaluation.k_selection_labels) and cands:
                out[(seed, cell.key)] = min(cands, key=cands.get)
    return out


def hierarchical_ci(diffs: dict, n_boot: int, seed: int = 0) -> tuple[float, float]:
    """95 % CI of the mean paired difference; ``diffs`` = {train seed: [per-sampling-seed differences]}."""
    groups = [np.asarray(v, dtype=float) for v in diffs.values() if len(v)]
    if len(groups) < 2:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for b in range(n_boot):
        picked = rng.integers(0, len(groups), len(groups))
        means[b] = np.mean([groups[i][rng.integers(0, len(groups[i]), len(groups[i]))].mean() for i in picked])
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def summarise(cfg, work: Path, rows: list[dict]) -> list[dict]:
    scores = _scores(rows)
    chosen = k_choices(cfg, work)
    methods = [(v.label, v.label, "off") for v in cfg.variants]
    methods += [(f"{lab} + ε-scaling", lab, "eps_scaled") for lab in cfg.scaled_labels()]
    if cfg.evaluation.k_selection_labels:
        methods.append(("mdss (k by held-out)", None, "off"))
    out, tests = [], []
    for cell in cfg.evaluation.cells:
        base = scores.get((*BASE, cell.sampler, cell.steps), {})
        for name, label, setting in methods:
            per_seed, picked = {}, {}
            for t in cfg.train_seeds:
                lab = label if label is not None else chosen.get((t, cell.key))
                got = scores.get((lab, setting, cell.sampler, cell.steps), {}).get(t) if lab else None
                if got:
                    per_seed[t], picked[t] = got, lab
            if not per_seed:
                continue
            means = np.array([np.mean(list(v.values())) for v in per_seed.values()])
            row = {"method": name, "sampler": cell.sampler, "steps": cell.steps, "n_train_seeds": len(per_seed),
                   "mean": float(means.mean()), "std_over_train_seeds": float(means.std(ddof=1)) if len(means) > 1 else math.nan}
            if label is None:
                row["k_chosen"] = {str(t): lab for t, lab in picked.items()}
            if (label, setting) != BASE:
                paired = paired_difference(per_seed, base, cfg.evaluation.bootstrap)
                if paired:
                    paired.pop("n_train_seeds")
                    row.update(diff_vs_ddpm=paired.pop("diff"), **paired)
            out.append(row)
            # the data the row's test runs on: a held-out choice that picked one label in every seed repeats that
            # label's row, and the same test must not enter the false-discovery family twice
            tests.append((cell.sampler, cell.steps, setting, tuple(sorted(picked.items()))))
    return _add_q_values(out, tests)


def paired_difference(a: dict, b: dict, n_boot: int) -> dict:
    """a − b over the training seeds both have, each seed's sampling seeds paired ({train seed: {seed: score}});
    {} when no seed pairs."""
    diffs = {t: [v[s] - b[t][s] for s in v if s in b.get(t, {})] for t, v in a.items()}
    diffs = {t: d for t, d in diffs.items() if d}
    if not diffs:
        return {}
    d_t = np.array([np.mean(d) for d in diffs.values()])
    boot, tci = hierarchical_ci(diffs, n_boot), t_interval(d_t)
    ci = union(boot, tci)
    return dict(diff=float(d_t.mean()), ci_low=ci[0], ci_high=ci[1], verdict=verdict(ci), bootstrap_ci=list(boot),
                t_ci=list(tci), mde=min_detectable_effect(d_t), p=t_test_p(d_t), n_train_seeds=len(d_t))


def _add_q_values(rows: list[dict], tests: list | None = None) -> list[dict]:
    """``q``: the Benjamini–Hochberg q of every row with a ``p`` (the family: all those rows of one table). Rows
    with the same entry in ``tests`` (the data their test runs on) are one test: it enters the family once, and
    every such row gets its q."""
    tests = list(range(len(rows))) if tests is None else tests
    first: dict = {}
    for r, key in zip(rows, tests):
        if r.get("p") is not None:
            first.setdefault(key, r)
    for r, q in q_values(list(first.values()), lambda r: r.get("p")):
        r["q"] = q
    for r, key in zip(rows, tests):
        if r.get("p") is not None:
            r["q"] = first[key]["q"]
    return rows


def contrast_pairs(cfg) -> list[tuple[tuple[str, str], tuple[str, str], str]]:
    """The controls' questions, each a paired difference (first − second; negative = the first scores better)."""
    ev = cfg.evaluation
    pairs = [
        (("sdss_sample", "off"), ("sdss", "off"), "posterior sample vs mean, one step (does the shrinkage matter?)"),
        (("mdss_k4_sample", "off"), ("mdss_k4", "off"), "posterior sample vs mean, k = 4"),
        (("chain_only_k4", "off"), ("mdss_k4", "off"), "chain with the true ε vs the model's (does model error matter?)"),
        (("mdss_ddim_k4", "off"), ("mdss_k4", "off"), "DDIM chain vs posterior-mean chain, k = 4 (Table 3.8)"),
        (("sdss_ddim", "off"), ("sdss", "off"), "DDIM step vs posterior-mean step, one step (Table 3.8)"),
    ]
    if len(ev.k_selection_labels) == 2:
        short, long = ev.k_selection_labels
        pairs.append(((long, "off"), (short, "off"), f"{long} vs {short} (Tables 3.6–3.7)"))
    if ev.xi_ablation_label:
        lab = ev.xi_ablation_label
        pairs.append(((lab, "off"), (lab, "no_xi_denoise"), f"{lab}: ξ input denoising on vs off (Table 3.5)"))
    return pairs


def contrasts(cfg, rows: list[dict]) -> list[dict]:
    scores = _scores(rows)
    out = []
    for cell in cfg.evaluation.cells:
        for a, b, question in contrast_pairs(cfg):
            got = paired_difference(scores.get((*a, cell.sampler, cell.steps), {}),
                                    scores.get((*b, cell.sampler, cell.steps), {}), cfg.evaluation.bootstrap)
            if got:
                out.append({"first": "/".join(a), "second": "/".join(b), "question": question,
                            "sampler": cell.sampler, "steps": cell.steps, **got})
    return _add_q_values(out)


def _f(x, nd=3):
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}g}"


def _write_rows(path: Path, rows: list[dict]) -> None:
    """A CSV whose columns are every key of ``rows``, in first-seen order."""
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        w.writeheader()
        w.writerows(rows)


def training_seed_section(cfg, work: Path, rows: list[dict], out: Path) -> list[str]:
    summary = summarise(cfg, work, rows)
    if not summary:
        return []
    _write_rows(out / "headline.csv",
                [{**r, "k_chosen": json.dumps(r.get("k_chosen"))} if "k_chosen" in r else r for r in summary])
    cells = [(c.sampler, c.steps) for c in cfg.evaluation.cells]
    by = {(r["method"], r["sampler"], r["steps"]): r for r in summary}
    names = list(dict.fromkeys(r["method"] for r in summary))
    md = [f"### Over training seeds {cfg.train_seeds} (sampling seeds {cfg.evaluation.seeds} nested)", "",
          "Each cell: mean ± std over training seeds of the per-seed mean; below it the paired difference to the "
          "DDPM fine-tune [95 % CI: the union of the hierarchical bootstrap and the t interval], the verdict (better / worse when the CI excludes 0), and "
          "the effect these seeds could detect (MDE, 80 % power), and q, the Benjamini–Hochberg false-discovery-rate "
          "q of the t test over the training seeds, the family being every cell of this table, each test once (a "
          "`mdss (k by held-out)` cell whose held-out choice picked one k in every seed repeats that k's cell and "
          "shares its q; with this many cells a few CIs exclude 0 by chance alone). k and λ are chosen on the "
          "held-out split.", "",
          "| method | " + " | ".join(f"{s} {n}" for s, n in cells) + " |", "|---|" + "---|" * len(cells)]
    for name in names:
        parts = []
        for s, n in cells:
            r = by.get((name, s, n))
            if r is None:
                parts.append("–")
                continue
            text = f"{_f(r['mean'])} ± {_f(r['std_over_train_seeds'], 2)}"
            if "diff_vs_ddpm" in r:
                text += (f"<br>Δ {r['diff_vs_ddpm']:+.3g} [{_f(r['ci_low'])}, {_f(r['ci_high'])}] {r['verdict']}"
                         f"<br>MDE {_f(r['mde'], 2)}, q {_f(r.get('q'), 2)}")
            parts.append(text)
        md.append(f"| {name} | " + " | ".join(parts) + " |")
    md += _contrast_section(cfg, rows, out, cells)
    chosen = [r for r in summary if "k_chosen" in r]
    if chosen:
        md += ["", "k chosen on the held-out split (per training seed): " + "; ".join(
            f"{r['sampler']} {r['steps']}: " + ", ".join(f"s{t} {lab}" for t, lab in r["k_chosen"].items())
            for r in chosen), ""]
    return md + [""]


def _contrast_section(cfg, rows: list[dict], out: Path, cells: list) -> list[str]:
    found = contrasts(cfg, rows)
    if not found:
        return []
    _write_rows(out / "contrasts.csv", found)
    by = {(r["first"], r["second"], r["sampler"], r["steps"]): r for r in found}
    md = ["", "#### The controls: paired differences between methods (first − second, negative = first better)", "",
          "Same statistics as above (training seeds, sampling seeds nested; [95 % CI], MDE, and q over this "
          "table's cells).", "",
          "| first − second | question | " + " | ".join(f"{s} {n}" for s, n in cells) + " |",
          "|---|---|" + "---|" * len(cells)]
    for a, b, question in contrast_pairs(cfg):
        first, second = "/".join(a), "/".join(b)
        parts = []
        for s, n in cells:
            r = by.get((first, second, s, n))
            parts.append("–" if r is None else f"{r['diff']:+.3g} [{_f(r['ci_low'])}, {_f(r['ci_high'])}] "
                                               f"{r['verdict']}<br>MDE {_f(r['mde'], 2)}, q {_f(r.get('q'), 2)}")
        if any(p != "–" for p in parts):
            md.append(f"| {first} − {second} | {question} | " + " | ".join(parts) + " |")
    return md
