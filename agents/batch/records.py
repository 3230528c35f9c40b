"""The record of one finished image: the agent's result plus where its files are, relative to ``--out``.

Every path in a record is '/'-separated and relative to the output folder, so the
folder can be moved, copied or served as it is; a path that would point outside it is
dropped rather than linked.
"""
from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any, Optional

from agents.batch.plan import WorkItem
from agents.browser.results import REFERENCE_FILE


def out_relative(path: Any, out_dir: Path) -> Optional[str]:
    """``path`` (relative to ``out_dir``, or absolute) as a path relative to ``out_dir``; None if outside."""
    p = Path(str(path))
    full = (p if p.is_absolute() else out_dir / p).resolve()
    try:
        rel = full.relative_to(out_dir.resolve())
    except ValueError:
        return None
    return PurePosixPath(*rel.parts).as_posix()


def result_record(result: Any, item: WorkItem, out_dir: Path, fingerprint: str) -> dict:
    """The JSONL/result.json record of one image.

    Added keys: ``source`` (relative to the image folder, display-safe),
    ``duplicate_sources``, ``output_dir`` and ``reference`` (relative to the output
    folder), ``settings_fingerprint`` (see agents.batch.identity); every iteration gets
    ``images``, its image paths relative to the output folder, for the report.
    """
    record = result.model_dump(mode="json") if hasattr(result, "model_dump") else dict(result)
    record["image_id"] = item.image_id
    record["source"] = item.source.rel
    record["duplicate_sources"] = list(item.duplicates)
    record["output_dir"] = out_relative(item.folder, out_dir)
    reference = item.folder / REFERENCE_FILE
    record["reference"] = out_relative(reference, out_dir) if reference.is_file() else None
    record["settings_fingerprint"] = fingerprint
    _set_fields(record, item, out_dir)
    for it in record.get("iterations") or []:
        paths = (out_relative(p, out_dir) for p in _iteration_image_paths(it))
        it["images"] = [p for p in paths if p is not None]
        if "image_paths" in it:
            it["image_paths"] = list(it["images"])
    for attempt in (record.get("negative") or {}).get("tries") or []:
        paths = (out_relative(p, out_dir) for p in attempt.get("image_paths") or [])
        attempt["image_paths"] = [p for p in paths if p is not None]
    return record


def _set_fields(record: dict, item: WorkItem, out_dir: Path) -> None:
    """A set's record (``--group-by folder``): ``kind`` "set", its ``members`` (paths relative to the image
    folder; the scores are means over them) and ``member_errors`` (members left out, and why)."""
    if item.kind != "set":
        return
    from agents.batch.sets import MEMBER_FILE

    record["kind"] = "set"
    record["members"] = [m.source.rel for m in item.members]
    stored = [item.folder / MEMBER_FILE.format(m.image_id) for m in item.members]
    # each member's stored reference (relative to --out), aligned with members
    record["member_references"] = [out_relative(path, out_dir) if path.is_file() else None for path in stored]
    record["member_errors"] = list(item.member_errors)


def _iteration_image_paths(iteration: dict) -> list:
    for key in ("image_paths", "images"):
        value = iteration.get(key)
        if value:
            return list(value) if isinstance(value, (list, tuple)) else [value]
    return []


def error_record(item: WorkItem, error: str, out_dir: Path, fingerprint: str) -> dict:
    from agents.result import ReverseResult

    result = ReverseResult(image_id=item.image_id, source=item.source.rel, status="error", error=error)
    return result_record(result, item, out_dir, fingerprint)


def needs_rerank(record: dict, prompts_per_image: int) -> bool:
    """Whether a done record lists its prompts for another agent.prompts_per_image (records from before the
    setting existed list one)."""
    return record.get("prompts_per_image", 1) != prompts_per_image


def reranked_record(record: dict, prompts_per_image: int, caption_prefix: Optional[str]) -> dict:
    """``record`` (done) with its ranked prompts made again from its iterations for ``prompts_per_image``
    (agents.ranked_prompts); every other field as it was."""
    from agents.result import captioned_ranking

    prompts = captioned_ranking(record.get("iterations") or [], prompts_per_image, caption_prefix)
    return {**record, "prompts": prompts, "prompts_per_image": prompts_per_image}
