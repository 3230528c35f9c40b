"""Algorithm 8 (greedy prompt selection) on hand-worked cases, and the token limit."""
import math

import pytest

from agents.prompt_parts import Fragment, PromptParts
from agents.selection import candidate_outcomes, greedy_select, token_budget

BASE = PromptParts(("a cat",), ())


def C(text, part="content"):
    return Fragment(text, part)


class Scorer:
    """Score = 0.20 + per-fragment gains (+ optional pair bonuses); records every batch."""

    def __init__(self, gains, pairs=None, base=0.20):
        self.gains, self.pairs, self.base = gains, pairs or {}, base
        self.batches = []

    def value(self, text):
        frags = {f.strip() for f in text.split(",")}
        s = self.base + sum(self.gains.get(f, 0.0) for f in frags)
        s += sum(bonus for pair, bonus in self.pairs.items() if set(pair) <= frags)
        return round(s, 10)

    async def __call__(self, texts):
        self.batches.append(list(texts))
        return [self.value(t) for t in texts]


async def test_hand_worked_basic_case():
    # round 1: a .25, b .23, c .19 -> add a (s_max .25)
    # round 2: a+b .28, a+c .24   -> add b (s_max .28)
    # round 3: a+b+c .27 < .28    -> reject c
    s = Scorer({"a": .05, "b": .03, "c": -.01})
    sel = await greedy_select(BASE, [C("a"), C("b"), C("c")], s)
    assert [f.text for f in sel.added] == ["a", "b"]
    assert sel.base_score == pytest.approx(.20) and sel.best_score == pytest.approx(.28)
    assert [(r.chosen.text, r.accepted, r.scored) for r in sel.rounds] == [("a", True, 3), ("b", True, 2), ("c", False, 1)]
    # one batched scorer call per round (plus the base score), each with every remaining candidate
    assert s.batches == [["a cat"], ["a cat, a", "a cat, b", "a cat, c"], ["a cat, a, b", "a cat, a, c"], ["a cat, a, b, c"]]


async def test_ties_go_to_the_first_listed_and_equal_scores_are_kept():
    # b and a tie in round 1 -> b (listed first) wins; then a adds the same again -> kept;
    # z changes nothing (s == s_max) -> kept, as the algorithm's ">=" says.
    s = Scorer({"a": .05, "b": .05, "z": 0.0})
    sel = await greedy_select(BASE, [C("b"), C("a"), C("z")], s, base_score=.20)
    assert [f.text for f in sel.added] == ["b", "a", "z"]
    assert [r.chosen.text for r in sel.rounds] == ["b", "a", "z"]


async def test_all_candidates_worse_adds_nothing_but_still_scores_every_round():
    s = Scorer({"a": -.01, "b": -.02, "c": -.03})
    sel = await greedy_select(BASE, [C("c"), C("a"), C("b")], s, base_score=.20)
    assert sel.added == [] and sel.best_score == pytest.approx(.20)
    # removed one per round, best first, each round a fresh batched call
    assert [(r.chosen.text, r.accepted) for r in sel.rounds] == [("a", False), ("b", False), ("c", False)]
    assert [len(b) for b in s.batches] == [3, 2, 1]


async def test_candidates_that_only_help_together_are_not_found_by_the_greedy_search():
    # a alone and b alone lower the score; a and b together raise it a lot. Algorithm 8
    # adds one fragment at a time, so it never tries the pair and returns ΔP = ∅.
    s = Scorer({"a": -.01, "b": -.01}, pairs={("a", "b"): .10})
    sel = await greedy_select(BASE, [C("a"), C("b")], s, base_score=.20)
    assert sel.added == []


async def test_a_small_first_step_unlocks_the_pair():
    # a alone helps a little, so it is added; then b (which helps only with a) is added too.
    s = Scorer({"a": .001, "b": -.01}, pairs={("a", "b"): .10})
    sel = await greedy_select(BASE, [C("b"), C("a")], s, base_score=.20)
    assert [f.text for f in sel.added] == ["a", "b"]


@pytest.mark.parametrize("last, accepted", [(.245, False), (.25, True), (.26, True)])
async def test_s_max_is_the_best_score_so_far_not_the_last(last, accepted):
    # A scorer scripted per round (as a non-deterministic CLIP could be): round 1 adds a at
    # .25; round 2 rejects b at .24; round 3 compares c with .25, not with the rejected .24.
    replies = [[.25, .21, .19], [.24, .23], [last]]

    async def score(texts):
        return replies.pop(0)

    sel = await greedy_select(BASE, [C("a"), C("b"), C("c")], score, base_score=.20)
    assert [f.text for f in sel.added] == (["a", "c"] if accepted else ["a"])
    assert sel.best_score == pytest.approx(max(.25, last))


async def test_style_fragments_render_after_content():
    s = Scorer({"oil painting": .05, "bow tie": .04})
    sel = await greedy_select(BASE, [C("oil painting", "style"), C("bow tie")], s, base_score=.20)
    assert BASE.plus(sel.added).render() == "a cat, bow tie, oil painting"
    assert s.batches == [["a cat, oil painting", "a cat, bow tie"], ["a cat, bow tie, oil painting"]]


async def test_duplicates_in_the_pool_are_one_candidate():
    s = Scorer({"a": .05})
    sel = await greedy_select(BASE, [C("a"), C("a")], s, base_score=.20)
    assert [f.text for f in sel.added] == ["a"] and len(sel.rounds) == 1


async def test_empty_pool_costs_no_scoring():
    s = Scorer({})
    sel = await greedy_select(BASE, [], s, base_score=.20)
    assert sel.added == [] and s.batches == []


def words(text):
    return len(text.replace(",", " ").split())


async def test_token_limit_drops_candidates_that_would_not_fit():
    # budget 5 words: "a cat" is 2. "long one here now" (4) never fits; "b c" fits alone (4)
    # but not after "a" was added (5 -> 5 fits; 6 does not).
    counted = []

    async def count(texts):
        counted.append(list(texts))
        return [words(t) for t in texts]

    s = Scorer({"a": .05, "b c": .03, "long one here now": .5})
    sel = await greedy_select(BASE, [C("long one here now"), C("a"), C("b c")], s, base_score=.20,
                              fits=token_budget(count, 4))
    assert [f.text for f in sel.added] == ["a"]
    assert {f.text for f in sel.too_long} == {"long one here now", "b c"}
    assert not any("long one" in t for batch in s.batches for t in batch)  # never scored
    # the tokenizer is asked once per distinct text
    asked = [t for batch in counted for t in batch]
    assert len(asked) == len(set(asked))


async def test_token_budget_memoises_and_checks_its_inputs():
    calls = []

    async def count(texts):
        calls.append(list(texts))
        return [words(t) for t in texts]

    fits = token_budget(count, 3)
    assert await fits(["a b", "a b c d"]) == [True, False]
    assert await fits(["a b", "a b c d"]) == [True, False]
    assert len(calls) == 1
    with pytest.raises(ValueError):
        token_budget(count, 0)

    async def bad(texts):
        return [1]

    with pytest.raises(ValueError, match="counts"):
        await token_budget(bad, 3)(["a", "b"])


async def test_base_score_is_computed_when_not_given():
    s = Scorer({"a": .05})
    sel = await greedy_select(BASE, [C("a")], s)
    assert s.batches[0] == ["a cat"] and sel.base_score == pytest.approx(.20)


@pytest.mark.parametrize("reply", [[0.1], [math.nan, 0.1]])
async def test_bad_scorer_output_is_an_error(reply):
    async def score(texts):
        return reply

    with pytest.raises(ValueError, match="CLIP scorer"):
        await greedy_select(BASE, [C("a"), C("b")], score, base_score=.2)


async def test_candidate_outcomes_give_each_candidate_its_score_threshold_and_fate():
    # the hand-worked case above, plus a duplicate of b and a candidate too long for the budget
    s = Scorer({"a": .05, "b": .03, "c": -.01, "long long long": .5})
    cands = [C("c"), C("b"), C("long long long"), C("a"), C("b", "style")]

    async def fits(texts):  # the long fragment never fits
        return ["long" not in t for t in texts]

    sel = await greedy_select(BASE, cands, s, fits=fits)
    out = candidate_outcomes(cands, sel)
    assert [(o["text"], o["part"], o["outcome"], o["round"]) for o in out] == [
        ("c", "content", "no_gain", 2), ("b", "content", "kept", 1), ("long long long", "content", "too_long", None),
        ("a", "content", "kept", 0), ("b", "style", "duplicate", None)]
    scores = {o["text"]: (o["clip_t"], o["needed"]) for o in out if o["clip_t"] is not None}
    assert scores == {"a": (pytest.approx(.25), pytest.approx(.20)), "b": (pytest.approx(.28), pytest.approx(.25)),
                      "c": (pytest.approx(.27), pytest.approx(.28))}
    assert out[2]["clip_t"] is None and out[4]["clip_t"] is None


async def test_candidate_outcomes_keep_a_tie_and_handle_no_candidates():
    s = Scorer({"a": 0.0})
    sel = await greedy_select(BASE, [C("a")], s)
    assert [(o["outcome"], o["clip_t"], o["needed"]) for o in candidate_outcomes([C("a")], sel)] == [
        ("kept", pytest.approx(.20), pytest.approx(.20))]  # s = s_max keeps it, as in Algorithm 8
    assert candidate_outcomes([], await greedy_select(BASE, [], s)) == []
