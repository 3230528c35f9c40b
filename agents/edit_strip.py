"""The prompt-edit strip (thesis Figure 4.4): reference, the reverse prompt's image, then each edit.

Shared by ``edits.html`` (agents.edit) and the batch report (agents.report); it only
reads an image folder's ``edits.json``, found inside the output folder.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from agents.html_text import esc, href
from agents.results import UnsafePathError, contained_path

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


def render_edits_strip(record: dict, index: list[dict], link_prefix: str = "", out_prefix: str = "") -> str:
    """Figure 4.4 as an HTML fragment.

    ``link_prefix`` is prepended to the edit paths (relative to the image folder) and
    ``out_prefix`` to the record's reference/iteration paths (relative to the batch
    output folder), so the strip can sit in edits.html or in the batch report.
    """
    figs = []
    if record.get("reference"):
        figs.append(_figure(out_prefix + str(record["reference"]), "reference", ""))
    best = _best_images(record)
    prompt = (record.get("prompt") or {}).get("rendered", "")
    if best:
        figs.append(_figure(out_prefix + str(best[0]), "reverse prompt", prompt))
    for entry in index:
        if isinstance(entry.get("images"), list) and entry["images"]:
            figs.append(_figure(link_prefix + str(entry["images"][0]), entry.get("edit", ""), entry.get("prompt", "")))
    return '<div class="edits">' + "".join(figs) + "</div>"


def edits_strip_for_report(out_dir: str | os.PathLike, record: dict) -> str:
    """The strip of one batch record for ``<out>/report.html`` ("" when it has no edits).

    The record's ``output_dir`` is data read from results.jsonl: only a folder inside
    ``out_dir`` is looked at, so a crafted record cannot make the report read elsewhere.
    """
    folder = record.get("output_dir")
    if not isinstance(folder, str) or not folder:
        return ""
    try:
        result_dir = contained_path(out_dir, folder)
    except UnsafePathError:
        log.warning("record %s: output_dir %r leaves the output folder; its edits are not shown", record.get("image_id"), folder)
        return ""
    index = read_edit_index(result_dir)
    if not index:
        return ""
    return "<h3>Edits</h3>" + render_edits_strip(record, index, link_prefix=folder.rstrip("/") + "/", out_prefix="")


def _figure(path: str, title: str, prompt: str) -> str:
    return (f'<figure><img src="{href(path)}" alt="{esc(title)}" loading="lazy"><figcaption><strong>{esc(title)}</strong>'
            f'<div class="prompt">{esc(prompt)}</div></figcaption></figure>')
