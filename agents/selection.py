"""Greedy prompt selection, thesis Algorithm 8, plus the text-encoder token limit.

Algorithm 8, as implemented by :func:`greedy_select`::

    ΔP = ∅;  s_max = ClipSimilarity(I_r, P)
    while P_cand ≠ ∅:
        p_opt, s = argmax_{p ∈ P_cand} ClipSimilarity(I_r, P + ΔP + p)
        if s ≥ s_max: ΔP = ΔP + p_opt
        P_cand = P_cand − p_opt
        s_max = max(s_max, s)
    return ΔP

Every round scores all remaining candidates in one call of ``score`` (one batch for the
CLIP scorer). Ties go to the candidate listed first; a candidate that leaves the score
unchanged (s = s_max) is kept, as in the algorithm. A candidate whose addition would
push the rendered prompt past the token budget is dropped from the pool before the
round's scoring and never added.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Optional, Sequence

from agents.prompt_parts import Fragment, PromptParts

#: Scores rendered prompts against the reference image (CLIP text-image similarity).
ScoreFn = Callable[[Sequence[str]], Awaitable[Sequence[float]]]
#: Says for each rendered prompt whether it fits the text encoder.
FitsFn = Callable[[Sequence[str]], Awaitable[Sequence[bool]]]


@dataclass
class Round:
    """One pass of the while loop."""

    chosen: Fragment
    score: float
    accepted: bool
    scored: int  # candidates scored in this round


@dataclass
class Selection:
    """What Algorithm 8 returned and how it got there."""

    added: list[Fragment]
    base_score: float
    best_score: float  # s_max at the end
    rounds: list[Round] = field(default_factory=list)
    too_long: list[Fragment] = field(default_factory=list)


async def greedy_select(
    base: PromptParts,
    candidates: Sequence[Fragment],
    score: ScoreFn,
    *,
    base_score: Optional[float] = None,
    fits: Optional[FitsFn] = None,
) -> Selection:
    """Algorithm 8 over ``candidates`` (duplicates by text are dropped: P_cand is a set).

    ``base_score`` is ClipSimilarity(I_r, P) when the caller already has it; otherwise it
    is computed with one call of ``score``.
    """
    pool: list[Fragment] = []
    seen: set[str] = set()
    for cand in candidates:
        if cand.text not in seen:
            seen.add(cand.text)
            pool.append(cand)
    if base_score is None:
        base_score = checked_scores(await score([base.render()]), 1, "CLIP scorer (current prompt)")[0]
    s_max = float(base_score)
    delta: list[Fragment] = []
    too_long: list[Fragment] = []
    rounds: list[Round] = []
    while pool:
        current = base.plus(delta)
        texts = [current.plus([c]).render() for c in pool]
        if fits is not None:
            ok = list(await fits(texts))
            if len(ok) != len(texts):
                raise ValueError(f"token check returned {len(ok)} answers for {len(texts)} prompts")
            too_long += [c for c, k in zip(pool, ok) if not k]
            pool = [c for c, k in zip(pool, ok) if k]
            texts = [t for t, k in zip(texts, ok) if k]
            if not pool:
                break
        scores = checked_scores(await score(texts), len(texts), "CLIP scorer (candidate prompts)")
        best = max(range(len(pool)), key=lambda i: (scores[i], -i))  # first of equal maxima
        p_opt, s = pool[best], scores[best]
        accepted = s >= s_max
        if accepted:
            delta.append(p_opt)
        rounds.append(Round(chosen=p_opt, score=s, accepted=accepted, scored=len(pool)))
        pool.pop(best)
        s_max = max(s_max, s)
    return Selection(added=delta, base_score=float(base_score), best_score=s_max, rounds=rounds, too_long=too_long)


#: What happened to one candidate of a selection (``outcome`` of :func:`candidate_outcomes`).
KEPT, NO_GAIN, TOO_LONG, DUPLICATE = "kept", "no_gain", "too_long", "duplicate"
NOT_STYLE = "not_style"  # agent.style_only: a content candidate, never scored


def candidate_outcomes(candidates: Sequence[Fragment], sel: Selection) -> list[dict]:
    """Each candidate, in the order proposed, with what Algorithm 8 did to it (for the record and the report).

    Every candidate still in the pool is chosen in exactly one round, so its round gives its
    score ``clip_t`` (ClipSimilarity(I_r, P + ΔP + p) with ΔP as it was then) and ``needed``,
    the s_max it had to reach: ``kept`` when score ≥ needed, else ``no_gain``. ``too_long``:
    dropped before scoring by the token limit (no score); ``duplicate``: the same text as an
    earlier candidate (P_cand is a set).
    """
    chosen: dict[str, tuple[int, Round, float]] = {}
    s_max = sel.base_score
    for number, rnd in enumerate(sel.rounds):
        chosen[rnd.chosen.text] = (number, rnd, s_max)
        s_max = max(s_max, rnd.score)
    too_long = {c.text for c in sel.too_long}
    out: list[dict] = []
    seen: set[str] = set()
    for cand in candidates:
        entry = {"text": cand.text, "part": cand.part, "outcome": DUPLICATE, "clip_t": None, "needed": None, "round": None}
        if cand.text not in seen:
            seen.add(cand.text)
            if cand.text in chosen:
                number, rnd, needed = chosen[cand.text]
                entry.update(outcome=KEPT if rnd.accepted else NO_GAIN, clip_t=rnd.score, needed=needed, round=number)
            elif cand.text in too_long:
                entry["outcome"] = TOO_LONG
        out.append(entry)
    return out


def checked_scores(values: Sequence[float], expected: int, what: str) -> list[float]:
    """``values`` as floats, after checking the scorer returned ``expected`` finite scores."""
    out = [float(v) for v in values]
    if len(out) != expected:
        raise ValueError(f"{what}: expected {expected} scores, got {len(out)}")
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"{what}: non-finite score in {out}")
    return out


def token_budget(count_tokens: Callable[[Sequence[str]], Awaitable[Sequence[int]]], budget: int) -> FitsFn:
    """A :data:`FitsFn` from a tokenizer: a prompt fits when its token count is at most ``budget``.

    Counts are memoised per text for the life of the returned function (one selection),
    so a round in which ΔP did not change asks the tokenizer nothing.
    """
    if budget < 1:
        raise ValueError(f"token budget must be positive, got {budget}")
    known: dict[str, int] = {}

    async def fits(texts: Sequence[str]) -> list[bool]:
        missing = [t for t in dict.fromkeys(texts) if t not in known]
        if missing:
            counts = list(await count_tokens(missing))
            if len(counts) != len(missing):
                raise ValueError(f"count_tokens returned {len(counts)} counts for {len(missing)} texts")
            known.update(zip(missing, (int(c) for c in counts)))
        return [known[t] <= budget for t in texts]

    return fits
