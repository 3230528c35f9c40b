"""The controls' questions as paired contrasts between methods (first − second, sliced W2 and NLL), and a
per-method summary of where each method beats or loses to the DDPM fine-tune.

The verdict table answers "does a method beat the DDPM fine-tune?"; these contrasts answer "why": the same
posterior-mean chain with the true ε (chain-only) or with the forward marginal's noise kept (posterior sample),
the DDIM chain, ξ... each pair shares the training seed's data stream and the cell's initial noise, so the
difference is paired per seed exactly like the vs-DDPM column.
"""
from __future__ import annotations

from benchmarks.mixture_bias.config import BenchConfig
from benchmarks.paired_stats import paired_summary, q_values


def contrast_pairs(k: int) -> list[tuple[str, str, str]]:
    """(first, second, question); negative = the first scores better."""
    return [
        (f"chain_only_k{k}", f"mdss_k{k}_mean", "the chain's shrinkage alone (true ε) vs MDSS"),
        (f"mdss_k{k}_sample", f"mdss_k{k}_mean", "MDSS: posterior sample vs mean"),
        ("sdss_sample", "sdss_mean", "SDSS: posterior sample vs mean"),
        (f"mdss_ddim_k{k}", f"mdss_k{k}_mean", "DDIM chain vs posterior-mean chain"),
        (f"mdss_k{k}_mean", "sdss_mean", f"k = {k} vs 1 step (posterior mean)"),
        ("eps_scale", f"mdss_k{k}_mean", "ε-scaling (no training) vs MDSS"),
    ]


def contrasts(cfg: BenchConfig, values: dict) -> list[dict]:
    """One row per (D, sampler, steps, pair) whose both methods have at least two common seeds; ``values`` is
    report.by_cell's {(dim, sampler, steps, method): {seed: cell}}."""
    rows = []
    for dim, sampler, steps in sorted({k[:3] for k in values}):
        for first, second, question in contrast_pairs(cfg.k):
            a, b = values.get((dim, sampler, steps, first), {}), values.get((dim, sampler, steps, second), {})
            seeds = sorted(set(a) & set(b))
            if len(seeds) < 2:
                continue
            row = {"dim": dim, "sampler": sampler, "steps": steps, "first": first, "second": second,
                   "question": question, "n_seeds": len(seeds)}
            for m in ("sw2", "nll"):
                row[m] = paired_summary([a[s][m] - b[s][m] for s in seeds], cfg.bootstrap)
            rows.append(row)
    for r, q in q_values(rows, lambda r: r["sw2"]["p"], lambda r: r["dim"]):  # one family per D, as vs DDPM
        r["sw2"]["q"] = q
    return rows


def contrast_table(rows: list[dict]) -> list[str]:
    """Markdown: per D, one line per pair, one column per sampler-steps cell (sliced W2 Δ, CI, verdict)."""
    lines = []
    for dim in sorted({r["dim"] for r in rows}):
        mine = [r for r in rows if r["dim"] == dim]
        cols = sorted({(r["sampler"], r["steps"]) for r in mine})
        pairs = list(dict.fromkeys((r["first"], r["second"], r["question"]) for r in mine))
        by = {(r["sampler"], r["steps"], r["first"], r["second"]): r for r in mine}
        lines += [f"D = {dim}:", "", "| first − second | question | " + " | ".join(f"{s}-{n}" for s, n in cols) + " |",
                  "|---|---|" + "---|" * len(cols)]
        for first, second, question in pairs:
            cells = []
            for s, n in cols:
                r = by.get((s, n, first, second))
                if r is None:
                    cells.append("—")
                    continue
                w = r["sw2"]
                cells.append(f"{w['verdict']} ({w['diff']:+.4f} [{w['ci'][0]:+.4f}, {w['ci'][1]:+.4f}]; q {w['q']:.2f})")
            lines.append(f"| {first} − {second} | {question} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def summary_table(rows: list[dict]) -> list[str]:
    """Markdown: per D and method, the cells where it beats (CI below 0) or loses to the DDPM fine-tune in sliced
    W2, from the report's aggregate rows."""
    lines = ["| D | method | better than the DDPM fine-tune in | worse in | inconclusive | of the better / worse, "
             "discoveries at 5 % FDR (q < 0.05) |", "|---|---|---|---|---|---|"]
    for dim in sorted({r["dim"] for r in rows}):
        for method in dict.fromkeys(r["method"] for r in rows if r["dim"] == dim and r["method"] != "ddpm"):
            mine = [r for r in rows if (r["dim"], r["method"]) == (dim, method) and "sw2_verdict" in r]
            better = [_cell(r) for r in mine if r["sw2_verdict"] == "better"]
            worse = [_cell(r) for r in mine if r["sw2_verdict"] == "worse"]
            rest = sum(r["sw2_verdict"] == "inconclusive" for r in mine)
            found = [_cell(r) for r in mine if r["sw2_verdict"] in ("better", "worse") and r.get("sw2_q", 1.0) < 0.05]
            lines.append(f"| {dim} | {method} | {', '.join(better) or '—'} | {', '.join(worse) or '—'} | "
                         f"{rest} of {len(mine)} | {', '.join(found) or '—'} |")
    return lines


def _cell(row: dict) -> str:
    return f"{row['sampler']}-{row['steps']}"
