"""The memory plan (``MemoryPlan``, ``make_plan``, ``plan_problems``): every actor group's needs, placed on
the GPUs and compared with their memory; and its text (``format_plan``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from actors.memory.needs import GroupNeed, group_need
from actors.memory.placement import Placed, place
from actors.memory.sizes import fmt, fmt_params
from actors.role_groups import plan_groups


@dataclass
class MemoryPlan:
    gpu_memory: int
    gpus: int
    needs: list[GroupNeed]
    placed: list[Placed]
    source: str = ""

    def on_gpu(self, gpu: int) -> list[Placed]:
        return [p for p in self.placed if gpu in p.gpus]

    def used(self, gpu: int, certain: bool = False) -> int:
        return sum(p.need.certain if certain else p.need.takes for p in self.on_gpu(gpu))

    def problems(self, certain_only: bool = False) -> list[str]:
        """One sentence per shortfall: a GPU that overflows (by how much, which roles), an engine whose
        budget cannot hold its model, a model that could not be sized. Without ``certain_only``,
        the estimates (activations, CUDA contexts) count too."""
        out = []
        for need in self.needs:
            out.extend(need.problems)
            if not certain_only:
                out.extend(need.estimated_problems)
        for gpu in range(self.gpus):
            used = self.used(gpu, certain=certain_only)
            if used > self.gpu_memory:
                parts = ", ".join(f"{p.need.group.name} {fmt(p.need.certain if certain_only else p.need.takes)}"
                                  for p in self.on_gpu(gpu))
                what = "weights and vLLM budgets alone" if certain_only else "the roles"
                out.append(f"GPU {gpu} ({fmt(self.gpu_memory)}): {what} need {fmt(used)}, over by "
                           f"{fmt(used - self.gpu_memory)}: {parts}")
        for p in self.placed:
            if p.need.where == "gpu" and not p.gpus:
                replica = f" (replica {p.replica + 1})" if p.need.group.resources.num_replicas > 1 else ""
                out.append(f"{p.need.group.name}{replica}: no GPU has num_gpus "
                           f"{p.need.group.resources.num_gpus:g} free after the actors before it")
        return out

    @property
    def unknown(self) -> list[str]:
        return [f"{n.group.name}: size unknown ({n.unknown})" for n in self.needs if n.unknown]

    def format(self) -> str:
        return format_plan(self)


def make_plan(sections: Any, gpu_memory: int, gpus: int = 1, *, use_hub: bool = True,
              cache_dir: Optional[str] = None) -> MemoryPlan:
    """The plan for an object with t2i/llm/vlm/captioner/clip sections (an ArpoConfig, or
    :func:`role_sections` of a YAML file) on ``gpus`` GPUs of ``gpu_memory`` bytes each."""
    if gpus < 1:
        raise ValueError("gpus must be at least 1")
    needs = [group_need(g, sections, gpu_memory, use_hub=use_hub, cache_dir=cache_dir) for g in plan_groups(sections)]
    return MemoryPlan(gpu_memory, gpus, needs, place(needs, gpus))


def plan_problems(sections: Any, gpu_memory_bytes: int, gpus: int = 1, *, certain_only: bool = False,
                  use_hub: bool = True, cache_dir: Optional[str] = None) -> list[str]:
    """The plan's shortfalls (empty: it fits). See :meth:`MemoryPlan.problems`."""
    return make_plan(sections, gpu_memory_bytes, gpus, use_hub=use_hub, cache_dir=cache_dir).problems(certain_only)


# --------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------

def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def format_plan(plan: MemoryPlan) -> str:
    lines = [f"GPU memory plan: {plan.gpus} GPU{'s' if plan.gpus > 1 else ''} of {fmt(plan.gpu_memory)} "
             f"({plan.gpu_memory / 1e9:.1f} GB) each" + (f", {plan.source}" if plan.source else ""), ""]
    rows = [["group", "GPU", "num_gpus", "params", "weights", "KV cache", "activations", "CUDA ctx", "takes"]]
    for p in plan.placed:
        n = p.need
        name = n.group.name + (f" #{p.replica + 1}" if n.group.resources.num_replicas > 1 else "")
        where = ",".join(map(str, p.gpus)) if p.gpus else {"gpu": "none", "cpu": "CPU", "remote": "remote"}[n.where]
        if n.where != "gpu" or n.unknown:
            note = "size unknown" if n.unknown else "-"
            rows.append([name, where, f"{n.group.resources.num_gpus:g}", "-", note, "-", "-", "-", "-"])
            continue
        kv = (fmt(n.kv) if n.is_vllm else f"~{fmt(n.kv)}") if n.kv else "-"
        if n.is_vllm:
            takes = f"{fmt(n.budget)} (vLLM budget)" if n.takes == n.budget else f"~{fmt(n.takes)} (budget {fmt(n.budget)} too small)"
        else:
            takes = f"~{fmt(n.takes)}"
        rows.append([name, where, f"{n.group.resources.num_gpus:g}", fmt_params(n.params), fmt(n.weights), kv,
                     f"~{fmt(n.activations)}", "in budget" if n.is_vllm else f"~{fmt(n.context)}", takes])
    lines += _table(rows)
    lines += ["", "Per GPU (~: includes estimates):"]
    rows = []
    for gpu in range(plan.gpus):
        used, sure = plan.used(gpu), plan.used(gpu, certain=True)
        verdict = "fits" if used <= plan.gpu_memory else f"OVER by {fmt(used - plan.gpu_memory)}"
        rows.append([f"GPU {gpu}", f"~{fmt(used)} of {fmt(plan.gpu_memory)}", f"(certain: {fmt(sure)})",
                     f"free ~{fmt(max(0, plan.gpu_memory - used))}", verdict,
                     ", ".join(p.need.group.name for p in plan.on_gpu(gpu)) or "-"])
    lines += _table(rows)
    lines += ["", "Details:"]
    for n in plan.needs:
        head = f"  {n.group.name} [{n.model}]" if n.model else f"  {n.group.name}"
        if n.source:
            head += (f" (from the {n.source})" if n.source.startswith("built-in table") else f" (config: {n.source})")
        if n.unknown:
            lines.append(f"{head}: size unknown: {n.unknown}")
            continue
        if n.where == "cpu":
            lines.append(f"{head}: on the CPU (num_gpus 0 or device cpu): no GPU memory")
            continue
        lines.append(head)
        lines += [f"    {note}" for note in n.notes]
    problems = plan.problems()
    lines.append("")
    if plan.unknown:
        lines += ["Incomplete: " + u for u in plan.unknown]
    if problems:
        lines += ["DOES NOT FIT:"] + [f"  {p}" for p in problems]
    elif not plan.unknown:
        lines.append("Fits.")
    return "\n".join(lines)
