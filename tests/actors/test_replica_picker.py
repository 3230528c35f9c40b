"""Fewest-outstanding routing over a role's replicas (actors/replica_picker.py), and the role client using it."""
from __future__ import annotations

import asyncio

import pytest
from ray.exceptions import ActorUnavailableError

from actors.replica_picker import ReplicaPicker
from actors.role_client import RoleClient


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_equal_queues_take_turns():
    picker = ReplicaPicker(3, clock=Clock())
    order = []
    for _ in range(6):
        order.append(picker.pick())
        picker.finished(order[-1])
    assert order == [0, 1, 2, 0, 1, 2]


def test_new_calls_go_to_the_emptier_replica_until_the_queues_even_out():
    """A replica back from a restart (0 outstanding) beside one holding the calls that piled up meanwhile: it gets
    every new call until both hold as many — round-robin would have sent it only every other one."""
    picker = ReplicaPicker(2, clock=Clock())
    picker.outstanding[0] = 6  # the survivor's backlog
    assert [picker.pick() for _ in range(6)] == [1] * 6
    assert picker.outstanding == [6, 6]
    assert sorted(picker.pick() for _ in range(2)) == [0, 1]


def test_an_unreachable_replica_is_passed_over_for_a_growing_while():
    clock = Clock()
    picker = ReplicaPicker(2, clock=clock)
    assert picker.pick() == 0
    picker.finished(0, unreachable=True)  # failed at once: 0 outstanding, yet not the one to send to
    assert [picker.pick() for _ in range(3)] == [1, 1, 1]
    clock.now += 0.5  # off its first backoff: tried again
    assert picker.pick() == 0
    picker.finished(0, unreachable=True)
    clock.now += 0.5
    assert picker.pick() == 1  # the backoff doubled (1 s)
    clock.now += 0.5
    assert picker.pick() == 0
    picker.finished(0)  # it answered: back in the rotation at once
    assert picker._avoid_s[0] == 0.0 and picker._avoid_until[0] == 0.0
    with pytest.raises(ValueError):
        ReplicaPicker(0)


def test_when_every_replica_is_unreachable_the_first_off_its_backoff_is_tried():
    clock = Clock()
    picker = ReplicaPicker(2, clock=clock)
    picker.finished(picker.pick(), unreachable=True)  # replica 0 until 100.5
    clock.now += 0.2
    picker.finished(picker.pick(), unreachable=True)  # replica 1 until 100.7
    assert picker.pick() == 0


def test_calls_already_on_their_way_do_not_stretch_the_backoff():
    """Five calls queued at a replica that becomes unreachable fail together: one probe's news, one backoff step
    (0.5 s), not five doublings (8 s) that would leave a replica back after 0.6 s unasked for 8 s."""
    clock = Clock()
    picker = ReplicaPicker(1, clock=clock)
    sent = [picker.pick() for _ in range(5)]
    for replica in sent:
        picker.finished(replica, unreachable=True)
    assert picker.wait_s() == pytest.approx(0.5)
    clock.now += 0.5  # the backoff is over: the next failure is a new probe's answer, and doubles it
    picker.finished(picker.pick(), unreachable=True)
    assert picker.wait_s() == pytest.approx(1.0)


def test_nothing_to_wait_for_while_a_replica_is_reachable():
    clock = Clock()
    picker = ReplicaPicker(2, clock=clock)
    assert picker.wait_s() == 0.0
    picker.finished(picker.pick(), unreachable=True)
    assert picker.wait_s() == 0.0  # replica 1 is reachable
    picker.finished(picker.pick(), unreachable=True)
    clock.now += 0.2
    assert picker.wait_s() == pytest.approx(0.3)  # replica 0 comes off its backoff first


class Slow:
    """A replica whose calls wait until released: calls outstanding are real awaits."""

    def __init__(self):
        self.calls, self.gate = [], None

    @property
    def score(self):
        outer = self

        class Method:
            @staticmethod
            def remote(x):
                outer.calls.append(x)

                async def result():
                    await outer.gate.wait()
                    return x
                return result()
        return Method


def test_the_client_sends_each_call_to_the_replica_with_fewest_outstanding():
    async def scenario():
        a, b = Slow(), Slow()
        a.gate, b.gate = asyncio.Event(), asyncio.Event()
        client = RoleClient("t2i", [a, b])
        first = [asyncio.ensure_future(client.score(i)) for i in range(4)]  # 2 and 2, in turn
        await asyncio.sleep(0)
        b.gate.set()  # b's calls finish, a's stay queued
        await asyncio.gather(*first[1::2])
        later = [asyncio.ensure_future(client.score(i)) for i in range(10, 12)]
        await asyncio.sleep(0)
        a.gate.set()
        await asyncio.gather(*first, *later)
        return a.calls, b.calls

    a_calls, b_calls = asyncio.run(scenario())
    assert a_calls == [0, 2] and b_calls == [1, 3, 10, 11]  # round-robin would have sent 10 to a


def test_a_call_to_an_unreachable_replica_is_not_followed_by_more():
    lost_calls = []

    class Lost:
        class score:
            @staticmethod
            def remote(x):
                lost_calls.append(x)

                async def result():
                    raise ActorUnavailableError("connection refused", None)
                return result()

    class Alive:
        class score:
            @staticmethod
            def remote(x):
                async def result():
                    return x
                return result()

    client = RoleClient("vlm", [Lost, Alive])

    async def six_calls():
        return await asyncio.wait_for(asyncio.gather(*(client.score(i) for i in range(6))), 30)

    assert asyncio.run(six_calls()) == list(range(6))
    # the other five went straight to the reachable replica; only the first call (re-sent, probing the lost
    # replica again as each backoff ends) ever reached the lost one
    assert set(lost_calls) == {0}
