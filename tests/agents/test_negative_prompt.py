"""A recovered negative prompt (agents/negative_nodes.py, --negative) through the real graph with scripted
roles whose scores are known: which fragments are kept, what each try generated, the token budget, the
limit, the start-up refusal, and the batch job's outputs."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from agents.api import optimise
from agents.batch.errors import SetupError
from agents.batch.runner import run_batch
from agents.config import AgentConfig, ArpoConfig
from agents.prompt_limit import check_negative_support
from tests.agents.doubles import World, call_counts, fragment_sum, make_roles, write_reference
from tests.agents.test_report import read_browser

CAPTION = "a black and white cat"
GAINS = {"blue eyes": .05}


def _roles(world, negatives, positives=("[blue eyes]", "[junk]")):
    return make_roles(world, {None: list(positives), "negative": [negatives]}, caption=CAPTION)


async def _run(tmp_path, world, roles, token_limit=77, **negative):
    cfg = AgentConfig(framework="vanilla", seeds=[0, 1], negative={"enabled": True, **negative})
    return await optimise("img", write_reference(world, tmp_path), tmp_path / "img", roles, cfg, token_limit)


async def test_the_one_rewarded_negative_fragment_is_kept_and_the_others_dropped(tmp_path):
    w = World(fragment_sum(GAINS, unknown=-.01), negative_gain=fragment_sum({"blurry": .04}, unknown=-.01))
    roles = _roles(w, '["watermark", "blurry", "extra fingers"]')
    r = await _run(tmp_path, w, roles)
    assert r.status == "done" and r.prompt.rendered == f"{CAPTION}, blue eyes"  # the positive result is untouched
    assert r.negative.searched
    neg = r.negative
    assert neg.candidates == ["watermark", "blurry", "extra fingers"] and neg.fragments == ["blurry"]
    assert r.negative_prompt == "blurry"
    assert {o.text: o.outcome for o in neg.outcomes} == {"watermark": "no_gain", "blurry": "kept", "extra fingers": "no_gain"}
    assert neg.base_clip_i == r.best_clip_i and neg.clip_i == pytest.approx(r.best_clip_i + .04)
    assert {o.text: o.clip_i_alone for o in neg.outcomes} == pytest.approx(
        {"watermark": r.best_clip_i - .01, "blurry": r.best_clip_i + .04, "extra fingers": r.best_clip_i - .01})
    # each candidate was tried alone, with the best prompt and the run's seeds; one winner: no greedy try
    assert sorted(roles.t2i.negatives) == ["blurry", "extra fingers", "watermark"]
    assert len(neg.tries) == 3 and all(len(t.image_paths) == 2 for t in neg.tries)
    assert all(Path(p).is_file() for t in neg.tries for p in t.image_paths)
    # the VLM compared the reference with the best prompt's image; one VLM and one LLM call for the negatives
    vlm_last = roles.vlm.conversations[-1][-1]["content"][-1]["text"]
    assert vlm_last.startswith("The first image is Image 1") and "everything Image 2 shows" in vlm_last
    assert roles.llm.proposals_asked["negative"] == 1


async def test_greedy_additions_are_kept_only_while_clip_i_rises(tmp_path):
    def gain(negative: str) -> float:  # each helps alone; blurry and watermark together help less than blurry alone
        parts = {p.strip() for p in negative.split(",")}
        table = {frozenset({"blurry"}): .04, frozenset({"watermark"}): .03, frozenset({"text"}): .02,
                 frozenset({"blurry", "watermark"}): .035, frozenset({"blurry", "text"}): .05}
        return table.get(frozenset(parts), -.01)

    w = World(fragment_sum(GAINS, unknown=-.01), negative_gain=gain)
    roles = _roles(w, '["watermark", "text", "blurry"]')
    r = await _run(tmp_path, w, roles)
    neg = r.negative
    # alone: blurry .04 > watermark .03 > text .02; then blurry+watermark .035 < .04 (dropped), blurry+text .05 (kept)
    assert neg.fragments == ["blurry", "text"] and r.negative_prompt == "blurry, text"
    assert [t.fragments for t in neg.tries] == [["watermark"], ["text"], ["blurry"], ["blurry", "watermark"], ["blurry", "text"]]
    assert {o.text: o.outcome for o in neg.outcomes} == {"watermark": "no_gain", "text": "kept", "blurry": "kept"}
    assert neg.clip_i == pytest.approx(r.best_clip_i + .05)


async def test_no_helpful_fragment_gives_no_negative_prompt(tmp_path):
    w = World(fragment_sum(GAINS, unknown=-.01), negative_gain=lambda text: -.02)
    r = await _run(tmp_path, w, _roles(w, '["watermark", "blurry"]'))
    assert r.negative_prompt is None and r.negative.fragments == [] and r.negative.clip_i == r.best_clip_i
    assert {o.outcome for o in r.negative.outcomes} == {"no_gain"}


async def test_fragments_of_the_prompt_the_budget_and_the_limit(tmp_path):
    w = World(fragment_sum(GAINS, unknown=-.01), negative_gain=fragment_sum({"a": .01, "b": .02, "c": .03}, unknown=.005))
    long = "one two three four five six seven eight nine ten eleven twelve thirteen"
    # "blue eyes" is in the best prompt: never a negative candidate; at most 2 fragments kept
    roles = _roles(w, f'["Blue Eyes", "a", "b", "c", "{long}"]')
    r = await _run(tmp_path, w, roles, token_limit=14, max_fragments=2)
    neg = r.negative
    assert neg.candidates == ["a", "b", "c", long]
    outcomes = {o.text: o.outcome for o in neg.outcomes}
    assert outcomes == {"c": "kept", "b": "kept", "a": "limit", long: "too_long"}  # 13 tokens > 14 - 2 reserved
    assert long not in roles.t2i.negatives and r.negative_prompt == "c, b"


async def test_a_profile_negative_prompt_counts_in_the_budget(tmp_path):
    from agents.graph import build_graph, compile_graph, thread_config
    from langgraph.checkpoint.memory import InMemorySaver
    from agents.state import initial_state

    w = World(fragment_sum(GAINS, unknown=-.01), negative_gain=fragment_sum({"blurry": .04}, unknown=-.01))
    roles = _roles(w, '["blurry"]')
    cfg = AgentConfig(framework="vanilla", seeds=[0], negative={"enabled": True})
    # "low quality, worst quality, blurry" is 6 tokens in the double: over a budget of 7 - 2 = 5
    graph = compile_graph(build_graph(roles, cfg, 7, negative_prompt="low quality, worst quality"), InMemorySaver())
    conf = thread_config("img", cfg)
    async for _ in graph.astream(initial_state("img", str(write_reference(w, tmp_path)), str(tmp_path / "img"),
                                               "a cat"), conf):
        pass
    negative = (await graph.aget_state(conf)).values["negative"]
    assert negative["outcomes"] == [{"text": "blurry", "outcome": "too_long", "clip_i_alone": None}]
    assert roles.t2i.negatives == []


class _Refusing:
    def __init__(self, reason):
        self.reason = reason

    async def prompt_budget(self):
        return {"limit": 77, "negative_prompt_refused": self.reason}


async def test_a_target_where_a_negative_prompt_does_not_act_refuses_the_option(tmp_path):
    cfg = ArpoConfig.model_validate({"agent": {"negative": {"enabled": True}}})
    with pytest.raises(ValueError, match=r"agent.negative.enabled \(--negative\): .* FLUX.1 says no"):
        await check_negative_support(cfg, _Refusing("FLUX.1 says no"))
    await check_negative_support(cfg, _Refusing(None))
    await check_negative_support(ArpoConfig(), _Refusing("anything"))  # off: nothing asked

    w = World(fragment_sum(GAINS))
    roles = _roles(w, "[]")
    roles.t2i.prompt_budget = _Refusing("FLUX.1 says no").prompt_budget
    images = tmp_path / "imgs"
    images.mkdir()
    write_reference(w, images)
    with pytest.raises(SetupError, match="FLUX.1 says no"):
        await run_batch(cfg, images, tmp_path / "out", roles, progress_stream=io.StringIO())
    assert call_counts(roles)["t2i"] == {}  # refused before any image started


async def test_the_batch_job_records_and_shows_the_negative_prompt(tmp_path):
    w = World(fragment_sum(GAINS, unknown=-.01), negative_gain=fragment_sum({"blurry": .04}, unknown=-.01))
    roles = make_roles(w, {None: ["[blue eyes]", "[junk]"] * 2, "negative": ['["blurry", "watermark"]'] * 2},
                       caption=CAPTION)
    images = tmp_path / "imgs"
    images.mkdir()
    write_reference(w, images)
    cfg = ArpoConfig.model_validate({"agent": {"framework": "vanilla", "seeds": [0], "negative": {"enabled": True}},
                                     "job": {"summary_refresh_s": 0}})
    outcome = await run_batch(cfg, images, tmp_path / "out", roles, progress_stream=io.StringIO())
    assert outcome.exit_code == 0
    out = tmp_path / "out"
    record = json.loads((out / "results.jsonl").read_text().splitlines()[-1])
    assert record["negative_prompt"] == "blurry" and record["negative"]["fragments"] == ["blurry"]
    assert all((out / p).is_file() for t in record["negative"]["tries"] for p in t["image_paths"])
    _, _, pages = read_browser(out)  # every image the page shows exists
    text = "".join(next(iter(pages.values())).text)
    assert "Negative prompt" in text and "blurry" in text and "watermark" in text
