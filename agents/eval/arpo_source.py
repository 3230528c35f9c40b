"""ARPO as a prompt source: finished results of a batch output folder, reused as they are.

Method ``arpo`` is the config's own agent and roles; ``arpo:<name>`` an
``evaluation.arpo_variants`` entry (or, without one, ``arpo:vanilla`` /
``arpo:enhanced``: the framework alone changed). Each reads ``results.jsonl`` of its
batch folder (agents/browser/results.py) and uses every image's best prompt. Images without a
finished result are run by the batch job first when the variant allows it (the caller
supplies the runner, so this module never starts a model).

The per-step view (Figure 4.7): ARPO stopped after ``k`` steps would return the best
of iterations 0..k by CLIP-I, the agent's own choice; an image that stopped earlier
keeps its result for every later ``k``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from agents.config import ArpoConfig
from agents.eval.config import ArpoVariant, EvalConfig
from agents.eval.methods import EvalImage, MethodSpec, NoPrompt, model_name
from agents.eval.records import fingerprint
from agents.browser.results import RESULTS_JSONL, ResultsLog


@dataclass
class ArpoPlan:
    """Where one ARPO method's results are and how to make the missing ones."""

    key: str
    label: str
    results_dir: Path
    cfg: ArpoConfig
    run_missing: bool


def plan_arpo(spec: MethodSpec, cfg: EvalConfig, out_dir: Path) -> ArpoPlan:
    name = spec.arg or "default"
    ev = cfg.evaluation
    if spec.arg is None:
        variant = ArpoVariant(results_dir=ev.arpo_results, run_missing=ev.run_missing_arpo)
    elif spec.arg in ev.arpo_variants:
        variant = ev.arpo_variants[spec.arg]
    elif spec.arg in ("vanilla", "enhanced"):
        variant = ArpoVariant(framework=spec.arg, run_missing=ev.run_missing_arpo)
    else:
        known = ", ".join(sorted({*ev.arpo_variants, "vanilla", "enhanced"}))
        raise ValueError(f"method {spec.key!r}: no ARPO variant {spec.arg!r} in evaluation.arpo_variants (known: {known})")
    base = cfg.arpo_config()
    updates = {}
    if variant.framework is not None:
        updates["agent"] = base.agent.model_copy(update={"framework": variant.framework})
    if variant.llm is not None:
        updates["llm"] = variant.llm
    if variant.vlm is not None:
        updates["vlm"] = variant.vlm
    variant_cfg = base.model_copy(update=updates)
    results_dir = Path(variant.results_dir).expanduser() if variant.results_dir else out_dir / "arpo" / name
    label = ev.method_labels.get(spec.key) or variant.label or default_label(variant_cfg)
    return ArpoPlan(key=spec.key, label=label, results_dir=results_dir, cfg=variant_cfg, run_missing=variant.run_missing)


def default_label(cfg: ArpoConfig) -> str:
    label = f"ARPO ({model_name(cfg.vlm.model)}, {model_name(cfg.llm.model)})"
    return label if cfg.agent.framework == "enhanced" else f"{label}, vanilla"


def load_results(results_dir: Path) -> dict[str, dict]:
    """Finished records of a batch folder by image id (an absent log means none).

    Read only: the folder may belong to a batch job that is running now (whose lock this
    does not hold), so a partial last line is skipped, never cut off."""
    path = results_dir / RESULTS_JSONL
    if not path.exists():
        return {}
    return {r["image_id"]: r for r in ResultsLog(path, repair=False).records() if r.get("status") == "done"}


def best_prompt(record: dict) -> str:
    prompt = record.get("prompt") or record.get("final") or {}
    text = prompt.get("rendered") if isinstance(prompt, dict) else None
    if not text:
        raise NoPrompt(f"ARPO result for {record.get('source')!r} has no prompt")
    return text


def best_up_to(record: dict, step: int) -> Optional[dict]:
    """The iteration ARPO would return had it stopped after ``step`` steps (best CLIP-I, first on ties)."""
    its = [it for it in (record.get("iterations") or []) if _index(it) <= step and isinstance(it.get("clip_i"), (int, float))]
    if not its:
        return None
    return max(its, key=lambda it: (it["clip_i"], -_index(it)))


def _index(it: dict) -> int:
    return int(it.get("iteration", it.get("index", 0)))


def last_step(records: dict[str, dict]) -> int:
    return max((_index(it) for r in records.values() for it in (r.get("iterations") or [])), default=0)


class ArpoSource:
    """Best prompts of a batch folder's finished results."""

    def __init__(self, plan: ArpoPlan, results: dict[str, dict]):
        self.plan, self.results = plan, results
        self.key, self.label = plan.key, plan.label
        self.fingerprint = fingerprint("arpo", str(plan.results_dir))

    def cache_key(self, image: EvalImage) -> Optional[str]:
        record = self.results.get(image.image_id)
        return best_prompt(record) if record else None

    async def prompt(self, image: EvalImage) -> tuple[str, dict]:
        record = self.results.get(image.image_id)
        if record is None:
            raise NoPrompt(f"no finished ARPO result for {image.rel} in {self.plan.results_dir}")
        details = {"results_dir": str(self.plan.results_dir), "best_iteration": record.get("best_iteration"),
                   "iterations": len(record.get("iterations") or []), "stop_reason": record.get("stop_reason")}
        return best_prompt(record), details


class ArpoStepSource:
    """ARPO's result had it stopped after ``step`` steps (for the all-metrics Figure 4.7 curve)."""

    def __init__(self, parent: ArpoSource, step: int):
        self.parent, self.step = parent, step
        self.key = step_key(parent.key, step)
        self.label = f"{parent.label} @ step {step}"
        self.fingerprint = fingerprint("arpo-step", parent.fingerprint, step)

    def cache_key(self, image: EvalImage) -> Optional[str]:
        record = self.parent.results.get(image.image_id)
        it = best_up_to(record, self.step) if record else None
        return it.get("rendered") if it else None

    async def prompt(self, image: EvalImage) -> tuple[str, dict]:
        text = self.cache_key(image)
        if not text:
            raise NoPrompt(f"no ARPO iteration up to step {self.step} for {image.rel}")
        return text, {"step": self.step}


def step_key(key: str, step: int) -> str:
    return f"{key}@step{step}"
