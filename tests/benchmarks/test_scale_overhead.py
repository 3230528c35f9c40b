"""The scale benchmark's yardsticks without Ray (issue #24): the steady-rate estimators against admission
waves, the driver's own time per node (node wall − waiting on roles), the role-call timing per image, and
the injected per-node cost in the checkpointer."""
import asyncio
import time
import typing

import pytest

from benchmarks.scale import analysis
from benchmarks.scale.overhead import ROLE_CALLS, Injected, node_split, timed_roles, union_inside


def _waves(concurrency: int, waves: int, latency: float) -> list[dict]:
    """A closed system in lock-step: C images admitted together, all done after ``latency``, the next C then."""
    return [{"start": w * latency, "end": (w + 1) * latency} for w in range(waves) for _ in range(concurrency)]


def test_the_regression_sees_the_true_rate_through_admission_waves():
    c, latency = 4, 10.0
    images = _waves(c, waves=8, latency=latency)  # N = 8C
    rate, window = analysis.regression_rate([i["end"] for i in images], c)
    assert rate == pytest.approx(c / latency)
    assert window == "regression over completions 5..28 of 32"
    assert analysis.little_rate(images, c) == pytest.approx(c / latency)


def test_the_old_middle_half_window_is_biased_by_the_waves():
    # why the estimator changed: with N = 2C the middle half straddles the two waves
    c, latency = 4, 10.0
    images = _waves(c, waves=2, latency=latency)
    old, _ = analysis.steady_rate([i["end"] for i in images])
    assert old == pytest.approx((c - 1) / latency)  # 25 % low here; high or low depending on where the waves fall
    assert analysis.regression_rate([i["end"] for i in images], c)[1] == "whole run"  # N < 2C + 2: no steady window


def test_the_regression_on_a_steady_stream_with_jitter():
    import random

    rng = random.Random(7)
    finish = sorted(i * 0.5 + rng.uniform(-0.2, 0.2) for i in range(1, 161))  # 2 images/s
    rate, _ = analysis.regression_rate(finish, 20)
    assert rate == pytest.approx(2.0, rel=0.01)


def test_union_inside_merges_overlaps_and_clips():
    calls = [(0.0, 2.0), (1.0, 3.0), (5.0, 6.0), (9.0, 12.0)]
    assert union_inside(calls, 0.0, 10.0) == pytest.approx(3.0 + 1.0 + 1.0)
    assert union_inside(calls, 2.5, 5.5) == pytest.approx(0.5 + 0.5)
    assert union_inside([], 0.0, 1.0) == 0.0


def test_node_split_charges_each_node_its_own_role_waits():
    nodes = [("init", 1.0), ("generate", 4.0), ("describe", 4.5)]
    calls = [(0.1, 0.9), (1.2, 3.2), (2.0, 3.5)]  # generate's two calls overlap: 2.3 s of waiting, not 3.5
    split = node_split(0.0, nodes, calls)
    assert [(n, round(w, 6), round(r, 6)) for n, w, r in split] == [("init", 1.0, 0.8), ("generate", 3.0, 2.3),
                                                                        ("describe", 0.5, 0.0)]
    fig = analysis.orchestration({n: [(w, r)] for n, w, r in split}, iterations=1, images=1)
    assert fig["ms_per_iteration"] == pytest.approx(1000 * (0.2 + 0.7 + 0.5))
    assert fig["per_node"]["generate"]["mean_ms"] == pytest.approx(700.0)


class _Role:
    def __init__(self, delay: float):
        self.delay = delay
        self.shared = {"name": "not a call"}

    async def generate(self, prompt: str, seeds: typing.Sequence[int]) -> list:
        await asyncio.sleep(self.delay)
        return [prompt] * len(seeds)


def test_role_calls_are_recorded_for_the_image_whose_task_made_them():
    from actors.roles import Roles

    roles = timed_roles(Roles(t2i=_Role(0.02), llm=_Role(0.0), vlm=_Role(0.0), captioner=_Role(0.0), clip=_Role(0.0)))
    assert roles.t2i.shared == {"name": "not a call"}  # attributes pass through

    async def image(n_calls: int) -> list:
        calls: list = []
        ROLE_CALLS.set(calls)

        async def node():  # the graph runs nodes in tasks of their own: they inherit the image's context
            return await asyncio.gather(*(roles.t2i.generate("p", [1, 2]) for _ in range(n_calls)))

        assert await asyncio.create_task(node()) == [["p", "p"]] * n_calls
        return calls

    async def both():
        return await asyncio.gather(image(1), image(3))

    one, three = asyncio.run(both())
    assert (len(one), len(three)) == (1, 3)
    assert all(b - a >= 0.015 for a, b in one + three)
    # outside an image nothing is recorded and nothing breaks
    assert asyncio.run(roles.t2i.generate("q", [1])) == ["q"]


def test_the_injected_cost_runs_once_per_checkpoint_and_is_undone(tmp_path):
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
    from langgraph.graph import END, START, StateGraph
    from typing_extensions import TypedDict

    class State(TypedDict):
        n: int

    async def step(state: State) -> dict:
        return {"n": state["n"] + 1}

    g = StateGraph(State)
    g.add_node("a", step)
    g.add_node("b", step)
    g.add_edge(START, "a")
    g.add_edge("a", "b")
    g.add_edge("b", END)
    original = AsyncSqliteSaver.aput

    async def run(injected: Injected) -> tuple[float, float, int]:
        async with AsyncSqliteSaver.from_conn_string(str(tmp_path / f"c{id(injected)}.sqlite")) as saver:
            graph = g.compile(checkpointer=saver)
            t0, c0 = time.perf_counter(), time.thread_time()
            with injected:
                out = await graph.ainvoke({"n": 0}, {"configurable": {"thread_id": "t"}}, durability="sync")
            return time.perf_counter() - t0, time.thread_time() - c0, out["n"]

    plain = Injected()
    wall0, cpu0, n0 = asyncio.run(run(plain))
    waiting = Injected(wait_s=0.05)
    wall1, _, n1 = asyncio.run(run(waiting))
    burning = Injected(cpu_s=0.03)
    _, cpu2, n2 = asyncio.run(run(burning))
    assert (n0, n1, n2) == (2, 2, 2)
    assert plain.calls == 0 and waiting.calls == burning.calls >= 3  # the input, then one per node
    assert wall1 - wall0 >= 0.05 * waiting.calls * 0.9
    assert cpu2 - cpu0 >= 0.03 * burning.calls * 0.9
    assert AsyncSqliteSaver.aput is original


def test_object_store_summary_keeps_peaks_and_counts_missed_samples():
    from benchmarks.scale.object_store import summary

    mb = 2**20
    samples = [{"used_bytes": 3 * mb, "objects": 3, "capacity_bytes": 100 * mb, "fallback_bytes": 0, "spilled_bytes": 0,
                "spilled_objects": 0},
               None,
               {"used_bytes": 1 * mb, "objects": 9, "capacity_bytes": 100 * mb, "fallback_bytes": 0, "spilled_bytes": 2 * mb,
                "spilled_objects": 2}]
    assert summary(samples) == {"samples": 2, "missed": 1, "peak_used_mb": 3.0, "peak_objects": 9, "capacity_mb": 100.0,
                                "spilled_mb": 2.0, "spilled_objects": 2, "fallback_mb": 0.0}
    assert summary([None]) == {"samples": 0}


def test_traced_memory_separates_in_flight_from_finished_images():
    mb = 2**20
    # 4 in flight hold 1 MB between them; every finished image leaves 10 KB behind
    traced = [(0.0, 5 * mb, 0, 0)] + [(float(i), 6 * mb + 10 * 1024 * i, 4, i) for i in range(1, 21)]
    fig = analysis.traced_memory(traced, 4)
    assert fig["per_finished_kb"] == pytest.approx(10.0)
    assert fig["samples"] == 20 and fig["start_mb"] == pytest.approx(5.0)
    held = analysis.traced_memory([(0.0, 5 * mb, 0, 0)] + [(float(i), 6 * mb, 4, i) for i in range(1, 21)], 4)
    assert held["per_finished_kb"] == pytest.approx(0.0) and held["per_inflight_kb"] == pytest.approx(256.0)
    assert analysis.traced_memory(None, 4) is None
    # the harness held 6 KB per finished image more at the end (20 finished) than at the start: the job's is the rest
    split = analysis.traced_memory(traced, 4, harness=(1000, 1000 + 20 * 6 * 1024))
    assert split["harness_per_finished_kb"] == pytest.approx(6.0) and split["job_per_finished_kb"] == pytest.approx(4.0)
