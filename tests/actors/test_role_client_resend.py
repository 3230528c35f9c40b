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


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch):
    real_sleep = asyncio.sleep
    monkeypatch.setattr(asyncio, "sleep", lambda s: real_sleep(0))


def test_an_unreachable_replica_is_skipped_and_the_call_completes():
    lost, alive = Handle(unavailable(), unavailable()), Handle()
    client = RoleClient("t2i", [lost, alive])
    assert asyncio.run(client.score(1)) == ("ok", (1,))
    assert (lost.score.calls, alive.score.calls) == (1, 1)  # sent again to the next replica


def test_a_restarting_single_replica_is_waited_for():
    only = Handle(unavailable(), unavailable(), "back")
    assert asyncio.run(RoleClient("vlm", [only]).score(2)) == ("back", (2,))
    assert only.score.calls == 3


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
