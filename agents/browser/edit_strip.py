"""The prompt-edit strip (thesis Figure 4.4): reference, the reverse prompt's image, then each edit.

Shared by ``edits.html`` (agents.editing.edit) and the batch report's detail pages (agents.browser.report);
it only reads an image folder's ``edits.json``, found inside the output folder. Rendered
from the ``edits_strip`` macro of agents/templates/macros.html (jinja2, autoescaped).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Optional

from markupsafe import Markup

from agents.browser.html_render import render
from agents.browser.results import UnsafePathError, contained_path

log = logging.getLogger(__name__)

EDITS_JSON = "edits.json"


def read_edit_index(result_dir: Path) -> list[dict]:
    path = result_dir / EDITS_JSON
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        log.warning("%s is not valid JSON; starting a new edit index", path)
        return []
    return [e for e in data if isinstance(e, dict)] if isinstance(data, list) else []


def _best_images(record: dict) -> list[str]:
    best = record.get("best_iteration")
    for it in record.get("iterations") or []:
        if it.get("iteration", it.get("index")) == best:
            return list(it.get("images") or it.get("image_paths") or [])
    return []


def edits_figures(record: dict, index: list[dict], link_prefix: str = "", out_prefix: str = "") -> list[dict]:
    """The strip's figures (path, title, prompt): reference, the reverse prompt's image, then each edit.

    ``link_prefix`` is prepended to the edit paths (relative to the image folder) and
    ``out_prefix`` to the record's reference/iteration paths (relative to the batch
    output folder), so the strip can sit in edits.html, a detail page or the batch folder.
    """
    figs = []
    if record.get("reference"):
        figs.append({"path": out_prefix + str(record["reference"]), "title": "reference", "prompt": ""})
    best = _best_images(record)
    prompt = (record.get("prompt") or {}).get("rendered", "")
    if best:
        figs.append({"path": out_prefix + str(best[0]), "title": "reverse prompt", "prompt": prompt})
    for entry in index:
        if isinstance(entry.get("images"), list) and entry["images"]:
            figs.append({"path": link_prefix + str(entry["images"][0]), "title": str(entry.get("edit", "")),
                         "prompt": str(entry.get("prompt", ""))})
    return figs


def render_edits_strip(record: dict, index: list[dict], link_prefix: str = "", out_prefix: str = "") -> Markup:
    """Figure 4.4 as an HTML fragment (see :func:`edits_figures` for the prefixes)."""
    return Markup(render("edits_strip.html", figures=edits_figures(record, index, link_prefix, out_prefix)))


def edit_index_of_record(out_dir: str | os.PathLike, record: dict) -> Optional[tuple[Path, list[dict]]]:
    """The record's image folder and its edit index, or None when it has no edits.

    The record's ``output_dir`` is data read from results.jsonl: only a folder inside
    ``out_dir`` is looked at, so a crafted record cannot make the report read elsewhere.
    """
    folder = record.get("output_dir")
    if not isinstance(folder, str) or not folder:
        return None
    try:
        result_dir = contained_path(out_dir, folder)
    except UnsafePathError:
        log.warning("record %s: output_dir %r leaves the output folder; its edits are not shown", record.get("image_id"), folder)
        return None
    index = read_edit_index(result_dir)
    return (result_dir, index) if index else None


def edits_strip_for_report(out_dir: str | os.PathLike, record: dict) -> Markup:
    """The strip of one batch record with links relative to the batch output folder ("" when it has no edits)."""
    found = edit_index_of_record(out_dir, record)
    if found is None:
        return Markup("")
    folder = str(record["output_dir"]).rstrip("/") + "/"
    return Markup("<h3>Edits</h3>") + render_edits_strip(record, found[1], link_prefix=folder, out_prefix="")
