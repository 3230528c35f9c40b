"""The comparison gallery (thesis Figure 4.6 / B.12): for each reference image, the
reference and then every method's recreated image with its prompt and scores.

A static HTML page in the evaluation folder, rendered from agents/templates/eval_gallery.html
(jinja2, autoescaped); images are linked relatively (agents.browser.html_text.href).
"""
from __future__ import annotations

from typing import Sequence

from agents.eval.metrics import CLIP_T, IMAGE_METRICS, METRIC_LABELS
from agents.eval.table import Row
from agents.browser.html_render import render


def _fmt(x) -> str:
    return f"{x:.2f}" if isinstance(x, (int, float)) else "–"


def render_gallery(images: Sequence, labels: dict[str, str], values: dict[str, dict[str, dict]], rows: Sequence[Row],
                   seed: int, random_weight_roles: Sequence[str] = (), missing: dict[str, dict[str, str]] | None = None) -> str:
    """``images``: EvalImage-like objects (image_id, rel, reference_rel); ``values`` as in agents.eval.table
    plus ``prompt`` per image and ``image`` per seed; ``missing[key][image_id]``: why a method has nothing."""
    missing = missing or {}
    table = [{"label": row.label, "n_images": row.n_images,
              "cells": [row.cells[CLIP_T].format(with_std=False), *(row.cells[m].format() for m in IMAGE_METRICS)]}
             for row in rows]
    gallery = [{"reference": image.reference_rel, "name": image.rel,
                "cells": [_cell(values.get(key, {}).get(image.image_id), seed, missing.get(key, {}).get(image.image_id))
                          for key in labels]}
               for image in images]
    return render("eval_gallery.html", random_weight_roles=list(random_weight_roles),
                  metric_labels=[METRIC_LABELS[m] for m in (CLIP_T, *IMAGE_METRICS)], rows=table, seed=seed,
                  method_labels=list(labels.values()), images=gallery)


def _cell(value: dict | None, seed: int, why: str | None) -> dict:
    if not value or not value.get("prompt"):
        return {"missing": why or "not evaluated"}
    per_seed = (value.get("seeds") or {}).get(seed) or {}
    scores = f"CLIP-T {_fmt(value.get(CLIP_T))} · " + " · ".join(f"{METRIC_LABELS[m]} {_fmt(per_seed.get(m))}" for m in IMAGE_METRICS)
    return {"missing": None, "image": per_seed.get("image"), "scores": scores, "prompt": value["prompt"]}
