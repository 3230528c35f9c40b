"""Several prompts per image: the K best distinct prompts an optimisation met, ranked by CLIP-I.

Every iteration's prompt was rendered by the T2I model with the run's seeds and scored
by CLIP-I (mean over seeds of image-image similarity to the reference), so the ranking
costs no model call: it reads the history. Rank 1 is always the result's best prompt
(``best_iteration``): ties in CLIP-I go to the earlier iteration, as the agent breaks them.

Distinct means different fragments. Two prompts are the same when they hold the same set
of fragments after :func:`agents.prompt_parts.normalise` (case folded, inner whitespace
collapsed, edge punctuation dropped), whatever their order and whichever part (content or
style) a fragment is filed under: ``"a cat, Oil Painting"`` and ``"oil painting, a cat"``
are one prompt. Of such a group only the best-ranked member is listed.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

from agents.prompt_parts import normalise

#: The most prompts a result may list (agent.prompts_per_image).
MAX_PROMPTS_PER_IMAGE = 100


def prompt_key(fragments: Iterable[str]) -> frozenset[str]:
    """What makes two prompts the same: their normalised fragments, as a set."""
    return frozenset(key for key in (normalise(f) for f in fragments) if key)


def image_score(record: Mapping) -> float:
    """The image score the loop maximises for an iteration record: the style similarity ``style_i`` of an
    agent.style_only run (only such runs record it), else CLIP-I."""
    return float(record["style_i"]) if record.get("style_i") is not None else float(record["clip_i"])


def ranked_prompts(history: Sequence[Mapping], k: int) -> list[dict]:
    """The ``k`` best distinct prompts of ``history`` (iteration records), best first by CLIP-I (by the style
    similarity ``style_i`` in an agent.style_only run).

    Each is ``{"rank", "iteration", "content", "style", "rendered", "clip_i", "clip_t",
    "clip_i_per_seed"}`` taken from the iteration that evaluated it. Fewer than ``k`` when
    the optimisation met fewer distinct prompts.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    order = sorted(range(len(history)), key=lambda n: (-image_score(history[n]), int(history[n].get("iteration", n))))
    seen: set[frozenset[str]] = set()
    out: list[dict] = []
    for n in order:
        rec = history[n]
        key = prompt_key([*rec.get("content", ()), *rec.get("style", ())])
        if key in seen:
            continue
        seen.add(key)
        out.append({
            "rank": len(out) + 1, "iteration": int(rec.get("iteration", n)),
            "content": list(rec.get("content", ())), "style": list(rec.get("style", ())), "rendered": rec["rendered"],
            "clip_i": float(rec["clip_i"]), "clip_t": float(rec["clip_t"]),
            "clip_i_per_seed": [float(v) for v in rec.get("clip_i_per_seed", ())],
            **({"style_i": float(rec["style_i"])} if rec.get("style_i") is not None else {}),
        })
        if len(out) == k:
            break
    return out
