"""Which actors serve which roles: the groups ``start_roles`` starts, one actor (or pool) each.

Normally each of the five roles has its own actor. Two cases share one:

* **One chat engine for the LLM and the VLM.** When the ``llm`` and ``vlm`` sections describe
  the same server — the same backend, model and engine settings (everything but their
  default ``sampling`` and the VLM's ``image_size``) — one actor loads the model once and
  answers both roles (the model must then be a VLM: the VLM role sends images). With
  vLLM that is one engine, one ``gpu_memory_utilization`` share of the GPU, instead of two.
* **Captions from the VLM.** ``captioner.backend: vlm`` has no model of its own: the
  captioner role is answered by the actor serving the VLM, which asks its model for a caption.

Nothing here imports Ray or a model library: the capacity check and the memory planner use
the same grouping before anything starts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from actors.config import ResourceConfig

ROLE_NAMES = ("t2i", "llm", "vlm", "captioner", "clip")

#: Fields of a chat section that the server applies per role, not the engine.
PER_ROLE_CHAT_FIELDS = frozenset({"sampling", "image_size"})


@dataclass(frozen=True)
class RoleGroup:
    """One actor (``resources.num_replicas`` of them) and the roles it answers."""

    name: str  # the roles joined with '+', e.g. "llm+vlm+captioner"
    roles: tuple[str, ...]
    resources: ResourceConfig

    @property
    def shared(self) -> bool:
        return len(self.roles) > 1


def engine_settings(chat_cfg: Any) -> dict:
    """What decides a chat section's server: every field but the per-role ones."""
    return chat_cfg.model_dump(mode="json", exclude=set(PER_ROLE_CHAT_FIELDS))


def engine_differences(llm_cfg: Any, vlm_cfg: Any) -> list[str]:
    """Dotted keys whose values keep the LLM and VLM sections from sharing one server (empty: they share)."""
    out: list[str] = []
    _diff(engine_settings(llm_cfg), engine_settings(vlm_cfg), "", out)
    return out


def _diff(a: Any, b: Any, prefix: str, out: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            _diff(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else key, out)
    elif a != b:
        out.append(prefix)


def shares_chat_engine(cfg: Any) -> bool:
    """True when one server answers both the LLM and the VLM role."""
    return not engine_differences(cfg.llm, cfg.vlm)


def captioner_on_vlm(cfg: Any) -> bool:
    return getattr(cfg.captioner, "backend", "transformers") == "vlm"


def plan_groups(cfg: Any) -> list[RoleGroup]:
    """The groups in start order, from an object with t2i/llm/vlm/captioner/clip sections."""
    on_vlm = ("captioner",) if captioner_on_vlm(cfg) else ()
    groups = [RoleGroup("t2i", ("t2i",), cfg.t2i.resources)]
    if shares_chat_engine(cfg):
        chat = ("llm", "vlm", *on_vlm)
        groups.append(RoleGroup("+".join(chat), chat, cfg.vlm.resources))
    else:
        groups.append(RoleGroup("llm", ("llm",), cfg.llm.resources))
        groups.append(RoleGroup("+".join(("vlm", *on_vlm)), ("vlm", *on_vlm), cfg.vlm.resources))
    if not on_vlm:
        groups.append(RoleGroup("captioner", ("captioner",), cfg.captioner.resources))
    groups.append(RoleGroup("clip", ("clip",), cfg.clip.resources))
    return groups


def role_groups(cfg: Any) -> dict[str, ResourceConfig]:
    """``{group name: resources}`` of the actors ``start_roles`` starts (a shared actor counted once)."""
    return {g.name: g.resources for g in plan_groups(cfg)}
