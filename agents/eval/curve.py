"""Figure 4.7: metric vs optimisation step for ARPO, as data (CSV) and a hand-drawn SVG.

At step k an image contributes the iteration ARPO would return had it stopped after k
steps (agents.eval.arpo_source.best_up_to); each point is the mean over images. Two
sources of numbers:

- recorded: CLIP-T and CLIP-I exactly as the agent recorded them (its own seeds);
- all_metrics: the evaluation's values for that step's prompt at the evaluation seeds
  (CLIP-T and the mean over seeds of CLIP-I, DINO, ViT).

matplotlib is not a dependency; the SVG is a few panels of polylines, one panel per
metric, one line per ARPO method, every text escaped.
"""
from __future__ import annotations

import csv
import html
import io
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from agents.eval.arpo_source import best_up_to, last_step
from agents.eval.metrics import CLIP_I, CLIP_T, IMAGE_METRICS, METRIC_LABELS


@dataclass
class Series:
    label: str  # the ARPO method's label
    metric: str
    steps: list[int]
    values: list[float]
    n_images: int


def recorded_series(label: str, records: dict[str, dict]) -> list[Series]:
    """CLIP-T and CLIP-I (×100) per step from the agent's recorded iterations."""
    if not records:
        return []
    steps = list(range(last_step(records) + 1))
    out = []
    for metric in (CLIP_T, CLIP_I):
        values = []
        for k in steps:
            picks = [best_up_to(r, k) for r in records.values()]
            vals = [100.0 * float(p[metric]) for p in picks if p is not None and isinstance(p.get(metric), (int, float))]
            values.append(float(np.mean(vals)) if vals else float("nan"))
        out.append(Series(label, metric, steps, values, len(records)))
    return out


def evaluated_series(label: str, per_step: dict[int, dict[str, dict]], seeds: Sequence[int]) -> list[Series]:
    """All four metrics per step from the evaluation's values (``per_step[k][image_id]``), over the
    images complete at every step."""
    if not per_step:
        return []
    steps = sorted(per_step)
    complete = [{i for i, v in per_step[k].items() if v.get(CLIP_T) is not None and all(s in v.get("seeds", {}) for s in seeds)} for k in steps]
    images = sorted(set.intersection(*complete)) if complete else []
    out = []
    for metric in (CLIP_T, *IMAGE_METRICS):
        values = []
        for k in steps:
            if not images:
                values.append(float("nan"))
            elif metric == CLIP_T:
                values.append(float(np.mean([per_step[k][i][CLIP_T] for i in images])))
            else:
                values.append(float(np.mean([[per_step[k][i]["seeds"][s][metric] for s in seeds] for i in images])))
        out.append(Series(label, metric, steps, values, len(images)))
    return out


def render_csv(series: Sequence[Series]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["method", "metric", "step", "value", "n_images"])
    for s in series:
        for k, v in zip(s.steps, s.values):
            writer.writerow([s.label, s.metric, k, "" if v != v else f"{v:.4f}", s.n_images])
    return buf.getvalue()


_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
_W, _H, _PAD_L, _PAD_R, _PAD_T, _PAD_B = 320, 220, 52, 12, 28, 36


def render_svg(series: Sequence[Series], title: str = "ARPO: metric vs optimisation step") -> str:
    """One panel per metric side by side; a legend of methods underneath."""
    metrics = [m for m in (CLIP_T, *IMAGE_METRICS) if any(s.metric == m for s in series)]
    labels = list(dict.fromkeys(s.label for s in series))
    width = max(1, len(metrics)) * _W
    legend_h = 18 * len(labels) + 10
    height = _H + 30 + legend_h
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
           f'<text x="{width / 2}" y="16" text-anchor="middle" font-size="13">{html.escape(title)}</text>']
    for p, metric in enumerate(metrics):
        out.append(_panel([s for s in series if s.metric == metric], labels, p * _W, 24, METRIC_LABELS[metric]))
    for j, label in enumerate(labels):
        y = _H + 40 + 18 * j
        colour = _COLOURS[j % len(_COLOURS)]
        out.append(f'<line x1="10" y1="{y - 4}" x2="34" y2="{y - 4}" stroke="{colour}" stroke-width="2"/>'
                   f'<text x="40" y="{y}">{html.escape(label)}</text>')
    out.append("</svg>\n")
    return "\n".join(out)


def _panel(series: Sequence[Series], labels: list[str], x0: float, y0: float, name: str) -> str:
    pts = [(k, v) for s in series for k, v in zip(s.steps, s.values) if v == v]
    left, top = x0 + _PAD_L, y0 + _PAD_T
    w, h = _W - _PAD_L - _PAD_R, _H - _PAD_T - _PAD_B
    parts = [f'<text x="{x0 + _W / 2}" y="{y0 + 14}" text-anchor="middle" font-weight="bold">{html.escape(name)}</text>',
             f'<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="none" stroke="#888"/>']
    if not pts:
        parts.append(f'<text x="{left + w / 2}" y="{top + h / 2}" text-anchor="middle">no data</text>')
        return "\n".join(parts)
    kmax = max(max(k for k, _ in pts), 1)
    lo, hi = min(v for _, v in pts), max(v for _, v in pts)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    margin = 0.05 * (hi - lo)
    lo, hi = lo - margin, hi + margin

    def xy(k: float, v: float) -> tuple[float, float]:
        return left + w * k / kmax, top + h * (1 - (v - lo) / (hi - lo))

    for tick in np.linspace(lo, hi, 5):
        _, y = xy(0, tick)
        parts.append(f'<line x1="{left - 3}" y1="{y:.1f}" x2="{left}" y2="{y:.1f}" stroke="#888"/>'
                     f'<text x="{left - 5}" y="{y + 4:.1f}" text-anchor="end">{tick:.1f}</text>')
    for k in range(0, kmax + 1, max(1, kmax // 10)):
        x, _ = xy(k, lo)
        parts.append(f'<text x="{x:.1f}" y="{top + h + 14}" text-anchor="middle">{k}</text>')
    parts.append(f'<text x="{left + w / 2}" y="{top + h + 30}" text-anchor="middle">optimisation step</text>')
    for s in series:
        colour = _COLOURS[labels.index(s.label) % len(_COLOURS)]
        coords = [xy(k, v) for k, v in zip(s.steps, s.values) if v == v]
        if len(coords) > 1:
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in coords)}"/>')
        parts.extend(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colour}"/>' for x, y in coords)
    return "\n".join(parts)
