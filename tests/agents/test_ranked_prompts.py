"""Several prompts per image (agents/ranked_prompts.py) and training captions with a trigger word
(agents/training_caption.py): the rules, then the real graph with scripted roles."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from agents.api import optimise
from agents.config import AgentConfig
from agents.ranked_prompts import prompt_key, ranked_prompts
from agents.training_caption import caption_token_counter, check_caption_prefix, with_caption_prefix
from tests.agents.doubles import World, count_tokens, fragment_sum, make_roles, write_reference

CAPTION = "a black and white cat"


def _rec(iteration, content, style, clip_i, clip_t=0.3):
    return {"iteration": iteration, "content": content, "style": style, "rendered": ", ".join([*content, *style]),
            "clip_i": clip_i, "clip_t": clip_t, "clip_i_per_seed": [clip_i]}


# --------------------------------------------------------------------------- the ranking rule

def test_distinct_means_other_fragments_not_other_order_case_or_part():
    assert prompt_key(["a cat", "Oil Painting."]) == prompt_key(["oil  painting", "A CAT"])
    assert prompt_key(["a cat", "oil painting"]) != prompt_key(["a cat", "oil paintings"])
    history = [
        _rec(0, ["a cat"], [], 0.50),
        _rec(1, ["a cat", "red hat"], [], 0.70),
        _rec(2, ["A Cat"], ["Red hat"], 0.65),  # iteration 1's fragments, other case and part: the same prompt
        _rec(3, ["a cat", "red hat"], ["oil painting"], 0.60),
    ]
    ranked = ranked_prompts(history, 4)
    assert [(p["rank"], p["iteration"]) for p in ranked] == [(1, 1), (2, 3), (3, 0)]  # fewer than asked: 3 distinct
    assert ranked[0]["rendered"] == "a cat, red hat" and ranked[0]["clip_i"] == 0.70
    assert ranked_prompts(history, 2) == ranked[:2]


def test_ties_go_to_the_earlier_iteration_as_the_agent_breaks_them():
    history = [_rec(0, ["a"], [], 0.5), _rec(1, ["a", "b"], [], 0.6), _rec(2, ["a", "b", "c"], [], 0.6)]
    assert [p["iteration"] for p in ranked_prompts(history, 3)] == [1, 2, 0]
    with pytest.raises(ValueError, match="at least 1"):
        ranked_prompts(history, 0)


async def test_the_graph_lists_the_k_best_distinct_prompts_with_their_scores(tmp_path):
    # the image score rewards "blue eyes", punishes "bow tie"; the text score likes both, so the loop keeps going
    w = World(fragment_sum({"blue eyes": .05, "bow tie": .04, "oil painting": .03}),
              fragment_sum({"blue eyes": .05, "bow tie": -.08, "oil painting": .01}))
    roles = make_roles(w, {None: ["[blue eyes]", "[bow tie]", "[oil painting]"]}, caption=CAPTION)
    cfg = AgentConfig(framework="vanilla", max_steps=3, prompts_per_image=3)
    r = await optimise("img", write_reference(w, tmp_path), tmp_path / "img", roles, cfg, 77)
    by_clip = sorted(r.iterations, key=lambda it: (-it.clip_i, it.iteration))
    assert [p.iteration for p in r.prompts] == [it.iteration for it in by_clip[:3]]
    assert r.prompts[0].rendered == r.prompt.rendered and r.prompts[0].iteration == r.best_iteration
    for p in r.prompts:  # each with the scores of the iteration that generated it
        it = r.iterations[p.iteration]
        assert (p.clip_i, p.clip_t, p.clip_i_per_seed, p.rendered) == (it.clip_i, it.clip_t, it.clip_i_per_seed, it.rendered)
    assert r.prompts_per_image == 3 and r.caption == r.prompt.rendered  # no prefix: the caption is the prompt
    # one prompt by default, and the same optimisation: the ranking calls no model
    generated = roles.t2i.calls["generate"]
    roles1 = make_roles(w, {None: ["[blue eyes]", "[bow tie]", "[oil painting]"]}, caption=CAPTION)
    r1 = await optimise("img", write_reference(w, tmp_path), tmp_path / "img1", roles1,
                        AgentConfig(framework="vanilla", max_steps=3), 77)
    assert [p.rendered for p in r1.prompts] == [r.prompt.rendered] and roles1.t2i.calls["generate"] == generated


# --------------------------------------------------------------------------- the trigger word

def test_the_prefix_is_added_once():
    assert with_caption_prefix("a cat, oil painting", "ohwx") == "ohwx, a cat, oil painting"
    assert with_caption_prefix("a cat, OHWX., oil painting", "ohwx") == "a cat, OHWX., oil painting"
    assert with_caption_prefix("ohwx man, a hat", "ohwx") == "ohwx, ohwx man, a hat"  # a fragment holding it is not it
    assert with_caption_prefix("a cat", None) == "a cat"


@pytest.mark.parametrize("bad, why", [("", "empty"), ("  ..  ", "empty"), ("ohwx, man", "comma"),
                                      ("a;b", "semicolon"), ("a\nb", "line break"), ("x" * 201, "at most 200")])
def test_a_bad_prefix_is_refused_saying_why(bad, why):
    with pytest.raises(ValueError, match=why):
        check_caption_prefix(bad)
    with pytest.raises(ValidationError, match="caption_prefix"):
        AgentConfig(caption_prefix=bad)
    assert AgentConfig(caption_prefix="  ohwx   man ").caption_prefix == "ohwx man"


async def test_the_budget_counts_the_prefix_once_in_the_caption_text():
    seen = []

    async def count(texts):
        seen.extend(texts)
        return [count_tokens(t) for t in texts]

    counter = caption_token_counter(count, "ohwx")
    assert await counter(["a cat", "ohwx, a cat"]) == [count_tokens("ohwx, a cat")] * 2
    assert seen == ["ohwx, a cat", "ohwx, a cat"]  # never "ohwx, ohwx, a cat"
    assert caption_token_counter(count, None) is count


async def test_a_prefix_leaves_out_a_fragment_that_only_fits_without_it(tmp_path):
    w = World(fragment_sum({"blue eyes": .05, "bow tie": .04}))
    replies = {None: ["[blue eyes]", "[bow tie]", "[]"]}
    # "a black and white cat, blue eyes" is 8 tokens in the double; "..., bow tie" 11; limit 13 - 2 reserved = 11
    plain = await optimise("img", write_reference(w, tmp_path), tmp_path / "a", make_roles(w, replies, caption=CAPTION),
                           AgentConfig(framework="vanilla"), 13)
    assert plain.prompt.rendered == f"{CAPTION}, blue eyes, bow tie"
    # "ohwx, " costs 2 tokens: the caption of the second prompt would be 13 > 11, so bow tie no longer fits
    roles = make_roles(w, replies, caption=CAPTION)
    r = await optimise("img", write_reference(w, tmp_path), tmp_path / "b", roles,
                       AgentConfig(framework="vanilla", caption_prefix="ohwx"), 13)
    assert r.prompt.rendered == f"{CAPTION}, blue eyes" and r.iterations[1].too_long == ["bow tie"]
    assert r.caption == f"ohwx, {CAPTION}, blue eyes" and count_tokens(r.caption) <= 11
    assert all(t.startswith("ohwx, ") and not t.startswith("ohwx, ohwx") for batch in roles.t2i.token_batches for t in batch)
    assert "ohwx" not in " ".join(roles.t2i.prompts)  # the T2I model never sees the trigger word
