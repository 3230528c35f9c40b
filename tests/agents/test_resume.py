"""Durable state: interrupt at every node, resume from the SQLite file, and never redo finished work."""
import asyncio

import pytest

from agents.api import optimise
from agents.checkpointing import open_checkpointer
from agents.config import AgentConfig, CheckpointConfig
from agents.graph import NODE_NAMES, build_graph, compile_graph, thread_config
from agents.image_id import content_id
from agents.state import initial_state
from tests.agents.doubles import World, call_counts, fragment_sum, make_roles, write_reference

CFG = AgentConfig(framework="enhanced", seeds=[0, 1], max_steps=3)
CKPT = CheckpointConfig()


def world():
    return World(fragment_sum({"blue eyes": .05, "bow tie": .04, "oil painting": .03, "soft light": .02}, unknown=-.01))


def script():
    return {"content": ["[blue eyes, junk one]", "[bow tie]", "[junk two]"],
            "style": ["[oil painting]", "[soft light]", "[junk three]"]}


def summary(result):
    return (result.status, result.stop_reason, result.best_iteration, result.prompt,
            [(it.rendered, it.clip_t, it.clip_i, [c.text for c in it.candidates]) for it in result.iterations])


async def run(out, ref, roles, cfg=CFG):
    """One 'process': open the checkpoint file, build the graph, run the image, close."""
    async with open_checkpointer(CKPT, out) as saver:
        graph = compile_graph(build_graph(roles, cfg, 77), saver)
        return await optimise(content_id(ref), ref, out / "work", roles, cfg, 77, graph=graph)


@pytest.fixture
def straight(tmp_path_factory):
    """The uninterrupted run: its result and its call counts."""
    out = tmp_path_factory.mktemp("straight")
    w = world()
    roles = make_roles(w, script())
    result = asyncio.run(run(out, write_reference(w, out), roles))
    assert result.status == "done" and len(result.iterations) == 3
    return summary(result), call_counts(roles)


VISITS = [(node, visit) for node in NODE_NAMES for visit in ((1,) if node == "init" else (1, 2))]


@pytest.mark.parametrize("node, visit", VISITS)
async def test_interrupt_before_each_node_then_resume_redoes_nothing(tmp_path, straight, node, visit):
    w = world()
    ref = write_reference(w, tmp_path)
    roles = make_roles(w, script())
    image_id = content_id(ref)
    async with open_checkpointer(CKPT, tmp_path) as saver:
        graph = compile_graph(build_graph(roles, CFG, 77), saver)
        conf = thread_config(image_id, CFG)
        run_input = initial_state(image_id, str(ref), str(tmp_path / "work"))
        for _ in range(visit):
            await graph.ainvoke(run_input, conf, interrupt_before=[node], durability="sync")
            run_input = None
        snap = await graph.aget_state(conf)
        assert snap.next == (node,)
    # a new "process" resumes the thread from the file
    result = await run(tmp_path, ref, roles)
    assert summary(result) == straight[0]
    assert call_counts(roles) == straight[1]  # no finished node ran twice


# (role, method, failing call number) -> the node it hits and the calls that node may legitimately repeat
CRASHES = [
    ("captioner", "caption", 1, "init", set()),
    ("t2i", "generate", 2, "generate", set()),
    ("clip", "image_image_scores", 2, "generate", {("t2i", "generate"), ("clip", "text_image_scores")}),
    ("vlm", "chat", 3, "describe", {("vlm", "chat")}),
    ("vlm", "chat", 6, "describe", {("vlm", "chat")}),
    ("llm", "chat", 2, "diff", {("llm", "chat")}),
    ("llm", "chat", 4, "propose", {("llm", "chat")}),
    ("clip", "text_image_scores", 3, "select", {("clip", "text_image_scores"), ("t2i", "count_tokens")}),
    ("t2i", "count_tokens", 2, "select", {("clip", "text_image_scores"), ("t2i", "count_tokens")}),
]


@pytest.mark.parametrize("role, method, n, node, may_repeat", CRASHES)
async def test_crash_in_a_node_then_rerun_resumes_there(tmp_path, straight, role, method, n, node, may_repeat):
    w = world()
    ref = write_reference(w, tmp_path)
    roles = make_roles(w, script(), fail_at={role: {method: n}})
    first = await run(tmp_path, ref, roles)
    assert first.status == "error" and f"node {node}" in first.error and "InjectedFailure" in first.error
    second = await run(tmp_path, ref, roles)
    assert summary(second) == straight[0]
    counts, expected = call_counts(roles), straight[1]
    for r, methods in expected.items():
        for m, c in methods.items():
            extra = counts[r].get(m, 0) - c
            assert extra >= 0
            if (r, m) not in may_repeat:
                assert extra == 0, f"{r}.{m} ran {extra} extra time(s) after a crash in {node}"
            else:
                assert extra <= 4


async def test_a_finished_image_returns_its_stored_result_without_model_calls(tmp_path, straight):
    w = world()
    ref = write_reference(w, tmp_path)
    roles = make_roles(w, script())
    first = await run(tmp_path, ref, roles)
    before = call_counts(roles)
    again = await run(tmp_path, ref, make_roles(w, {}))  # a script-less LLM would fail if asked
    assert summary(again) == summary(first) == straight[0]
    assert call_counts(roles) == before


async def test_many_images_share_one_graph_and_one_file(tmp_path):
    worlds = [world() for _ in range(4)]
    refs = []
    for i, w in enumerate(worlds):
        d = tmp_path / f"in{i}"
        d.mkdir()
        w.reference[0, 0] = i  # four different images, four ids
        refs.append(write_reference(w, d))
    assert len({content_id(r) for r in refs}) == 4
    async with open_checkpointer(CKPT, tmp_path) as saver:
        results = []
        for w, ref in zip(worlds, refs):
            roles = make_roles(w, script())
            graph = compile_graph(build_graph(roles, CFG, 77), saver)
            results.append(optimise(content_id(ref), ref, tmp_path / content_id(ref), roles, CFG, 77, graph=graph))
        results = await asyncio.gather(*results)
    assert all(r.status == "done" for r in results)
    assert len({r.image_id for r in results}) == 4


async def test_on_node_reports_each_completed_node_live(tmp_path):
    """optimise(on_node=...) is told of every node as it completes: one 'generate' per
    iteration (what the batch job's live iterations/s counts)."""
    w = world()
    ref = write_reference(w, tmp_path)
    roles = make_roles(w, script())
    seen = []
    async with open_checkpointer(CKPT, tmp_path) as saver:
        graph = compile_graph(build_graph(roles, CFG, 77), saver)
        result = await optimise(content_id(ref), ref, tmp_path / "work", roles, CFG, 77, graph=graph, on_node=seen.append)
    assert result.status == "done"
    assert seen[0] == "init" and seen.count("generate") == len(result.iterations) == 3
    assert set(seen) <= set(NODE_NAMES)
