"""Reverse one image: ``optimise`` (async, for the batch job) and ``reverse_prompt`` (sync, for people).

``optimise`` runs one image's thread on a compiled graph: a new thread starts at
``init``; an unfinished one resumes from its last completed node; a finished one
returns its stored result without calling any model. A failing node does not raise:
the result has status "error" and says which node failed, and the thread stays
resumable — running the same image again continues from where it stopped.
"""
from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
from PIL import Image as PILImage

from actors.image_checks import check_rgb_uint8
from actors.roles import Roles
from agents.config import AgentConfig, ArpoConfig
from agents.graph import build_graph, compile_graph, thread_config
from agents.image_id import ID_HEX_DIGITS, content_id
from agents.images import load_rgb, save_png, to_rgb_array
from agents.result import ReverseResult
from agents.result import result_from_state as _result_from_state
from agents.browser.results import atomic_write_bytes
from agents.state import initial_state


async def optimise(
    image_id: str,
    reference_path: Path,
    work_dir: Path,
    roles: Roles,
    cfg: AgentConfig,
    token_limit: int,
    graph: Any = None,
    init_prompt: Optional[str] = None,
    on_node: Optional[Callable[[str], None]] = None,
    thread_id: Optional[str] = None,
    base_dir: Optional[Path] = None,
    members: Optional[Sequence[tuple[str, Path]]] = None,
) -> ReverseResult:
    """Run or resume thread ``thread_id`` (default ``image_id``) and return its result.

    ``base_dir``: the folder the graph was built with (``build_graph(base_dir=...)``);
    the paths stored in the thread's state are then relative to it, so the folder can be
    moved and the thread still resumes. ``reference_path`` and ``work_dir`` must lie
    inside it.

    ``on_node(name)`` is called after each node completes (live progress, e.g. one
    ``generate`` per iteration); it must be cheap and must not raise.

    ``work_dir`` is this image's own folder (generated images go there). ``graph`` is a
    compiled graph with a checkpointer, shared across images; without one an in-memory
    graph is built (nothing survives the process). ``init_prompt`` (else
    ``cfg.init_prompt``) replaces the captioner's caption as P^0.

    ``members``: ``(image id, reference file)`` of each image of a set (``--group-by folder``): the CLIP
    scores are then means over the members (agents.nodes.clip_i_scores), and ``reference_path`` is what
    the captioner and the VLM look at (the set's grid).
    """
    if graph is None:
        from langgraph.checkpoint.memory import InMemorySaver

        graph = compile_graph(build_graph(roles, cfg, token_limit), InMemorySaver())
    if graph.checkpointer is None:
        raise ValueError("optimise needs a graph compiled with a checkpointer (see agents.graph.compile_graph)")
    config = thread_config(thread_id or image_id, cfg)
    member_list = [{"id": member_id, "path": str(path)} for member_id, path in members or ()]
    if base_dir is not None:
        reference_path, work_dir = _inside(reference_path, base_dir), _inside(work_dir, base_dir)
        member_list = [{**m, "path": _inside(m["path"], base_dir)} for m in member_list]
    source = str(reference_path)
    result_from_state = functools.partial(_result_from_state, prompts_per_image=cfg.prompts_per_image,
                                          caption_prefix=cfg.caption_prefix)
    snapshot = await graph.aget_state(config)
    # Finished means no task is left at all. ``snapshot.next`` leaves out a task whose writes
    # were saved (a crash between a node's writes and the step's checkpoint) while ``values``
    # already holds them: such a thread is unfinished, and resuming applies them and goes on.
    if snapshot.values and not snapshot.tasks:
        return result_from_state(snapshot.values, source)
    run_input = None if snapshot.tasks else initial_state(image_id, str(reference_path), str(work_dir),
                                                           init_prompt or cfg.init_prompt, members=member_list or None)
    try:
        async for update in graph.astream(run_input, config, durability="sync", stream_mode="updates"):
            if on_node is not None:
                for name in update:
                    on_node(name)
    except Exception as exc:  # noqa: BLE001 - one image's failure is its result, not the batch's
        snapshot = await graph.aget_state(config)
        where = ", ".join(snapshot.next) or "?"
        return result_from_state(snapshot.values or {"image_id": image_id}, source,
                                 error=f"node {where}: {type(exc).__name__}: {exc}")
    snapshot = await graph.aget_state(config)
    if snapshot.next:  # paused by an interrupt: not finished, resumable
        return result_from_state(snapshot.values, source, error=f"paused before node {', '.join(snapshot.next)}; run again to resume")
    return result_from_state(snapshot.values, source)


def _inside(path: str | os.PathLike, base_dir: Path) -> str:
    """``path`` relative to ``base_dir`` ('/'-separated); a ValueError if it lies outside."""
    full = Path(path) if Path(path).is_absolute() else Path(base_dir) / path
    try:
        return full.resolve().relative_to(Path(base_dir).resolve()).as_posix()
    except ValueError:
        raise ValueError(f"{path} is not inside the graph's base folder {base_dir}") from None


def reverse_prompt(image: Any, config: ArpoConfig | str | os.PathLike, work_dir: Optional[str | os.PathLike] = None,
                   *, roles: Optional[Roles] = None) -> ReverseResult:
    """Reverse one image, synchronously.

    ``image``: a path, a uint8 (H, W, 3) RGB array or a PIL image — or a list of them: one prompt for
    the set (as ``--group-by folder``: CLIP scores are means over the members, the captioner and the
    VLM see a 2×2 grid of the first four; agents/batch/sets.py). ``config``: an
    ``ArpoConfig`` or a YAML file of one. ``work_dir``: where the generated images and the
    checkpoint go (``<work_dir>/<image id>/``, checkpoint per ``config.job.checkpoint``);
    calling again with the same folder resumes or returns the finished result. Without it
    a new temporary folder is made (and kept, since the result points into it).
    ``roles``: running role clients to use; without them Ray is started (per
    ``config.ray``), one actor per role is started, and Ray is shut down afterwards if
    this call started it.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("reverse_prompt is synchronous and cannot run inside an event loop; await agents.api.optimise instead")
    if isinstance(config, ArpoConfig):
        cfg = config
    else:
        from core.config import load_config

        cfg = load_config(ArpoConfig, config)
    work = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="arpo_"))
    work.mkdir(parents=True, exist_ok=True)
    members = None
    if isinstance(image, (list, tuple)):
        image_id, reference_path, members = _set_references(image, work, cfg)
    else:
        reference_path = _reference_file(image, work, cfg.job.max_image_pixels)
        image_id = content_id(reference_path)

    started_ray = False
    if roles is None:
        from actors.ray_actors import start_roles
        from core.ray_config import init_ray

        started_ray = init_ray(cfg.ray)
        roles = start_roles(cfg)
    try:
        return asyncio.run(_optimise_once(image_id, reference_path, work, roles, cfg, members))
    finally:
        if started_ray:
            import ray

            ray.shutdown()


def _set_references(images: Sequence[Any], work: Path, cfg: ArpoConfig) -> tuple[str, Path, list[tuple[str, Path]]]:
    """A set's id, its grid (what the captioner and the VLM see) and its members' (id, file)."""
    from agents.batch.sets import GRID_MEMBERS, set_grid, set_id

    if not images:
        raise ValueError("reverse_prompt: an empty list of images (a set needs at least one)")
    members = []
    for image in images:
        path = _reference_file(image, work, cfg.job.max_image_pixels)
        members.append((content_id(path), path))
    sid = set_id([m for m, _ in members])
    shown = [load_rgb(path, cfg.job.max_image_pixels) for _, path in members[:GRID_MEMBERS]]
    grid_path = work / f"set_{sid}_grid.png"
    grid_path.write_bytes(save_png(set_grid(shown, cfg.job.reference_max_side)))
    return sid, grid_path, members


async def _optimise_once(image_id: str, reference_path: Path, work: Path, roles: Roles, cfg: ArpoConfig,
                         members: Optional[list[tuple[str, Path]]] = None) -> ReverseResult:
    from agents.batch.identity import open_job
    from agents.checkpointing import open_checkpointer
    from agents.prompt_limit import check_negative_support, with_prompt_limit

    # The thread is scoped like the batch job's: this work folder's id and the settings that
    # change results, so other settings (or another folder on a shared Postgres) never get
    # this thread's result; changed settings start a fresh thread.
    identity = open_job(work, cfg, on_change="fresh")
    cfg = await with_prompt_limit(cfg, roles.t2i)
    await check_negative_support(cfg, roles.t2i)
    async with open_checkpointer(cfg.job.checkpoint, work) as saver:
        graph = compile_graph(build_graph(roles, cfg.agent, cfg.t2i.max_prompt_tokens, max_image_pixels=cfg.job.max_image_pixels,
                                          negative_prompt=cfg.t2i.negative_prompt), saver)
        return await optimise(image_id, reference_path, work / image_id, roles, cfg.agent, cfg.t2i.max_prompt_tokens, graph=graph,
                              thread_id=identity.thread_id(image_id), members=members)


def _reference_file(image: Any, work: Path, max_pixels: int) -> Path:
    """A readable image file for ``image``: the path itself, or a PNG written into ``work``."""
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        load_rgb(path, max_pixels)  # a clear error now rather than inside the graph
        return path
    if isinstance(image, PILImage.Image):
        image = to_rgb_array(image)
    elif not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a path, a uint8 (H, W, 3) array or a PIL image, got {type(image).__name__}")
    data = save_png(check_rgb_uint8(image, "image"))
    path = work / f"reference_{hashlib.sha256(data).hexdigest()[:ID_HEX_DIGITS]}.png"
    if not path.exists():
        atomic_write_bytes(path, data)
    return path
