"""The CLIP-Interrogator method's selection with a scripted scorer on small fixed lists."""
import pytest

from agents.eval.interrogator import (InterrogatorConfig, TermLists, classic_prompt, fit_prefix, interrogate,
                                      load_term_lists, package_data_dir, read_list, top_k)

# Each term's contribution to the similarity; a text scores the sum over its comma/space pieces.
WEIGHTS = {
    "a photo": 0.05, "an oil painting": 0.30, "a sketch": 0.10,
    "by Alice": 0.20, "by Bob": 0.40, "by Carol": 0.10,
    "impressionism": 0.25, "cubism": 0.05,
    "warm light": 0.08, "golden hour": 0.12, "blurry": -0.20, "sharp focus": 0.03, "long exposure": 0.01,
}
LISTS = TermLists(mediums=("a photo", "an oil painting", "a sketch"), artists=("Alice", "Bob", "Carol"),
                  movements=("cubism", "impressionism"),
                  flavors=("blurry", "warm light", "golden hour", "sharp focus", "long exposure"))


class Scorer:
    def __init__(self, weights=WEIGHTS, base=0.1):
        self.weights, self.base, self.calls, self.texts = weights, base, 0, 0

    def value(self, text: str) -> float:
        return self.base + sum(w for term, w in self.weights.items() if term in text)

    async def __call__(self, texts):
        self.calls += 1
        self.texts += len(texts)
        return [self.value(t) for t in texts]


async def word_count(texts):
    return [len(t.replace(",", " ,").split()) for t in texts]


def cfg(**kw):
    return InterrogatorConfig(**{"min_chain": 0, "max_chain": 32, "flavor_candidates": 10, **kw})


async def test_picks_best_medium_artist_movement_then_chains_improving_flavors():
    scorer = Scorer()
    out = await interrogate("a woman in a garden", LISTS, cfg(), scorer, word_count, token_limit=75)
    assert (out.medium, out.artist, out.movement) == ("an oil painting", "by Bob", "impressionism")
    # Flavors join best-first while the score rises; "sharp focus" and "long exposure" still add a little,
    # "blurry" lowers it and is never taken.
    assert out.flavors == ["golden hour", "warm light", "sharp focus", "long exposure"]
    assert out.prompt == ("a woman in a garden, an oil painting by Bob, impressionism, "
                          "golden hour, warm light, sharp focus, long exposure")
    assert out.score == pytest.approx(scorer.value(out.prompt))
    assert out.scorer_calls == scorer.calls


async def test_chain_stops_when_nothing_improves():
    weights = {**WEIGHTS, "warm light": -0.01, "golden hour": 0.0, "sharp focus": -0.02, "long exposure": -0.03}
    out = await interrogate("a cat", LISTS, cfg(), Scorer(weights), word_count, token_limit=75)
    assert out.flavors == []
    assert out.prompt == "a cat, an oil painting by Bob, impressionism"


async def test_min_chain_keeps_forced_steps_but_returns_the_best_prompt_seen():
    weights = {**WEIGHTS, "golden hour": -0.05, "warm light": 0.5, "sharp focus": -0.3, "long exposure": -0.3, "blurry": -0.4}
    # step 0 is forced: the best single flavor is "warm light" (+0.5), then the next best is "golden hour" (-0.05)
    out = await interrogate("a cat", LISTS, cfg(min_chain=2), Scorer(weights), word_count, token_limit=75)
    assert out.flavors == ["warm light"]
    assert out.prompt.endswith("impressionism, warm light")


async def test_token_limit_is_never_exceeded():
    limit = 14  # "a cat , an oil painting by Bob , impressionism" = 10 words; each flavor adds 3 ("," + 2 words)
    out = await interrogate("a cat", LISTS, cfg(), Scorer(), word_count, token_limit=limit)
    assert (await word_count([out.prompt]))[0] <= limit
    assert out.flavors == ["golden hour"]


async def test_classic_prompt_is_truncated_to_fit_and_caption_alone_can_win():
    # limit too small for the medium/artist part: fit_prefix drops trailing parts
    assert await fit_prefix("a cat, an oil painting by Bob, impressionism", word_count, 8) == "a cat, an oil painting by Bob"
    weights = {k: -1.0 for k in WEIGHTS}
    out = await interrogate("a cat", LISTS, cfg(), Scorer(weights), word_count, token_limit=75)
    assert out.prompt == "a cat" and out.flavors == []


async def test_flavor_candidates_and_batching_bound_the_scorer_work():
    scorer = Scorer()
    out = await interrogate("a cat", LISTS, cfg(flavor_candidates=2, score_batch_size=2), scorer, word_count, token_limit=75)
    assert out.flavors == ["golden hour", "warm light"]  # only the 2 best-ranked flavors enter the chain
    # lists of 3/3/2/5 texts in chunks of 2: 2 + 2 + 1 + 3 calls to rank, 1 for caption and base,
    # then one call per chain step (2 trials, then 1)
    assert scorer.calls == out.scorer_calls == 11


def test_classic_prompt_format_follows_the_package():
    assert classic_prompt("a cat", "a photo", "by Bob", "cubism") == "a cat, a photo by Bob, cubism"
    assert classic_prompt("a photo of a cat", "a photo", "by Bob", "cubism") == "a photo of a cat by Bob, cubism"


def test_top_k_is_stable_on_ties():
    import numpy as np

    assert top_k(["a", "b", "c"], np.array([1.0, 2.0, 2.0]), 2) == ["b", "c"]


def test_package_lists_load_and_max_flavors_caps(tmp_path):
    lists = load_term_lists(InterrogatorConfig(max_flavors=50))
    assert len(lists.flavors) == 50 and lists.flavors[0] == "highly detailed"
    assert len(lists.mediums) > 50 and len(lists.artists) > 5000 and len(lists.movements) > 100
    assert (package_data_dir() / "flavors.txt").is_file()
    (tmp_path / "x.txt").write_text("a\n\n b \na\n")
    assert read_list(tmp_path / "x.txt") == ("a", "b")
    with pytest.raises(FileNotFoundError, match="mediums.txt"):
        load_term_lists(InterrogatorConfig(data_dir=str(tmp_path)))


async def test_empty_caption_and_bad_scorer_are_errors():
    with pytest.raises(ValueError, match="caption is empty"):
        await interrogate("  ", LISTS, cfg(), Scorer(), word_count, 75)

    async def short(texts):
        return [0.0]

    with pytest.raises(RuntimeError, match="returned 1 scores for 3 texts"):
        await interrogate("a cat", LISTS, cfg(), short, word_count, 75)
