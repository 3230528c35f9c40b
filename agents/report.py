"""A static, self-contained HTML report of a batch (``<out>/report.html``).

For each image: the reference, every iteration's recreated image(s) with CLIP-T and
CLIP-I, the best iteration highlighted, and the final prompt split into content and
style; errors show the cause. The header states the config profile and, when any role
runs random-weight models (the offline model kit, or CLIP without pretrained weights),
a banner saying the outputs only exercise plumbing and speed.

Images are linked relatively (the output folder can be moved or served as is); every
piece of text is escaped with :func:`html.escape`, and link targets are URL-quoted.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Optional

from actors.offline_kit import is_random_weight_model
from agents.config import ArpoConfig
from agents.edit_strip import edits_strip_for_report
from agents.html_text import esc, href
from agents.results import atomic_write_text, joined

REPORT_HTML = "report.html"



def random_weight_roles(cfg: ArpoConfig) -> list[str]:
    """Roles whose model is known to have random weights (offline kit marker or no CLIP weights)."""
    roles = []
    for role, model in (("t2i", cfg.t2i.model), ("llm", cfg.llm.model), ("vlm", cfg.vlm.model),
                        ("captioner", cfg.captioner.model)):
        if is_random_weight_model(model):
            roles.append(role)
    clip = cfg.clip
    if clip.pretrained is None or is_random_weight_model(clip.pretrained) or is_random_weight_model(clip.model_config_dir):
        roles.append("clip")
    return roles


@dataclass
class ReportHeader:
    """What the top of the report says about the run."""

    profile: str  # the config file used, or "<defaults>"
    random_weight_roles: list[str] = field(default_factory=list)
    total: Optional[int] = None  # images discovered (None: unknown)
    running: int = 0
    interrupted: bool = False


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
.banner{background:#fff3cd;border:2px solid #d39e00;padding:.8em;margin:1em 0;font-weight:bold}
.summary span{margin-right:1.5em}
section.image{border-top:1px solid #ccc;padding:1em 0}
section.error h2{color:#b00020}
.strip{display:flex;flex-wrap:wrap;gap:.6em;align-items:flex-start}
figure{margin:0;padding:.3em;border:2px solid transparent;text-align:center;font-size:.85em}
figure.best{border-color:#2e7d32;background:#e8f5e9}
figure img{display:block;max-width:192px;max-height:192px;margin:0 auto}
.prompt{background:#f6f6f6;padding:.5em;white-space:pre-wrap}
pre.error{color:#b00020;white-space:pre-wrap}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .5em;font-size:.85em}
"""


def _score(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "–"


def render_report(records: Iterable[dict], header: ReportHeader, extra: Optional[Callable[[dict], str]] = None) -> str:
    """The whole report as an HTML string. Image paths in records are relative to the output folder.

    ``extra(record)`` returns trusted HTML appended to that image's section (the prompt
    edits strip); it must escape whatever text it shows."""
    records = list(records)
    done = sum(r.get("status") == "done" for r in records)
    failed = sum(r.get("status") == "error" for r in records)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>ARPO reverse-prompt report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>ARPO reverse-prompt report</h1>",
        f"<p>Profile: <code>{esc(header.profile)}</code> · generated {esc(datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M:%S UTC'))}</p>",
    ]
    if header.random_weight_roles:
        parts.append(
            '<div class="banner" role="alert">These outputs come from random-weight models '
            f"({esc(', '.join(header.random_weight_roles))}): they exercise the plumbing and measure speed only; "
            "the prompts, images and scores mean nothing.</div>"
        )
    summary = [f"<span>done: {done}</span>", f"<span>failed: {failed}</span>"]
    if header.running:
        summary.append(f"<span>running: {header.running}</span>")
    if header.total is not None:
        summary.append(f"<span>not yet finished: {max(header.total - done - failed, 0)}</span>")
        summary.append(f"<span>total: {header.total}</span>")
    if header.interrupted:
        summary.append("<span><strong>run interrupted</strong></span>")
    parts.append(f'<p class="summary">{"".join(summary)}</p>')
    parts.extend(_render_image(r, extra(r) if extra else "") for r in records)
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _render_image(record: dict, extra_html: str = "") -> str:
    image_id = record.get("image_id", "")
    status = record.get("status")
    cls = "image error" if status != "done" else "image"
    out = [f'<section class="{cls}" id="img-{esc(image_id)}">',
           f"<h2>{esc(record.get('source'))}</h2>",
           f"<p>id <code>{esc(image_id)}</code> · status <strong>{esc(status)}</strong>"]
    if record.get("stop_reason"):
        out.append(f" · stopped: {esc(record['stop_reason'])}")
    if isinstance(record.get("elapsed_s"), (int, float)):
        out.append(f" · {record['elapsed_s']:.1f} s")
    out.append("</p>")
    dupes = record.get("duplicate_sources") or []
    if dupes:
        out.append(f"<p>Same content also at: {esc(', '.join(dupes))}</p>")
    if record.get("error"):
        out.append(f'<pre class="error">{esc(record["error"])}</pre>')
    strip = []
    if record.get("reference"):
        strip.append(f'<figure><img src="{href(record["reference"])}" alt="reference" loading="lazy"><figcaption>reference</figcaption></figure>')
    best = record.get("best_iteration")
    for index, it in enumerate(record.get("iterations") or []):
        number = it.get("iteration", index)
        fig_cls = ' class="best"' if best is not None and number == best else ""
        imgs = "".join(f'<img src="{href(p)}" alt="iteration {esc(number)}" loading="lazy">' for p in it.get("images") or [])
        caption = f"iteration {esc(number)}{' (best)' if fig_cls else ''}<br>CLIP-T {_score(it.get('clip_t'))} · CLIP-I {_score(it.get('clip_i'))}"
        strip.append(f"<figure{fig_cls}>{imgs}<figcaption>{caption}</figcaption></figure>")
    if strip:
        out.append(f'<div class="strip">{"".join(strip)}</div>')
    final = record.get("prompt") or {}
    if final:
        out.append("<h3>Final prompt</h3>" if status == "done" else "<h3>Best prompt so far</h3>")
        out.append(f'<p><strong>Content</strong></p><div class="prompt">{esc(joined(final.get("content")))}</div>')
        out.append(f'<p><strong>Style</strong></p><div class="prompt">{esc(joined(final.get("style")))}</div>')
        out.append(f'<p><strong>As sent to the model</strong></p><div class="prompt">{esc(final.get("rendered"))}</div>')
        out.append(f"<p>Best: iteration {esc(best)} · CLIP-I {_score(record.get('best_clip_i'))} · CLIP-T {_score(record.get('best_clip_t'))}</p>")
    if record.get("initial_prompt"):
        out.append(f'<details><summary>Initial prompt</summary><div class="prompt">{esc(record["initial_prompt"])}</div></details>')
    out.append(extra_html)
    out.append("</section>")
    return "".join(out)


def write_report(out_dir: str | os.PathLike, records: Iterable[dict], header: ReportHeader) -> Path:
    """Write ``report.html``; images with prompt edits (``python -m agents.edit``) show them side by side."""
    path = Path(out_dir) / REPORT_HTML
    atomic_write_text(path, render_report(records, header, extra=lambda r: edits_strip_for_report(out_dir, r)))
    return path
