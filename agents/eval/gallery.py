"""The comparison gallery (thesis Figure 4.6 / B.12): for each reference image, the
reference and then every method's recreated image with its prompt and scores.

A static HTML page in the evaluation folder; images are linked relatively, every
text is escaped (agents.report.esc / href).
"""
from __future__ import annotations

from typing import Sequence

from agents.eval.metrics import CLIP_T, IMAGE_METRICS, METRIC_LABELS
from agents.eval.table import Row
from agents.html_text import esc, href

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
.banner{background:#fff3cd;border:2px solid #d39e00;padding:.8em;margin:1em 0;font-weight:bold}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .6em;font-size:.9em;vertical-align:top}
table.gallery td{width:200px}
table.gallery img{display:block;max-width:192px;max-height:192px}
.prompt{font-size:.8em;white-space:pre-wrap;max-height:12em;overflow:auto;background:#f6f6f6;padding:.3em}
.scores{font-size:.75em;color:#555}
.missing{color:#b00020;font-size:.85em}
"""


def _fmt(x) -> str:
    return f"{x:.2f}" if isinstance(x, (int, float)) else "–"


def render_gallery(images: Sequence, labels: dict[str, str], values: dict[str, dict[str, dict]], rows: Sequence[Row],
                   seed: int, random_weight_roles: Sequence[str] = (), missing: dict[str, dict[str, str]] | None = None) -> str:
    """``images``: EvalImage-like objects (image_id, rel, reference_rel); ``values`` as in agents.eval.table
    plus ``prompt`` per image and ``image`` per seed; ``missing[key][image_id]``: why a method has nothing."""
    missing = missing or {}
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', "<title>Reverse-prompt comparison</title>",
           f"<style>{_CSS}</style></head><body>", "<h1>Reverse-prompt comparison</h1>"]
    if random_weight_roles:
        out.append('<div class="banner" role="alert">Random-weight models serve '
                   f"{esc(', '.join(random_weight_roles))}: these images, prompts and scores only exercise the plumbing.</div>")
    out.append("<table><tr><th>Method</th>" + "".join(f"<th>{esc(METRIC_LABELS[m])}</th>" for m in (CLIP_T, *IMAGE_METRICS)) + "<th>Images</th></tr>")
    for row in rows:
        cells = [row.cells[CLIP_T].format(with_std=False), *(row.cells[m].format() for m in IMAGE_METRICS)]
        out.append(f"<tr><td>{esc(row.label)}</td>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + f"<td>{row.n_images}</td></tr>")
    out.append("</table>")
    out.append(f"<p>Recreated images below are seed {esc(seed)}; scores are that image's (CLIP-T is the prompt's).</p>")
    out.append('<table class="gallery"><tr><th>Reference</th>' + "".join(f"<th>{esc(label)}</th>" for label in labels.values()) + "</tr>")
    for image in images:
        cells = [f'<td><img src="{href(image.reference_rel)}" alt="reference" loading="lazy"><div class="scores">{esc(image.rel)}</div></td>']
        for key in labels:
            cells.append(_cell(values.get(key, {}).get(image.image_id), seed, missing.get(key, {}).get(image.image_id)))
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table></body></html>\n")
    return "\n".join(out)


def _cell(value: dict | None, seed: int, why: str | None) -> str:
    if not value or not value.get("prompt"):
        return f'<td><div class="missing">{esc(why or "not evaluated")}</div></td>'
    per_seed = (value.get("seeds") or {}).get(seed) or {}
    img = f'<img src="{href(per_seed["image"])}" alt="recreated" loading="lazy">' if per_seed.get("image") else '<div class="missing">no image yet</div>'
    scores = f"CLIP-T {_fmt(value.get(CLIP_T))} · " + " · ".join(f"{METRIC_LABELS[m]} {_fmt(per_seed.get(m))}" for m in IMAGE_METRICS)
    return f'<td>{img}<div class="scores">{esc(scores)}</div><div class="prompt">{esc(value["prompt"])}</div></td>'
