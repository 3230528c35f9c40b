"""The batch job's results browser: ``OUT/report.html`` (an index) and one detail page per image.

Layout in the output folder (every link relative, so the folder can be moved or served)::

    report.html              the index: summary (counts, CLIP-I at the first and the best
                             iteration, a histogram of the gain, time per image, stop reasons)
                             and every image as a row — sortable, filterable, paged
    report_rows.js           one ``ARPO.rows.push({...});`` line per finished image (appended)
    report_summary.js        ``ARPO.summary = {...};``: total, running, interrupted (rewritten)
    images/<name>/index.html the detail page: every iteration's images, prompt, the VLM's
                             descriptions, the differences, each candidate's score and fate,
                             why the run stopped, and the prompt edits strip

The index is a static page whose script reads the two data files through ``<script src>``
(``fetch`` of a local file does not work from ``file://``); it needs no network. The
writer's cost per finished image is constant: the detail page is written once, and one line
is appended to ``report_rows.js``; the index is written once per run and the summary file is
small. A rerun rebuilds ``report_rows.js`` from ``results.jsonl`` (the log is the truth; a
later line for an image replaces its row in the browser, too) and writes the detail pages a
crash left missing. ``python -m agents.report OUT`` rebuilds everything from the log.

Pages are jinja2 templates (agents/templates/) with autoescaping; data embedded in scripts
goes through agents.browser.html_text.script_json, which escapes ``<``, ``>``, ``&`` and U+2028/9.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Optional

from actors.offline_kit import is_random_weight_model
from agents.config import ArpoConfig
from agents.browser.edit_strip import edit_index_of_record, edits_figures
from agents.browser.html_render import render
from agents.browser.html_text import script_json, url_path
from agents.browser.results import (RESULTS_JSONL, ResultsLog, UnsafePathError, append_bytes_durably, atomic_write_text,
                            contained_path)

log = logging.getLogger(__name__)

REPORT_HTML = "report.html"
ROWS_JS = "report_rows.js"
SUMMARY_JS = "report_summary.js"
DETAIL_HTML = "index.html"  # inside each image's folder
ROWS_PREAMBLE = "/* One line per finished image, appended by the batch job (agents/browser/report.py). */\n"
_ERROR_CHARS = 300  # of an error message shown in the index (the detail page has all of it)

STOP_REASONS = {
    "no_candidates": "the LLM proposed no new fragment",
    "no_improvement": "no candidate kept the CLIP score (every candidate scored below the best so far)",
    "token_limit": "every candidate would have made the prompt exceed the T2I model's token limit",
    "max_steps": "it reached the most iterations allowed (agent.max_steps)",
    "patience": "CLIP-I did not improve for agent.patience iterations",
}


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


# --------------------------------------------------------------------------- small values

def _num(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _round(value: Optional[float], digits: int) -> Optional[float]:
    return None if value is None else round(value, digits)


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _iteration_images(it: dict) -> list[str]:
    value = it.get("images") or it.get("image_paths") or []
    return [str(p) for p in value] if isinstance(value, list) else []


def _best_iteration(record: dict) -> Optional[dict]:
    best = record.get("best_iteration")
    for index, it in enumerate(record.get("iterations") or []):
        if isinstance(it, dict) and it.get("iteration", index) == best:
            return it
    return None


def _rel_dir(record: dict) -> Optional[str]:
    """The record's folder relative to the output folder, if it is a plain relative path inside it."""
    folder = record.get("output_dir")
    if not isinstance(folder, str) or not folder:
        return None
    parts = PurePosixPath(folder.replace("\\", "/")).parts
    if not parts or folder.startswith("/") or any(p in ("..", "") for p in parts):
        return None
    return "/".join(parts)


# --------------------------------------------------------------------------- the index's rows

def report_row(record: dict) -> dict:
    """One image's row of the index (short keys: the rows file holds one per image).

    id, name (the source path), st (done/error), c0 (CLIP-I of iteration 0), cb (best CLIP-I),
    g (gain, cb - c0), bi (best iteration), n (iterations), t (seconds), stop (stop reason),
    err (the error, cut short), page / ref / thumb (URL paths relative to the output folder:
    the detail page, the reference, the best iteration's first image).
    """
    its = [it for it in record.get("iterations") or [] if isinstance(it, dict)]
    first = _num(its[0].get("clip_i")) if its else None
    best = _num(record.get("best_clip_i"))
    folder = _rel_dir(record)
    best_it = _best_iteration(record)
    thumb = _iteration_images(best_it)[:1] if best_it else []
    error = record.get("error")
    gain = best - first if best is not None and first is not None else None
    return {
        "id": str(record.get("image_id", "")),
        "name": str(record.get("source", "")),
        "st": str(record.get("status", "")),
        "c0": _round(first, 6),
        "cb": _round(best, 6),
        "g": _round(gain, 6),
        "bi": record.get("best_iteration") if isinstance(record.get("best_iteration"), int) else None,
        "n": len(its),
        "t": _round(_num(record.get("elapsed_s")), 2),
        "stop": record.get("stop_reason") or None,
        "err": (str(error)[:_ERROR_CHARS] + ("…" if len(str(error)) > _ERROR_CHARS else "")) if error else None,
        "page": url_path(f"{folder}/{DETAIL_HTML}") if folder else None,
        "ref": url_path(record["reference"]) if isinstance(record.get("reference"), str) and record["reference"] else None,
        "thumb": url_path(thumb[0]) if thumb else None,
    }


def row_line(record: dict) -> str:
    """The ``report_rows.js`` line of one record."""
    return f"ARPO.rows.push({script_json(report_row(record))});\n"


def render_rows_js(records: Iterable[dict]) -> str:
    return ROWS_PREAMBLE + "".join(row_line(r) for r in records)


def render_summary_js(header: ReportHeader) -> str:
    summary = {"total": header.total, "running": header.running, "interrupted": header.interrupted,
               "generated": _now()}
    return f"ARPO.summary = {script_json(summary)};\n"


def render_index(header: ReportHeader) -> str:
    """``report.html``: the page only; the rows and the summary come from the two .js files."""
    return render("report_index.html", header=header, rows_js=ROWS_JS, summary_js=SUMMARY_JS,
                  stop_reasons=STOP_REASONS, written=_now())


# --------------------------------------------------------------------------- detail pages

_OUTCOMES = {
    "kept": "kept",
    "no_gain": "dropped: did not raise the score",
    "too_long": "dropped: too long for the token limit",
    "duplicate": "dropped: same text as an earlier candidate",
    "not_style": "dropped: a content fragment (style only)",
}


def _candidate_rows(it: dict, next_it: Optional[dict]) -> list[dict]:
    """Every candidate of an iteration: its score and why it was kept or dropped."""
    selection = [c for c in it.get("selection") or [] if isinstance(c, dict)]
    rows = []
    if selection:
        for c in selection:
            outcome, score, needed = c.get("outcome"), _num(c.get("clip_t")), _num(c.get("needed"))
            why = _OUTCOMES.get(outcome, str(outcome))
            if outcome == "kept" and score is not None and needed is not None:
                why = f"kept: CLIP-T {score:.4f} ≥ {needed:.4f}, the best so far"
            elif outcome == "no_gain" and score is not None and needed is not None:
                why = f"dropped: CLIP-T {score:.4f} < {needed:.4f}, the best so far (did not raise the score)"
            rows.append({"text": c.get("text"), "part": c.get("part"), "score": score, "outcome": outcome or "",
                         "why": why, "round": c.get("round")})
        return rows
    # A record written before per-candidate scores were recorded: what can still be told.
    too_long = set(it.get("too_long") or [])
    added = {a.get("text") for a in (next_it or {}).get("added") or [] if isinstance(a, dict)}
    for c in it.get("candidates") or []:
        if not isinstance(c, dict):
            continue
        text = c.get("text")
        if text in too_long:
            outcome, why = "too_long", _OUTCOMES["too_long"]
        elif text in added:
            outcome, why = "kept", "kept (its score was not recorded)"
        else:
            outcome, why = "not kept", "not kept (its score was not recorded in this record)"
        rows.append({"text": text, "part": c.get("part"), "score": None, "outcome": outcome, "why": why, "round": None})
    return rows


def _pairs(value: Any) -> list[tuple[str, str]]:
    """A description/differences dict as (label, text) pairs, in a stable order."""
    if not isinstance(value, dict):
        return []
    order = {"overall": 0, "content": 1, "style": 2}
    return [(str(k), str(v)) for k, v in sorted(value.items(), key=lambda kv: (order.get(kv[0], 9), str(kv[0])))]


def detail_view(record: dict, prefix: str) -> dict:
    """What the detail template shows; ``prefix`` leads from the page's folder to the output folder."""
    its = [it for it in record.get("iterations") or [] if isinstance(it, dict)]
    best = record.get("best_iteration")
    iterations = []
    for index, it in enumerate(its):
        number = it.get("iteration", index)
        per_seed = it.get("clip_i_per_seed") or []
        images = [{"path": prefix + p, "clip_i": _num(per_seed[k]) if k < len(per_seed) else None}
                  for k, p in enumerate(_iteration_images(it))]
        iterations.append({
            "number": number, "best": best is not None and number == best, "images": images,
            "clip_t": _num(it.get("clip_t")), "clip_i": _num(it.get("clip_i")), "style_i": _num(it.get("style_i")),
            "content": it.get("content") or [], "style": it.get("style") or [], "rendered": it.get("rendered") or "",
            "added": [a for a in it.get("added") or [] if isinstance(a, dict)],
            "description": _pairs(it.get("description")), "differences": _pairs(it.get("differences")),
            "candidates": _candidate_rows(it, its[index + 1] if index + 1 < len(its) else None),
        })
    stop = record.get("stop_reason")
    return {
        "record": record, "prefix": prefix, "iterations": iterations,
        "reference": prefix + record["reference"] if isinstance(record.get("reference"), str) and record["reference"] else None,
        "final": record.get("prompt") or {},
        "reference_description": _pairs(record.get("reference_description")),
        "stop": stop, "stop_why": STOP_REASONS.get(stop or "", ""),
        "elapsed": _num(record.get("elapsed_s")),
        "duplicates": [str(d) for d in record.get("duplicate_sources") or []],
        "gain": report_row(record)["g"],
        "caption": record.get("caption") if record.get("caption") != (record.get("prompt") or {}).get("rendered") else None,
        "ranked": _ranked_rows(record),
        "negative": _negative_view(record, prefix),
        "set": _set_view(record, prefix),
    }


def _set_view(record: dict, prefix: str) -> Optional[dict]:
    """A set's members (``--group-by folder``): names, stored references, and those left out."""
    if record.get("kind") != "set":
        return None
    names = [str(m) for m in record.get("members") or []]
    refs = list(record.get("member_references") or [])
    members = [{"name": name, "image": prefix + refs[i] if i < len(refs) and isinstance(refs[i], str) else None}
               for i, name in enumerate(names)]
    return {"members": members, "errors": [str(e) for e in record.get("member_errors") or []]}


def _negative_view(record: dict, prefix: str) -> Optional[dict]:
    """agent.negative's search: the recovered prompt, every try with its images, each candidate's outcome."""
    neg = record.get("negative")
    if not isinstance(neg, dict) or not neg.get("searched"):
        return None
    tries = [{"fragments": [str(f) for f in t.get("fragments") or []], "clip_i": _num(t.get("clip_i")),
              "images": [prefix + p for p in t.get("image_paths") or [] if isinstance(p, str)]}
             for t in neg.get("tries") or [] if isinstance(t, dict)]
    outcomes = [{"text": str(o.get("text")), "outcome": str(o.get("outcome")), "clip_i_alone": _num(o.get("clip_i_alone"))}
                for o in neg.get("outcomes") or [] if isinstance(o, dict)]
    return {"prompt": neg.get("prompt"), "extras": neg.get("extras") or "", "base_clip_i": _num(neg.get("base_clip_i")),
            "clip_i": _num(neg.get("clip_i")), "tries": tries, "outcomes": outcomes}


def _ranked_rows(record: dict) -> list[dict]:
    """The ranked prompts (agent.prompts_per_image) when more than one was asked for; else none."""
    prompts = [p for p in record.get("prompts") or [] if isinstance(p, dict)]
    if (record.get("prompts_per_image") or 1) < 2:
        return []
    return [{"rank": p.get("rank"), "iteration": p.get("iteration"), "rendered": p.get("rendered") or "",
             "caption": p.get("caption") or "", "clip_i": _num(p.get("clip_i")), "clip_t": _num(p.get("clip_t"))}
            for p in prompts]


def render_detail(record: dict, header: ReportHeader, prefix: str, edit_index: Optional[list[dict]] = None) -> str:
    """One image's page. ``prefix``: from the page's folder to the output folder (e.g. ``../../``)."""
    view = detail_view(record, prefix)
    edits = edits_figures(record, edit_index, link_prefix="", out_prefix=prefix) if edit_index else None
    return render("report_detail.html", header=header, index_href=prefix + REPORT_HTML, edits=edits,
                  written=_now(), **view)


def detail_page_path(out_dir: str | os.PathLike, record: dict) -> Optional[Path]:
    """Where the record's detail page goes (None when its folder is not a plain folder inside ``out_dir``)."""
    folder = _rel_dir(record)
    if folder is None:
        return None
    try:
        return contained_path(out_dir, folder, DETAIL_HTML)
    except UnsafePathError:
        return None


def write_detail_page(out_dir: str | os.PathLike, record: dict, header: ReportHeader) -> Optional[Path]:
    """Write (atomically) the record's detail page, with its prompt edits if it has any."""
    path = detail_page_path(out_dir, record)
    if path is None:
        log.warning("record %s: no detail page (output_dir %r is not a folder inside the output folder)",
                    record.get("image_id"), record.get("output_dir"))
        return None
    folder = _rel_dir(record)
    prefix = "../" * len(PurePosixPath(folder).parts)
    found = edit_index_of_record(out_dir, record)
    edit_index = found[1] if found else None
    atomic_write_text(path, render_detail(record, header, prefix, edit_index))
    return path


# --------------------------------------------------------------------------- writing

class ReportWriter:
    """Keeps the results browser of one output folder in step with its log, at constant cost per image.

    :meth:`start` (once per run, O(images)): the index page, the summary, the rows file
    rebuilt from the log, and any detail page a crash left missing. :meth:`add` (per image,
    O(1)): the image's detail page, then its row. :meth:`refresh`: the summary only.
    """

    def __init__(self, out_dir: str | os.PathLike, header: ReportHeader):
        self.out_dir = Path(out_dir)
        self.header = header

    def start(self, records: Iterable[dict]) -> None:
        rows = [ROWS_PREAMBLE]
        for record in records:  # one pass: ``records`` may be read from the log as it goes (ResultsLog.records)
            path = detail_page_path(self.out_dir, record)
            if path is not None and not path.is_file() and path.parent.is_dir():
                write_detail_page(self.out_dir, record, self.header)
            rows.append(row_line(record))
        atomic_write_text(self.out_dir / ROWS_JS, "".join(rows))
        self.refresh()
        atomic_write_text(self.out_dir / REPORT_HTML, render_index(self.header))

    def add_page(self, record: dict) -> None:
        """The detail page; call before the record's line goes into the log (the folder is then complete)."""
        write_detail_page(self.out_dir, record, self.header)

    def add_row(self, record: dict) -> None:
        append_bytes_durably(self.out_dir / ROWS_JS, row_line(record).encode("utf-8"))

    def add(self, record: dict) -> None:
        self.add_page(record)
        self.add_row(record)

    def refresh(self) -> None:
        atomic_write_text(self.out_dir / SUMMARY_JS, render_summary_js(self.header))


def write_report(out_dir: str | os.PathLike, records: Iterable[dict], header: ReportHeader,
                 rewrite_pages: bool = False) -> Path:
    """Build the whole browser from ``records`` (index, rows, summary; detail pages that are
    missing, or all of them with ``rewrite_pages``); returns the path of ``report.html``."""
    records = list(records)
    writer = ReportWriter(out_dir, header)
    if rewrite_pages:
        for record in records:
            if detail_page_path(out_dir, record) is not None and contained_path(out_dir, _rel_dir(record)).is_dir():
                write_detail_page(out_dir, record, header)
    writer.start(records)
    return Path(out_dir) / REPORT_HTML


# --------------------------------------------------------------------------- CLI

def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m agents.report",
                                description="Rebuild the results browser of a batch output folder from its results.jsonl.")
    p.add_argument("out", help="The batch job's output folder (holds results.jsonl).")
    p.add_argument("--config", help="The config the batch ran with: its profile line and random-weight banner.")
    p.add_argument("--profile", help="Text of the profile line (default: --config, or <defaults>).")
    p.add_argument("--random-weight-roles", help="Comma-separated roles to name in the random-weight banner "
                   "(default: detected from --config).")
    args = p.parse_args(argv)
    out = Path(args.out)
    if not (out / RESULTS_JSONL).is_file():
        print(f"error: {out / RESULTS_JSONL}: no such file", file=sys.stderr)
        return 2
    roles: list[str] = []
    if args.config:
        from core.config import load_config

        roles = random_weight_roles(load_config(ArpoConfig, args.config, []))
    if args.random_weight_roles is not None:
        roles = [r.strip() for r in args.random_weight_roles.split(",") if r.strip()]
    results = ResultsLog(out / RESULTS_JSONL, repair=False)
    header = ReportHeader(profile=args.profile or args.config or "<defaults>", random_weight_roles=roles,
                          total=len(results))
    path = write_report(out, results.records(), header, rewrite_pages=True)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
