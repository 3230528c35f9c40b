"""Statistics over independent fine-tuning runs (training seeds), sampling seeds nested within each.

For every method and cell: mean ± std over training seeds of the per-seed mean score; the paired difference to
the DDPM fine-tune (same training seed, same sampling seed: the same data stream and initial noise), with a
hierarchical bootstrap CI (training seeds resampled, then each one's sampling seeds) and, because a percentile
bootstrap over 3 seeds is too narrow, the t interval over the training seeds' mean differences; the reported CI is
the union of the two. A verdict: better / worse when that CI excludes 0, else inconclusive; and the minimal
detectable effect (80 % power, two-sided 5 %: (t₀.₉₇₅ + t₀.₈) · sd over training seeds / √n, n − 1 degrees of
freedom), with the exact one from the noncentral t beside it (``mde_exact``), and beside the t test's p the exact
sign-flip p over the training seeds (``p_sign_flip``: no normality needed, but never below 2/2ⁿ). Selected rows
(every choice per cell and training seed, on the held-out split only): ``<label> + ε-scaling`` (λ from the preset
grid), ``<label> + ε-scaling (extended λ grid)`` (λ from the grid with ``lambda_grid_extended``), ``mdss (k by
held-out)`` (the k candidate with the best held-out score at λ = 1), ``mdss (k by held-out) + ε-scaling (extended
λ grid)`` (that k, at its own held-out λ) and ``chain_only (k by held-out)`` (the chain-only control of that k).

The pre-specified contrasts (issue #28; ``PRESPECIFIED``) compare only such held-out-chosen rows and form their own
false-discovery family in ``contrasts.csv``; ``held_out_selection.csv`` holds every held-out score behind the
choices.
"""
from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from benchmarks.paired_stats import (mde_factors, min_detectable_effect, q_values, sign_flip_p, t_interval, t_test_p,
                                     union, verdict)

BASE = ("ddpm", "off")
EXT = " + ε-scaling (extended λ grid)"
HELD_OUT_K = "mdss (k by held-out)"
HELD_OUT_K_EPS = HELD_OUT_K + EXT
CHAIN_HELD_OUT = "chain_only (k by held-out)"
EPS_EXT = "ddpm" + EXT
PRESPECIFIED_ROWS = (HELD_OUT_K, HELD_OUT_K_EPS, CHAIN_HELD_OUT, EPS_EXT)
"""The rows issue #28's control questions are judged on: every k and λ in them chosen on the held-out split."""
PRESPECIFIED_FAMILY = "pre-specified (issue #28)"
CONTROLS_FAMILY = "controls"
PRESPECIFIED = [
    (CHAIN_HELD_OUT, HELD_OUT_K, "chain with the true ε vs the model's, at the held-out k (does model error matter?)"),
    (EPS_EXT, HELD_OUT_K, "untrained ε-scaling (λ by held-out, extended grid) vs MDSS (k by held-out)"),
    (HELD_OUT_K_EPS, EPS_EXT, "MDSS + ε-scaling vs ε-scaling alone (does MDSS add to ε-scaling?)"),
    (HELD_OUT_K_EPS, HELD_OUT_K, "MDSS + ε-scaling vs MDSS alone (does ε-scaling add to MDSS?)"),
]
"""Issue #28's decisive control contrasts (first − second, negative = first better), fixed before the run."""


def _scores(rows: list[dict]) -> dict:
    """{(variant, setting, sampler, steps): {train_seed: {sampling seed: score}}}"""
    out: dict = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        out[(r["variant"], r["setting"], r["sampler"], r["steps"])][r["train_seed"]][r["seed"]] = r["score"]
    return out


def k_choices(cfg, work: Path) -> dict:
    """{(train_seed, cell key): label} — the k candidate with the lowest held-out score at λ = 1."""
    out = {}
    for seed in cfg.all_train_seeds():
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


def held_out_rows(cfg, work: Path) -> list[dict]:
    """Every held-out score behind the k and λ choices (``held_out_selection.csv``): per searched variant, training
    seed, cell and λ, the score on the held-out split, and which choices it made — ``lambda_chosen`` (best of the
    preset grid) and ``lambda_chosen_extended`` (best with the extended grid) for the ε-scaled variants,
    ``k_chosen`` (the best k candidate at λ = 1 in that seed and cell) for the k candidates."""
    ev, chosen = cfg.evaluation, k_choices(cfg, work)
    cells = {c.key: c for c in ev.cells}
    scaled = set(cfg.scaled_labels())
    out = []
    for label in cfg.searched_labels():
        for t in cfg.seeds_for(label):
            f = work / "lambda" / label / f"s{t}" / "lambda.json"
            if not f.is_file():
                continue
            for key, c in json.loads(f.read_text()).items():
                if key not in cells:
                    continue
                for lam, score in c["val_scores"].items():
                    lam = float(lam)
                    row = {"variant": label, "train_seed": t, "sampler": cells[key].sampler, "steps": cells[key].steps,
                           "lambda": lam, "val_score": score, "in_preset_grid": lam in ev.lambda_grid}
                    if label in scaled:
                        row["lambda_chosen"] = lam == c["lambda"]
                        if "lambda_extended" in c:
                            row["lambda_chosen_extended"] = lam == c["lambda_extended"]
                    if label in ev.k_selection_labels and lam == 1.0:
                        row["k_chosen"] = chosen.get((t, key)) == label
                    out.append(row)
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


def methods(cfg) -> list[tuple[str, Callable[[int, str, dict], Optional[str]], str, bool]]:
    """The headline's rows: (name, the variant a training seed and cell key use (given the held-out k choices),
    setting, selected: whether the variant is chosen per seed and cell)."""
    ev = cfg.evaluation
    fixed = lambda lab: (lambda t, key, chosen: lab)  # noqa: E731
    out = [(v.label, fixed(v.label), "off", False) for v in cfg.variants]
    out += [(f"{lab} + ε-scaling", fixed(lab), "eps_scaled", False) for lab in cfg.scaled_labels()]
    if ev.lambda_grid_extended is not None:
        out += [(f"{lab}{EXT}", fixed(lab), "eps_scaled_ext", False) for lab in cfg.scaled_labels()]
    cands = ev.k_selection_labels
    if cands:
        pick = lambda t, key, chosen: chosen.get((t, key))  # noqa: E731
        out.append((HELD_OUT_K, pick, "off", True))
        if ev.lambda_grid_extended is not None and set(cands) <= set(cfg.scaled_labels()):
            out.append((HELD_OUT_K_EPS, pick, "eps_scaled_ext", True))
        if all(cfg.chain_only_for(c) for c in cands):
            out.append((CHAIN_HELD_OUT, lambda t, key, chosen: cfg.chain_only_for(chosen[(t, key)])
                        if (t, key) in chosen else None, "off", True))
    return out


def method_series(cfg, work: Path, rows: list[dict]) -> dict:
    """{(method name, sampler, steps): ({train seed: {sampling seed: score}}, {train seed: variant used})} for
    every headline row with data, over every training seed the row has."""
    scores, chosen = _scores(rows), k_choices(cfg, work)
    out = {}
    for cell in cfg.evaluation.cells:
        for name, label_for, setting, _ in methods(cfg):
            per_seed, picked = {}, {}
            for t in cfg.all_train_seeds():
                lab = label_for(t, cell.key, chosen)
                got = scores.get((lab, setting, cell.sampler, cell.steps), {}).get(t) if lab else None
                if got:
                    per_seed[t], picked[t] = got, lab
            if per_seed:
                out[(name, cell.sampler, cell.steps)] = (per_seed, picked)
    return out


def _data_key(sampler: str, steps: int, per_seed: dict) -> tuple:
    """What a row's test runs on: rows with the same scores are one test (a held-out choice that picked one label in
    every seed repeats that label's row; an ε-scaled setting whose λ was 1, or the other grid's, in every seed
    repeats that row), and the same test must not enter the false-discovery family twice."""
    return (sampler, steps, tuple(sorted((t, tuple(sorted(v.items()))) for t, v in per_seed.items())))


def summarise(cfg, work: Path, rows: list[dict], series: Optional[dict] = None) -> list[dict]:
    series = method_series(cfg, work, rows) if series is None else series
    selected = {name for name, _, _, sel in methods(cfg) if sel}
    out, tests = [], []
    for cell in cfg.evaluation.cells:
        base = series.get(("ddpm", cell.sampler, cell.steps), ({}, {}))[0]
        for name, _, setting, _ in methods(cfg):
            if (name, cell.sampler, cell.steps) not in series:
                continue
            per_seed, picked = series[(name, cell.sampler, cell.steps)]
            means = np.array([np.mean(list(v.values())) for v in per_seed.values()])
            row = {"method": name, "sampler": cell.sampler, "steps": cell.steps, "n_train_seeds": len(per_seed),
                   "mean": float(means.mean()), "std_over_train_seeds": float(means.std(ddof=1)) if len(means) > 1 else math.nan}
            if name in selected:
                row["k_chosen"] = {str(t): lab for t, lab in picked.items()}
            if (name, setting) != BASE:
                paired = paired_difference(per_seed, base, cfg.evaluation.bootstrap)
                if paired:
                    paired.pop("n_train_seeds")
                    row.update(diff_vs_ddpm=paired.pop("diff"), **paired)
            out.append(row)
            tests.append(_data_key(cell.sampler, cell.steps, per_seed))
    return _add_q_values(out, tests)


def paired_by_seed(a: dict, b: dict) -> dict:
    """{train seed: [a − b per sampling seed both have]} over the training seeds with at least one such pair
    ({train seed: {seed: score}} each)."""
    diffs = {t: [v[s] - b[t][s] for s in v if s in b.get(t, {})] for t, v in a.items()}
    return {t: d for t, d in diffs.items() if d}


def paired_difference(a: dict, b: dict, n_boot: int) -> dict:
    """a − b over the training seeds both have, each seed's sampling seeds paired ({train seed: {seed: score}});
    {} when no seed pairs."""
    diffs = paired_by_seed(a, b)
    if not diffs:
        return {}
    d_t = np.array([np.mean(d) for d in diffs.values()])
    boot, tci = hierarchical_ci(diffs, n_boot), t_interval(d_t)
    ci = union(boot, tci)
    mde = min_detectable_effect(d_t)
    return dict(diff=float(d_t.mean()), ci_low=ci[0], ci_high=ci[1], verdict=verdict(ci), bootstrap_ci=list(boot),
                t_ci=list(tci), mde=mde, p=t_test_p(d_t), n_train_seeds=len(d_t), mde_exact=exact_mde(mde, len(d_t)),
                p_sign_flip=sign_flip_p(d_t))


def exact_mde(mde: float, n: int) -> float:
    """The tabled MDE (the (t₀.₉₇₅ + t₀.₈)·sd/√n formula) converted to the exact noncentral-t value
    (``paired_stats.mde_factors``); NaN below two seeds."""
    if n < 2 or not math.isfinite(mde):
        return math.nan
    approx, exact = mde_factors(n)
    return mde * exact / approx


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
    chains = [(v.label, mdss.label) for v in cfg.variants if v.oracle_rollout
              for mdss in cfg.variants if not mdss.oracle_rollout and mdss.strategy == v.strategy]
    pairs = [
        (("sdss_sample", "off"), ("sdss", "off"), "posterior sample vs mean, one step (does the shrinkage matter?)"),
        (("mdss_k4_sample", "off"), ("mdss_k4", "off"), "posterior sample vs mean, k = 4"),
        *[((chain, "off"), (mdss, "off"), "chain with the true ε vs the model's (does model error matter?)")
          for chain, mdss in chains],
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


def contrasts(cfg, rows: list[dict], series: Optional[dict] = None) -> list[dict]:
    """The controls' pairs (``contrast_pairs``; one false-discovery family) and, given the headline's
    ``method_series``, issue #28's pre-specified contrasts between held-out-chosen rows (``PRESPECIFIED``; a family
    of their own, computed only where both rows have every training seed they should)."""
    scores = _scores(rows)
    out = []
    for cell in cfg.evaluation.cells:
        for a, b, question in contrast_pairs(cfg):
            got = paired_difference(scores.get((*a, cell.sampler, cell.steps), {}),
                                    scores.get((*b, cell.sampler, cell.steps), {}), cfg.evaluation.bootstrap)
            if got:
                out.append({"first": "/".join(a), "second": "/".join(b), "question": question,
                            "sampler": cell.sampler, "steps": cell.steps, **got, "family": CONTROLS_FAMILY})
    _add_q_values(out)
    pre = []
    for cell in cfg.evaluation.cells:
        for first, second, question in PRESPECIFIED if series is not None else []:
            a, b = (series.get((name, cell.sampler, cell.steps), ({}, {}))[0] for name in (first, second))
            if not a or not b or set(a) != set(b):  # no row chosen on fewer seeds than it should be: no contrast
                continue
            got = paired_difference(a, b, cfg.evaluation.bootstrap)
            if got:
                pre.append({"first": first, "second": second, "question": question, "sampler": cell.sampler,
                            "steps": cell.steps, **got, "family": PRESPECIFIED_FAMILY})
    return out + _add_q_values(pre)


def _f(x, nd=3):
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}g}"


def _write_rows(path: Path, rows: list[dict]) -> None:
    """A CSV whose columns are every key of ``rows``, in first-seen order."""
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        w.writeheader()
        w.writerows(rows)


def training_seed_section(cfg, work: Path, rows: list[dict], out: Path) -> list[str]:
    held = held_out_rows(cfg, work)
    if held:
        _write_rows(out / "held_out_selection.csv", held)
    series = method_series(cfg, work, rows)
    summary = summarise(cfg, work, rows, series)
    if not summary:
        return []
    _write_rows(out / "headline.csv",
                [{**r, "k_chosen": json.dumps(r.get("k_chosen"))} if "k_chosen" in r else r for r in summary])
    cells = [(c.sampler, c.steps) for c in cfg.evaluation.cells]
    by = {(r["method"], r["sampler"], r["steps"]): r for r in summary}
    names = list(dict.fromkeys(r["method"] for r in summary))
    seeds = f"{cfg.train_seeds}" + (f", and {cfg.extra_seeds.seeds} for {', '.join(cfg.extra_seeds.labels)}"
                                     if cfg.extra_seeds else "")
    md = [f"### Over training seeds {seeds} (sampling seeds {cfg.evaluation.seeds} nested)", "",
          "Each cell: mean ± std over training seeds of the per-seed mean; below it the paired difference to the "
          "DDPM fine-tune [95 % CI: the union of the hierarchical bootstrap and the t interval], the verdict (better / worse when the CI excludes 0), and "
          "the effect these seeds could detect (MDE, 80 % power), and q, the Benjamini–Hochberg false-discovery-rate "
          "q of the t test over the training seeds, the family being every cell of this table, each test once (a "
          "`mdss (k by held-out)` cell whose held-out choice picked one k in every seed repeats that k's cell and "
          "shares its q; with this many cells a few CIs exclude 0 by chance alone). k and λ are chosen on the "
          "held-out split (every held-out score behind the choices: `held_out_selection.csv`). `headline.csv` adds the "
          "exact MDE from the noncentral t (`mde_exact`) and the exact sign-flip p over the training seeds "
          "(`p_sign_flip`, never below 2/2ⁿ). A row with fewer training seeds than the DDPM fine-tune is paired on "
          "the seeds it has (`n_train_seeds`).", "",
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
    md += _contrast_section(cfg, rows, out, cells, series)
    chosen = [r for r in summary if "k_chosen" in r]
    if chosen:
        md += ["", "k chosen on the held-out split (per training seed): " + "; ".join(
            f"{r['sampler']} {r['steps']}: " + ", ".join(f"s{t} {lab}" for t, lab in r["k_chosen"].items())
            for r in chosen), ""]
    return md + [""]


def _contrast_section(cfg, rows: list[dict], out: Path, cells: list, series: Optional[dict] = None) -> list[str]:
    found = contrasts(cfg, rows, series)
    if not found:
        return []
    _write_rows(out / "contrasts.csv", found)
    by = {(r["first"], r["second"], r["sampler"], r["steps"]): r for r in found}
    md = ["", "#### The controls: paired differences between methods (first − second, negative = first better)", "",
          "Same statistics as above (training seeds, sampling seeds nested; [95 % CI], MDE, and q over this "
          "table's cells).", ""]
    md += _contrast_table(by, cells, [("/".join(a), "/".join(b), q) for a, b, q in contrast_pairs(cfg)])
    if any(r["family"] == PRESPECIFIED_FAMILY for r in found):
        md += ["", "#### Pre-specified control contrasts (issue #28): held-out-chosen rows only", "",
               "Fixed before the run (`seed_stats.PRESPECIFIED`): every k and λ in these rows is chosen on the "
               "held-out split; q over this table's cells alone (a family of its own); p (sign flip) is the exact "
               "permutation p over the training seeds; MDE exact from the noncentral t.", ""]
        md += _contrast_table(by, cells, PRESPECIFIED, exact=True)
    return md


def _contrast_table(by: dict, cells: list, pairs: list, exact: bool = False) -> list[str]:
    md = ["| first − second | question | " + " | ".join(f"{s} {n}" for s, n in cells) + " |",
          "|---|---|" + "---|" * len(cells)]
    for first, second, question in pairs:
        parts = []
        for s, n in cells:
            r = by.get((first, second, s, n))
            if r is None:
                parts.append("–")
                continue
            text = f"{r['diff']:+.3g} [{_f(r['ci_low'])}, {_f(r['ci_high'])}] {r['verdict']}<br>MDE {_f(r['mde'], 2)}"
            if exact:
                text += f" (exact {_f(r.get('mde_exact'), 2)}), p (sign flip) {_f(r.get('p_sign_flip'), 2)}"
            parts.append(text + f", q {_f(r.get('q'), 2)}")
        if any(p != "–" for p in parts):
            md.append(f"| {first} − {second} | {question} | " + " | ".join(parts) + " |")
    return md
