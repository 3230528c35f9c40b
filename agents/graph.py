"""Wire the ARPO nodes into a LangGraph ``StateGraph``::

    START → init → generate ─┬─ enhanced → describe → diff → propose → select ─┬→ generate
                             ├─ vanilla  ─────────────→ diff                   └→ END (ΔP = ∅)
                             └→ END (max_steps / patience)

With ``agent.negative.enabled`` both ends lead to ``negative_propose → negative_select → END`` instead
(agents.negative_nodes: a negative prompt searched for the best prompt).

One compiled graph serves every image; each image is its own checkpoint thread, keyed
by its content id. The roles reach the nodes through ``functools.partial`` (no globals).
"""
from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Optional

from langgraph.graph import END, START, StateGraph

from actors.object_refs import ImageRefs
from actors.roles import Roles
from core.metrics import record
from agents import negative_nodes, nodes
from agents.config import AgentConfig
from agents.state import ArpoState

NODE_NAMES = ("init", "generate", "describe", "diff", "propose", "select")
NEGATIVE_NODE_NAMES = ("negative_propose", "negative_select")


def _timed(name: str, fn: Callable[[ArpoState], Awaitable[dict]]) -> Callable[[ArpoState], Awaitable[dict]]:
    """Add the node's run time to ``elapsed_s`` (so it sums over runs and resumes)."""

    async def node(state: ArpoState) -> dict:
        start = time.perf_counter()
        update = await fn(state)
        took = time.perf_counter() - start
        record("node_seconds", took, {"node": name})
        return {**update, "elapsed_s": float(state.get("elapsed_s") or 0.0) + took}

    node.__name__ = name
    return node


def build_graph(roles: Roles, cfg: AgentConfig, token_limit: int, *,
                max_image_pixels: int = nodes.DEFAULT_MAX_IMAGE_PIXELS, base_dir: Optional[Path] = None,
                negative_prompt: Optional[str] = None, refs: Optional[ImageRefs] = None) -> StateGraph:
    """The uncompiled ARPO graph for these roles and settings.

    ``base_dir``: relative paths in the state (reference, work folder, generated images)
    are resolved against it (the batch job's output folder), so a moved folder resumes.

    ``token_limit`` is the T2I text encoder's limit (``T2IConfig.max_prompt_tokens``);
    fragments are added only while the prompt's token count stays within
    ``token_limit - cfg.reserved_tokens``.

    ``negative_prompt``: the profile's ``t2i.negative_prompt``, which the T2I role puts before the
    negatives the agent tries (``cfg.negative``); counted in their token budget.

    ``refs``: where the images of the optimisations in flight are kept as object-store references, when
    the roles are Ray clients (actors.object_refs); the caller releases an image's when it ends. None: a
    new one, unless the roles take pixel arrays (in-process roles) and need none.
    """
    budget = token_limit - cfg.reserved_tokens
    if budget < 1:
        raise ValueError(f"token_limit {token_limit} leaves no room after reserved_tokens {cfg.reserved_tokens}")
    if not nodes.takes_object_refs(roles):
        refs = None
    elif refs is None:
        refs = ImageRefs()
    deps = nodes.NodeDeps(roles=roles, cfg=cfg, token_budget=budget, max_image_pixels=max_image_pixels,
                          base_dir=Path(base_dir) if base_dir is not None else None, negative_prompt=negative_prompt,
                          refs=refs)
    graph = StateGraph(ArpoState)
    for name in NODE_NAMES:
        graph.add_node(name, _timed(name, functools.partial(getattr(nodes, name), deps=deps)))
    done = END
    if cfg.negative.enabled:
        for name in NEGATIVE_NODE_NAMES:
            graph.add_node(name, _timed(name, functools.partial(getattr(negative_nodes, name), deps=deps)))
        graph.add_edge("negative_propose", "negative_select")
        graph.add_edge("negative_select", END)
        done = "negative_propose"
    graph.add_edge(START, "init")
    graph.add_edge("init", "generate")
    graph.add_conditional_edges("generate", functools.partial(nodes.after_generate, framework=cfg.framework),
                                {"describe": "describe", "diff": "diff", END: done})
    graph.add_edge("describe", "diff")
    graph.add_edge("diff", "propose")
    graph.add_edge("propose", "select")
    graph.add_conditional_edges("select", nodes.after_select, {"generate": "generate", END: done})
    return graph


def compile_graph(graph: StateGraph, checkpointer: Any, **kwargs: Any):
    """Compile with a checkpointer (required: resuming is the point); ``kwargs`` go to ``StateGraph.compile``."""
    if checkpointer is None:
        raise ValueError("compile_graph needs a checkpointer (agents.checkpointing.open_checkpointer, or InMemorySaver)")
    return graph.compile(checkpointer=checkpointer, **kwargs)


def thread_config(image_id: str, cfg: AgentConfig, recursion_limit: Optional[int] = None) -> dict:
    """The run config of one image's thread. The step limit covers ``max_steps`` full iterations."""
    steps = recursion_limit or (len(NODE_NAMES) * (cfg.max_steps + 2))
    return {"configurable": {"thread_id": image_id}, "recursion_limit": steps}
