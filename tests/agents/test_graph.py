"""The ARPO graph with scripted roles: both frameworks' routes, stop rules, what is recorded."""
import json

import numpy as np
import pytest
from langgraph.checkpoint.memory import InMemorySaver

from agents import prompts
from agents.api import optimise
from agents.config import AgentConfig
from agents.graph import build_graph, compile_graph, thread_config
from agents.images import load_rgb
from agents.state import initial_state
from tests.agents.doubles import World, call_counts, fragment_sum, make_roles, write_reference

GAINS = {"blue eyes": .05, "bow tie": .04, "oil painting": .03, "soft light": .02}
CAPTION = "a black and white cat"


def world(image_gains=None):
    return World(fragment_sum(GAINS, unknown=-.01), fragment_sum(image_gains, unknown=-.01) if image_gains else None)


async def run_nodes(roles, cfg, ref, work, token_limit=77, user_prompt=None):
    """Run a fresh thread and return (node names in order, final state values)."""
    graph = compile_graph(build_graph(roles, cfg, token_limit), InMemorySaver())
    conf = thread_config("img", cfg)
    order = []
    async for update in graph.astream(initial_state("img", str(ref), str(work), user_prompt), conf, stream_mode="updates"):
        order.extend(update)
    return order, (await graph.aget_state(conf)).values


async def test_vanilla_route_compares_images_with_the_vlm(tmp_path):
    w = world()
    roles = make_roles(w, {None: ["[blue eyes, junk one]", '["bow tie", "oil painting"]', "[junk two]"]}, caption=CAPTION)
    cfg = AgentConfig(framework="vanilla", seeds=[0, 1])
    order, state = await run_nodes(roles, cfg, write_reference(w, tmp_path), tmp_path / "img")
    loop = ["generate", "diff", "propose", "select"]
    assert order == ["init", *loop * 3]
    assert state["stop_reason"] == "no_improvement"
    counts = call_counts(roles)
    assert counts["vlm"] == {"chat": 3} and counts["llm"] == {"chat": 3} and counts["captioner"] == {"caption": 1}
    # the VLM saw the reference first and this iteration's image second (checked in the double);
    # the LLM got the difference and the current prompt
    second = roles.llm.conversations[1][0]["content"]
    assert "Image 2 was made from: a black and white cat, blue eyes" in second
    assert "Image 2 was generated from this prompt: a black and white cat, blue eyes" in second
    assert [rec["rendered"] for rec in state["history"]] == [
        CAPTION, f"{CAPTION}, blue eyes", f"{CAPTION}, blue eyes, bow tie, oil painting"]
    # vanilla fragments are sorted into parts by the style vocabulary
    assert state["content"] == [CAPTION, "blue eyes", "bow tie"] and state["style"] == ["oil painting"]


async def test_enhanced_route_describes_the_reference_once(tmp_path):
    w = world()
    roles = make_roles(w, {"content": ["[blue eyes, junk one]", "[bow tie]", "[junk two]"],
                           "style": ["[oil painting]", "[soft light]", "[junk three]"]}, caption=CAPTION)
    cfg = AgentConfig(framework="enhanced")
    order, state = await run_nodes(roles, cfg, write_reference(w, tmp_path), tmp_path / "img")
    loop = ["generate", "describe", "diff", "propose", "select"]
    assert order == ["init", *loop * 3]
    described = roles.vlm.described
    assert described.count(("content", "<<reference>>")) == 1 and described.count(("style", "<<reference>>")) == 1
    generated = [d for d in described if d[1] != "<<reference>>"]
    assert len(generated) == 2 * 3  # content and style of each iteration's image
    assert call_counts(roles)["vlm"] == {"chat": 2 + 6}
    # the LLM compared descriptions per aspect (B.8) and proposed per aspect (B.3)
    diffs = [c for c in roles.llm.conversations if c[0]["content"].startswith("I have descriptions")]
    assert len(diffs) == 2 * 3
    assert any("The description of Image 1: The content of the image made from: <<reference>>" in c[0]["content"] for c in diffs)
    assert roles.llm.proposals_asked == {"content": 3, "style": 3}
    # content and style candidates keep their parts (Table 4.1)
    assert state["content"] == [CAPTION, "blue eyes", "bow tie"]
    assert state["style"] == ["oil painting", "soft light"]
    assert state["stop_reason"] == "no_improvement"


async def test_max_steps_stops_after_evaluating_the_last_prompt(tmp_path):
    w = world()
    roles = make_roles(w, {None: ["[blue eyes]", "[bow tie]", "[oil painting]"]})
    cfg = AgentConfig(framework="vanilla", max_steps=2)
    r = await optimise("img", write_reference(w, tmp_path), tmp_path / "img", roles, cfg, 77)
    assert r.status == "done" and r.stop_reason == "max_steps"
    assert [it.iteration for it in r.iterations] == [0, 1, 2]
    assert roles.t2i.calls["generate"] == 3 and roles.llm.proposals_asked[None] == 2


async def test_patience_stops_when_the_image_score_stalls(tmp_path):
    # the text score likes "junk" but the image gets worse with it: CLIP-I stalls at iteration 0
    w = World(fragment_sum({"junk": .05, "more junk": .05}), fragment_sum({"junk": -.02, "more junk": -.02}))
    roles = make_roles(w, {None: ["[junk]", "[more junk]"]})
    cfg = AgentConfig(framework="vanilla", patience=1)
    r = await optimise("img", write_reference(w, tmp_path), tmp_path / "img", roles, cfg, 77)
    assert r.stop_reason == "patience"
    assert len(r.iterations) == 2 and r.best_iteration == 0


async def test_result_is_the_best_image_score_not_the_last_prompt(tmp_path):
    # the text score keeps rising; the image score peaks at iteration 1
    w = World(fragment_sum({"blue eyes": .05, "bow tie": .04}), fragment_sum({"blue eyes": .05, "bow tie": -.08}))
    roles = make_roles(w, {None: ["[blue eyes]", "[bow tie]"]}, caption=CAPTION)
    cfg = AgentConfig(framework="vanilla", max_steps=2, seeds=[0, 3])
    r = await optimise("img", write_reference(w, tmp_path), tmp_path / "img", roles, cfg, 77)
    assert r.stop_reason == "max_steps" and r.best_iteration == 1
    assert r.prompt.rendered == f"{CAPTION}, blue eyes" and r.prompt.content == [CAPTION, "blue eyes"]
    clip_i = [it.clip_i for it in r.iterations]
    assert r.best_clip_i == max(clip_i) and clip_i[2] < clip_i[1]
    # CLIP-I is the mean over seeds; CLIP-T is the prompt's text score
    it1 = r.iterations[1]
    assert it1.clip_i_per_seed == pytest.approx([.55, .553]) and it1.clip_i == pytest.approx(.5515)
    assert it1.clip_t == pytest.approx(.25) and r.best_clip_t == pytest.approx(.25)
    assert [f.text for f in it1.added] == ["blue eyes"] and [f.text for f in it1.candidates] == ["bow tie"]


async def test_garbage_answers_are_reasked_then_give_no_candidates(tmp_path):
    w = world()
    garbage = ["I am not sure.", "!!!", "The image is nice. Really."]
    roles = make_roles(w, {None: list(garbage)})
    cfg = AgentConfig(framework="vanilla", max_reasks=2)
    r = await optimise("img", write_reference(w, tmp_path), tmp_path / "img", roles, cfg, 77)
    assert r.status == "done" and r.stop_reason == "no_candidates"
    assert roles.llm.proposals_asked[None] == 3  # the question and two re-asks
    last = roles.llm.conversations[-1]
    assert [m["role"] for m in last] == ["user", "assistant", "user", "assistant", "user"]
    assert last[1]["content"] == garbage[0] and last[-1]["content"] == prompts.REASK
    assert r.iterations[0].candidates == []


async def test_a_reask_can_recover(tmp_path):
    w = world()
    roles = make_roles(w, {None: ["no list here", "- blue eyes\n- bow tie", "[]", "[]", "[]"]})
    cfg = AgentConfig(framework="vanilla", max_reasks=2)
    r = await optimise("img", write_reference(w, tmp_path), tmp_path / "img", roles, cfg, 77)
    assert [f.text for f in r.iterations[1].added] == ["blue eyes", "bow tie"]


async def test_fragments_already_in_the_prompt_are_not_candidates(tmp_path):
    w = world()
    roles = make_roles(w, {None: [f"[{CAPTION.upper()}, blue eyes, Blue Eyes]", "[]", "[]", "[]"]}, caption=CAPTION)
    r = await optimise("img", write_reference(w, tmp_path), tmp_path / "img", roles, AgentConfig(framework="vanilla"), 77)
    assert [f.text for f in r.iterations[0].candidates] == ["blue eyes"]


async def test_token_limit_keeps_long_fragments_out(tmp_path):
    w = World(fragment_sum({"a very long fragment with many many words": .5, "blue eyes": .01}))
    roles = make_roles(w, {None: ["[a very long fragment with many many words, blue eyes]", "[a very long fragment with many many words]"]},
                       caption=CAPTION)
    # "a black and white cat, blue eyes" is 8 tokens in the double; limit 10 - 2 reserved = 8
    r = await optimise("img", write_reference(w, tmp_path), tmp_path / "img", roles, AgentConfig(framework="vanilla"), 10)
    assert r.iterations[1].rendered == f"{CAPTION}, blue eyes"
    assert r.iterations[0].too_long == ["a very long fragment with many many words"]
    assert r.stop_reason == "token_limit"


async def test_state_holds_paths_not_pixels_and_images_are_saved(tmp_path):
    w = world()
    roles = make_roles(w, {None: ["[blue eyes]", "[junk]"]}, caption=CAPTION)
    cfg = AgentConfig(framework="vanilla", seeds=[5, 7])
    _, state = await run_nodes(roles, cfg, write_reference(w, tmp_path), tmp_path / "img")
    json.dumps(state)  # plain data only: no arrays, no embeddings
    assert len(json.dumps(state)) < 10_000
    for rec in state["history"]:
        assert len(rec["image_paths"]) == 2
        for path, seed in zip(rec["image_paths"], cfg.seeds):
            assert path.startswith(str(tmp_path / "img"))
            assert np.array_equal(load_rgb(path, 10**6), w.paint(rec["rendered"], seed))
    assert roles.clip.keys == {"img"}  # the reference embedding is cached under the image id


async def test_a_user_prompt_replaces_the_caption(tmp_path):
    w = world()
    roles = make_roles(w, {None: ["[junk]"]})
    cfg = AgentConfig(framework="vanilla", init_prompt="Content: a cat Style: watercolor")
    r = await optimise("img", write_reference(w, tmp_path), tmp_path / "img", roles, cfg, 77)
    assert roles.captioner.calls["caption"] == 0
    assert r.initial_prompt == "a cat, watercolor" and r.iterations[0].style == ["watercolor"]
    # an explicit init_prompt wins over the config's
    roles2 = make_roles(w, {None: ["[junk]"]})
    r2 = await optimise("img", write_reference(w, tmp_path), tmp_path / "img2", roles2, cfg, 77, init_prompt="a dog")
    assert r2.initial_prompt == "a dog"


async def test_node_failures_become_error_results_naming_the_node(tmp_path):
    w = world()
    roles = make_roles(w, {None: ["[blue eyes]"]}, caption="  ")
    r = await optimise("img", write_reference(w, tmp_path), tmp_path / "img", roles, AgentConfig(framework="vanilla"), 77)
    assert r.status == "error" and "node init" in r.error and "no caption" in r.error
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    r = await optimise("img2", bad, tmp_path / "img2", make_roles(w, {}), AgentConfig(), 77)
    assert r.status == "error" and str(bad) in r.error and r.iterations == []


async def test_wrong_number_of_images_is_an_error(tmp_path):
    w = world()
    roles = make_roles(w, {None: []})

    async def one_image(prompt, seeds):
        return [w.generate(prompt, seeds[0])]

    roles.t2i.generate = one_image
    r = await optimise("img", write_reference(w, tmp_path), tmp_path / "img", roles, AgentConfig(seeds=[0, 1]), 77)
    assert r.status == "error" and "node generate" in r.error and "1 images for 2 seeds" in r.error


def test_token_limit_must_leave_room():
    with pytest.raises(ValueError, match="reserved_tokens"):
        build_graph(make_roles(world(), {}), AgentConfig(reserved_tokens=2), 2)


async def test_the_record_keeps_descriptions_differences_and_every_candidates_fate(tmp_path):
    """What the report's detail page shows: the VLM's descriptions, the differences, and per candidate its
    CLIP-T score in the round that chose it, the best score it had to reach, and kept / dropped."""
    w = world()
    roles = make_roles(w, {"content": ["[blue eyes, junk one, blue eyes]", "[]"], "style": ["[oil painting]", "[]"]},
                       caption=CAPTION)
    r = await optimise("img", write_reference(w, tmp_path), tmp_path / "img", roles, AgentConfig(framework="enhanced"), 77)
    assert set(r.reference_description) == {"content", "style"} and "<<reference>>" in r.reference_description["content"]
    for it in r.iterations:
        assert set(it.description) == {"content", "style"} and set(it.differences) == {"content", "style"}
        assert it.description["content"] != r.reference_description["content"]
    first = r.iterations[0]
    fates = [(c.text, c.outcome) for c in first.selection]
    # the duplicate is the parser's to drop; what reaches selection is each text once
    assert sorted(fates) == sorted([("blue eyes", "kept"), ("oil painting", "kept"), ("junk one", "no_gain")])
    by_text = {c.text: c for c in first.selection}
    assert by_text["blue eyes"].clip_t == pytest.approx(first.clip_t + .05) and by_text["blue eyes"].round == 0
    assert by_text["blue eyes"].needed == pytest.approx(first.clip_t)
    # junk, chosen last, scored below the best so far (blue eyes + oil painting)
    assert by_text["junk one"].needed == pytest.approx(first.clip_t + .08)
    assert by_text["junk one"].clip_t == pytest.approx(first.clip_t + .07) and by_text["junk one"].round == 2
    assert [f.text for f in r.iterations[1].added] == [c.text for c in first.selection if c.outcome == "kept"]


async def test_vanilla_records_the_vlm_comparison_and_too_long_candidates(tmp_path):
    w = World(fragment_sum({"a very long fragment with many many words": .5, "blue eyes": .01}))
    roles = make_roles(w, {None: ["[a very long fragment with many many words, blue eyes]", "[]"]}, caption=CAPTION)
    r = await optimise("img", write_reference(w, tmp_path), tmp_path / "img", roles, AgentConfig(framework="vanilla"), 10)
    first = r.iterations[0]
    assert first.description is None and list(first.differences) == ["overall"] and first.differences["overall"]
    assert [(c.text, c.outcome, c.clip_t) for c in first.selection] == [
        ("a very long fragment with many many words", "too_long", None), ("blue eyes", "kept", pytest.approx(first.clip_t + .01))]
