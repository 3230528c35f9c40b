"""RoleClient re-sends a call while Ray says its actor is unreachable (ActorUnavailableError: a node lost and not yet
declared dead, a restart under way), to the next replica, and gives up after UNAVAILABLE_RETRY_S; other errors are
raised at once. Handles here are doubles with Ray's ``.remote()`` shape: no cluster."""
from __future__ import annotations

import asyncio

import pytest
from ray.exceptions import ActorUnavailableError

from actors.role_client import RoleClient


class Method:
    def __init__(self, outcomes: list):
        self.outcomes, self.calls = outcomes, 0

    def remote(self, *args, **kwargs):
        self.calls += 1
        outcome = self.outcomes.pop(0) if self.outcomes else "ok"

        async def result():
            if isinstance(outcome, BaseException):
                raise outcome
            return (outcome, args)
        return result()


class Handle:
    def __init__(self, *outcomes):
        self.score = Method(list(outcomes))


def unavailable() -> ActorUnavailableError:
    return ActorUnavailableError("the actor is temporarily unavailable: connection refused", None)


class Waits(list):
    """The seconds the client asked to sleep, not slept: a clock (for the client's replica picker) moves on by
    them instead, so the test's time is not spent."""

    def __init__(self):
        super().__init__()
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def waits(monkeypatch):
    waits, real_sleep = Waits(), asyncio.sleep

    def sleep(seconds):
        waits.append(seconds)
        waits.now += seconds
        return real_sleep(0)
    monkeypatch.setattr(asyncio, "sleep", sleep)
    return waits


def client_on(waits: Waits, role: str, handles: list) -> RoleClient:
    client = RoleClient(role, handles)
    client._picker._clock = waits
    return client


def test_an_unreachable_replica_is_skipped_and_the_call_completes(waits):
    lost, alive = Handle(unavailable(), unavailable()), Handle()
    client = client_on(waits, "t2i", [lost, alive])
    assert asyncio.run(client.score(1)) == ("ok", (1,))
    assert (lost.score.calls, alive.score.calls) == (1, 1)  # sent again to the next replica
    assert waits == [0.0]  # at once: a reachable replica was there, no backoff to sit out


def test_a_restarting_single_replica_is_waited_for(waits):
    only = Handle(unavailable(), unavailable(), "back")
    assert asyncio.run(client_on(waits, "vlm", [only]).score(2)) == ("back", (2,))
    assert only.score.calls == 3
    assert waits == [0.5, 1.0]  # its backoff, growing


def test_other_errors_are_not_resent_and_unavailability_has_a_limit(monkeypatch):
    failing = Handle(ValueError("bad prompt"))
    with pytest.raises(ValueError, match="bad prompt"):
        asyncio.run(RoleClient("llm", [failing]).score(3))
    assert failing.score.calls == 1
    monkeypatch.setattr(RoleClient, "UNAVAILABLE_RETRY_S", 0.0)
    gone = Handle(unavailable(), unavailable())
    with pytest.raises(ActorUnavailableError):
        asyncio.run(RoleClient("clip", [gone]).score(4))
    assert gone.score.calls == 1
