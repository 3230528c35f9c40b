"""Table 4.2: one row per method, CLIP-T and CLIP-I / DINO / ViT as mean ± std over seeds.

Input is the evaluation's per-image values::

    values[method_key][image_id] = {"clip_t": float, "seeds": {seed: {"clip_i": .., "dino": .., "vit": ..}}}

An image counts for a method only when its prompt and every seed are scored. With
``images="common"`` every row averages over the images all methods have (like with
like); with ``"each"`` a row uses all of its own, and the image count column says how
many.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Literal, Sequence

from agents.eval.metrics import CLIP_T, IMAGE_METRICS, METRIC_LABELS, MeanStd, mean_over, mean_std_over_seeds

Values = dict[str, dict[str, dict]]


@dataclass
class Row:
    key: str
    label: str
    cells: dict[str, MeanStd]
    n_images: int


def complete_images(per_image: dict[str, dict], seeds: Sequence[int]) -> set[str]:
    return {image_id for image_id, v in per_image.items()
            if isinstance(v.get(CLIP_T), (int, float)) and all(s in (v.get("seeds") or {}) for s in seeds)}


def summarise(values: Values, labels: dict[str, str], seeds: Sequence[int], images: Literal["common", "each"] = "common") -> list[Row]:
    """Rows in the order of ``labels`` (method key -> label)."""
    complete = {key: complete_images(values.get(key, {}), seeds) for key in labels}
    common = set.intersection(*complete.values()) if complete else set()
    rows = []
    for key, label in labels.items():
        use = sorted(common if images == "common" else complete[key])
        per_image = values.get(key, {})
        cells = {CLIP_T: mean_over(per_image[i][CLIP_T] for i in use)}
        for metric in IMAGE_METRICS:
            per_seed = {s: [per_image[i]["seeds"][s][metric] for i in use] for s in seeds} if use else {}
            cells[metric] = mean_std_over_seeds(per_seed)
        rows.append(Row(key=key, label=label, cells=cells, n_images=len(use)))
    return rows


def render_markdown(rows: Sequence[Row], seeds: Sequence[int], note: str = "") -> str:
    header = ["Method", METRIC_LABELS[CLIP_T], *(METRIC_LABELS[m] for m in IMAGE_METRICS), "Images"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [_md(row.label), row.cells[CLIP_T].format(with_std=False), *(row.cells[m].format() for m in IMAGE_METRICS), str(row.n_images)]
        lines.append("| " + " | ".join(cells) + " |")
    foot = (f"\nCLIP-T: prompt vs reference (CLIP); CLIP-I, DINO, ViT: recreated vs reference image; all cosine ×100. "
            f"Image metrics: mean ± std over seeds {list(seeds)} of the per-seed mean over images.")
    return "\n".join(lines) + "\n" + foot + ("\n" + note if note else "") + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_csv(rows: Sequence[Row]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["method", "label", "n_images", "n_seeds", "clip_t",
                     *(f"{m}_{s}" for m in IMAGE_METRICS for s in ("mean", "std"))])
    for row in rows:
        image_cells = [x for m in IMAGE_METRICS for x in (_num(row.cells[m].mean), _num(row.cells[m].std))]
        writer.writerow([_safe(row.key), _safe(row.label), row.n_images, row.cells[IMAGE_METRICS[0]].n_seeds,
                         _num(row.cells[CLIP_T].mean), *image_cells])
    return buf.getvalue()


def _num(x: float) -> str:
    return "" if x != x else f"{x:.4f}"  # NaN (no images) -> empty


def _safe(text: str) -> str:
    """Keep spreadsheets from running a label as a formula."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
