"""``--gpu-sharing time`` (benchmarks/scale/gpu_clock.py, time_shared_ideal.py): processor sharing on a node's
GPU, worked by hand, and the ideal's linear programme on the placements the scale docs discuss."""
import asyncio
import time

import pytest

from benchmarks.scale.run import check_sole_chat_tenants
from benchmarks.scale.gpu_clock import GPUClock, ProcessorSharing
from benchmarks.scale.time_shared_ideal import time_shared_bound


def _finish_times(gpus, arrivals):
    """Drive ProcessorSharing by its own next_finish events: {job index: finish time}."""
    ps, ids, done, now = ProcessorSharing(gpus), {}, {}, 0.0
    pending = sorted(enumerate(arrivals), key=lambda a: a[1][0])
    while pending or ps.remaining:
        nxt = ps.next_finish()
        if pending and (nxt is None or pending[0][1][0] <= nxt):
            i, (at, work) = pending.pop(0)
            job, finished = ps.add(at, work)
            for j in finished:
                done[ids[j]] = at
            ids[job] = i
            now = at
        else:
            now = nxt
            for job in ps.advance(now):
                done[ids[job]] = now
    return done, ps


def test_alone_a_call_runs_at_full_speed_and_two_on_one_gpu_at_half_speed_each():
    done, ps = _finish_times(1, [(0.0, 1.0)])
    assert done[0] == pytest.approx(1.0)
    done, ps = _finish_times(1, [(0.0, 1.0), (0.0, 1.0)])
    assert done[0] == pytest.approx(2.0) and done[1] == pytest.approx(2.0)
    assert ps.busy_s == pytest.approx(2.0) and ps.gpu_s == pytest.approx(2.0)
    # by hand: the second arrives at 0.5 with the first half done; both at half speed, the first ends at 1.5,
    # the second has 0.5 left and runs alone to 2.0
    done, _ = _finish_times(1, [(0.0, 1.0), (0.5, 1.0)])
    assert done[0] == pytest.approx(1.5) and done[1] == pytest.approx(2.0)


def test_a_job_that_finishes_as_another_arrives_is_reported_by_the_arrival():
    ps = ProcessorSharing(1)
    first, _ = ps.add(0.0, 1.0)
    second, finished = ps.add(1.0, 1.0)  # no event was processed in between
    assert finished == [first] and list(ps.remaining) == [second]


def test_the_actor_answers_a_call_whose_job_ended_as_the_next_one_arrived():
    async def scenario():
        clock = GPUClock(1, "n")
        first = asyncio.ensure_future(clock.run(0.05))
        await asyncio.sleep(0.08)  # past its end: the next call's arrival may be what settles it
        if clock._timer is not None:
            clock._timer.cancel()  # as if the timer had not fired yet
        second = await clock.run(0.01)
        return await asyncio.wait_for(first, 1.0), second

    first, second = asyncio.run(scenario())
    assert first == pytest.approx(0.05, abs=0.04) and second == pytest.approx(0.01, abs=0.02)


def test_a_node_with_two_gpus_runs_two_calls_at_full_speed_and_three_at_two_thirds():
    done, _ = _finish_times(2, [(0.0, 1.0), (0.0, 1.0)])
    assert max(done.values()) == pytest.approx(1.0)
    done, _ = _finish_times(2, [(0.0, 1.0), (0.0, 1.0), (0.0, 1.0)])
    assert max(done.values()) == pytest.approx(1.5)


def test_the_actor_class_serves_overlapping_calls_by_processor_sharing():
    async def scenario():
        clock = GPUClock(1, "n")
        alone = await clock.run(0.05)
        t0 = time.perf_counter()
        both = await asyncio.gather(clock.run(0.1), clock.run(0.1))
        return alone, both, time.perf_counter() - t0, await clock.stats()

    alone, both, wall, stats = asyncio.run(scenario())
    assert alone == pytest.approx(0.05, abs=0.02)
    assert both[0] == pytest.approx(0.2, abs=0.03) and both[1] == pytest.approx(0.2, abs=0.03)
    assert wall == pytest.approx(0.2, abs=0.05)
    assert stats["calls"] == 3 and stats["max_running"] == 2 and stats["gpu_s"] == pytest.approx(0.25, abs=0.03)


def test_spreading_two_t2i_replicas_lifts_the_bound_by_what_the_neighbours_leave():
    work = {"t2i": 1.0, "clip": 0.2}
    gpus = {"a": 1.0, "b": 1.0}
    packed = time_shared_bound(work, {"t2i": {"a": 2}, "clip": {"b": 1}}, gpus)
    assert packed.images_per_s == pytest.approx(1.0) and packed.bound == "t2i"
    # spread: node a serves y_a = 1, node b y_b + 0.2 X <= 1 with X = y_a + y_b, so X = 2 / 1.2
    spread = time_shared_bound(work, {"t2i": {"a": 1, "b": 1}, "clip": {"b": 1}}, gpus)
    assert spread.images_per_s == pytest.approx(2 / 1.2)
    assert spread.split["t2i"]["a"] == pytest.approx(1.2 / 2)
    assert set(spread.bound.split("+")) == {"clip", "t2i"}


def test_another_role_on_its_own_node_becomes_the_bound_when_the_t2i_is_spread():
    work = {"t2i": 1.0, "vlm": 0.8}
    out = time_shared_bound(work, {"t2i": {"a": 1, "b": 1}, "vlm": {"c": 1}}, {"a": 1, "b": 1, "c": 1})
    assert out.images_per_s == pytest.approx(1.25) and out.bound == "vlm"
    with pytest.raises(ValueError, match="t2i"):
        time_shared_bound(work, {"t2i": {"cpu_node": 1}, "vlm": {"c": 1}}, {"cpu_node": 0, "c": 1})


def test_a_chat_engine_must_be_alone_on_its_node_in_time_mode():
    check_sole_chat_tenants([{"role": "llm", "node_id": "x"}, {"role": "t2i", "node_id": "y"}])
    with pytest.raises(ValueError, match="llm shares node"):
        check_sole_chat_tenants([{"role": "llm", "node_id": "x"}, {"role": "clip", "node_id": "x"}])
