"""Novel images from an edited reverse prompt (thesis §4.2.3, Figures 4.4, B.13, B.14).

API: :func:`generate_edit` takes a finished result (``result.json`` of the batch job),
one :class:`agents.editing.prompt_edit.PromptEdit` and a T2I role, renders the edited prompt
with the same seeds the optimisation used, and writes next to the result::

    images/<name>/edits/<edit>/seed<k>.png, prompt.txt
    images/<name>/edits.json     every edit made so far (spec, prompt, images)
    images/<name>/edits.html     reference | reverse prompt's image | each edit, side by side

CLI (one edit per call; calls accumulate in edits.json / edits.html)::

    python -m agents.edit --result OUT/images/<name>/result.json --edit "-dog +cat"
                          [--content "..."] [--style "..."] [--config FILE] [--set k=v]
                          [--seeds 0,1] [--ray]

Use the config the batch ran with (--config): the edit must be rendered by the same T2I
model and settings. The T2I pipeline is loaded in this process unless --ray (then one
T2I actor on Ray, per the config's resources).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from agents.config import ArpoConfig
from agents.browser.edit_strip import EDITS_JSON, edits_figures, edits_strip_for_report, read_edit_index, render_edits_strip  # noqa: F401 (API)
from agents.browser.html_render import render
from agents.images import save_png
from agents.editing.prompt_edit import EditSpecError, PromptEdit, apply_edit, parse_substitutions, parts_of_record
from agents.prompt_parts import PromptParts
from agents.browser.results import RESULT_JSON, atomic_write_bytes, atomic_write_json, atomic_write_text, slugify
from core.cli import parse_or_status
from core.config import SET_HELP

log = logging.getLogger("agents.editing.edit")

EDITS_DIR, EDITS_HTML = "edits", "edits.html"


@dataclass
class EditOutcome:
    edit: PromptEdit
    parts: PromptParts
    prompt: str
    folder: Path
    images: list[Path]

    def to_dict(self, base: Path) -> dict:
        return {"edit": self.edit.describe(), "content": list(self.parts.content), "style": list(self.parts.style),
                "prompt": self.prompt, "folder": _rel(self.folder, base), "images": [_rel(p, base) for p in self.images]}


def _rel(path: Path, base: Path) -> str:
    return Path(os.path.relpath(path, base)).as_posix()


def load_result(path: str | os.PathLike) -> dict:
    p = Path(path)
    if p.is_dir():
        p = p / RESULT_JSON
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such result file (expected OUT/images/<name>/result.json)")
    try:
        record = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p}: not valid JSON: {exc}") from None
    if not isinstance(record, dict):
        raise ValueError(f"{p}: not a result record")
    return record


def edit_prompt_text(prompt: str, edit: PromptEdit) -> str:
    """Apply an edit to a plain prompt of any method (Figure B.14); its fragments are sorted into
    content and style by agents.prompt_parts.PromptParts.from_text."""
    return apply_edit(PromptParts.from_text(prompt), edit).render()


def edit_folder_name(edit: PromptEdit, prompt: str) -> str:
    from agents.eval.records import fingerprint

    return f"{slugify(edit.describe(), max_len=40)}-{fingerprint(edit.describe(), prompt)[:8]}"


async def generate_edit(record: dict, result_dir: str | os.PathLike, edit: PromptEdit, t2i: Any, seeds: Sequence[int]) -> EditOutcome:
    """Render ``edit`` of the result's best prompt at ``seeds`` and record it next to the result."""
    if not seeds:
        raise ValueError("no seeds to render the edit with")
    result_dir = Path(result_dir)
    parts = apply_edit(parts_of_record(record), edit)
    prompt = parts.render()
    if not prompt:
        raise ValueError("the edited prompt is empty")
    images = await t2i.generate(prompt, list(seeds))
    folder = result_dir / EDITS_DIR / edit_folder_name(edit, prompt)
    outcome = EditOutcome(edit=edit, parts=parts, prompt=prompt, folder=folder,
                          images=[folder / f"seed{seed}.png" for seed in seeds])
    # PNG encoding and fsyncs take seconds for large images: never on the caller's event loop.
    await asyncio.to_thread(_record_edit, record, result_dir, outcome, images)
    return outcome


def _record_edit(record: dict, result_dir: Path, outcome: EditOutcome, images: Sequence[Any]) -> None:
    """The edit's images and prompt.txt, then edits.json and edits.html with it added."""
    for path, image in zip(outcome.images, images):
        atomic_write_bytes(path, save_png(image))
    atomic_write_text(outcome.folder / "prompt.txt",
                      f"{outcome.prompt}\n\n# edit\n{outcome.edit.describe()}\n\n{outcome.parts.labelled()}\n")
    entry = outcome.to_dict(result_dir)
    index = [e for e in read_edit_index(result_dir) if e.get("folder") != entry["folder"]] + [entry]
    atomic_write_json(result_dir / EDITS_JSON, index)
    atomic_write_text(result_dir / EDITS_HTML, render_edits_page(record, result_dir, index))


def render_edits_page(record: dict, result_dir: Path, index: list[dict]) -> str:
    # result.json paths are relative to the batch output folder, two levels up (OUT/images/<name>/).
    out_prefix = _rel(result_dir.parent.parent, result_dir) + "/"
    return render("edits_page.html", source=record.get("source"), figures=edits_figures(record, index, "", out_prefix))


# --------------------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m agents.edit", description="Generate novel images by editing a reverse prompt.")
    p.add_argument("--result", required=True, help="A result.json of the batch job (or its folder).")
    p.add_argument("--edit", help='Word substitutions, e.g. "-dog +cat" or \'-"golden retriever" +"tabby cat"\'.')
    p.add_argument("--content", help="New content part (comma-separated fragments), replacing the reverse prompt's.")
    p.add_argument("--style", help="New style part (comma-separated fragments), replacing the reverse prompt's.")
    p.add_argument("--config", help="The config the batch ran with (ArpoConfig YAML): same T2I model and settings.")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
    p.add_argument("--seeds", help="Comma-separated seeds (default: agent.seeds of the config, as in the optimisation).")
    p.add_argument("--ray", action="store_true", help="Run the T2I model as a Ray actor instead of in this process.")
    return p


def edit_from_args(args: argparse.Namespace) -> PromptEdit:
    subs = parse_substitutions(args.edit) if args.edit is not None else ()
    return PromptEdit(content=args.content, style=args.style, substitutions=subs)


async def _run(cfg: ArpoConfig, record: dict, result_dir: Path, edit: PromptEdit, seeds: list[int], use_ray: bool) -> EditOutcome:
    if use_ray:
        from actors.ray_actors import ROLE_SERVERS, start_role, wait_ready

        t2i = start_role("t2i", ROLE_SERVERS["t2i"], cfg.t2i, cfg.t2i.resources)
        await wait_ready(t2i)
    else:
        from actors.t2i import T2IServer

        t2i = T2IServer(cfg.t2i)
    return await generate_edit(record, result_dir, edit, t2i, seeds)


def main(argv: Optional[list[str]] = None) -> int:
    from core.config import ConfigError, load_config

    args = parse_or_status(lambda: build_parser().parse_args(argv))
    if isinstance(args, int):
        return args
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        edit = edit_from_args(args)
        cfg = load_config(ArpoConfig, args.config, args.set)
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()] if args.seeds else list(cfg.agent.seeds)
        record = load_result(args.result)
        result_dir = Path(args.result) if Path(args.result).is_dir() else Path(args.result).parent
        parts_of_record(record)  # fail before loading any model when the result has no prompt
    except (EditSpecError, ConfigError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    started = False
    try:
        if args.ray:
            from core.ray_config import init_ray

            started = init_ray(cfg.ray)
        outcome = asyncio.run(_run(cfg, record, result_dir, edit, seeds, args.ray))
    finally:
        if started:
            import ray

            ray.shutdown()
    report = refresh_batch_report(result_dir.resolve().parent.parent, cfg, args.config or "<defaults>", result_dir)
    print(f"{outcome.prompt}\n-> {', '.join(str(p) for p in outcome.images)}\nside by side: {result_dir / EDITS_HTML}"
          + (f"; batch report page updated: {report}" if report else ""))
    return 0


def refresh_batch_report(out_dir: Path, cfg: ArpoConfig, profile: str, result_dir: Optional[Path] = None) -> Optional[Path]:
    """Rewrite the detail page of the edited image so it shows the new edits (its folder is
    ``result_dir``; None: every image's page); returns that page, or None when ``out_dir`` is
    no batch output or holds no record of it. An output folder without the results browser
    (made before it existed) gets the whole browser built."""
    from agents.browser.report import REPORT_HTML, ROWS_JS, ReportHeader, detail_page_path, random_weight_roles, write_detail_page, write_report
    from agents.browser.results import RESULTS_JSONL, ResultsLog

    if not (out_dir / RESULTS_JSONL).is_file():
        return None
    results = ResultsLog(out_dir / RESULTS_JSONL, repair=False)
    header = ReportHeader(profile=profile, random_weight_roles=random_weight_roles(cfg), total=len(results))
    if not (out_dir / REPORT_HTML).is_file() or not (out_dir / ROWS_JS).is_file():
        write_report(out_dir, results.records(), header)
    target = result_dir.resolve() if result_dir is not None else None
    written = None
    for record in results.records():
        page = detail_page_path(out_dir, record)
        if page is not None and (target is None or page.parent == target):
            written = write_detail_page(out_dir, record, header) or written
    return written


if __name__ == "__main__":
    sys.exit(main())
