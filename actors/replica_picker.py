"""Which replica of a role gets the next call: the one with the fewest calls outstanding from this client.

Round-robin gives every replica the same share of calls whatever its queue holds. After a replica comes back
(its node lost, its process killed) the calls that piled onto the others meanwhile drain only slowly, while the
restarted one, sent its plain share, runs under-filled: at 1,024 optimisations in flight the restarted T2I
replica was about 75 % busy beside a 99 % busy survivor, and the run 8.1 % slower than without the loss
(docs/scale.md, "Faults under load"). Sending each call to the replica with the fewest calls outstanding evens
the queues out instead; ties go in turn, so equal queues still get round-robin.

A replica Ray has just called unreachable (ActorUnavailableError) fails at once and so would always look the
emptiest: it is passed over for a backoff (0.5 s, doubling up to 10 s while it stays unreachable) unless every
replica is, in which case the one that comes off its backoff first is tried. The backoff grows once per probe, not
once per failed call: the calls that were already on their way when it became unreachable (hundreds, with a deep
queue) fail together and say nothing new, so they leave the backoff as it is. The role client waits
:meth:`ReplicaPicker.wait_s` before re-sending a failed call: nothing while another replica is reachable.
"""
from __future__ import annotations

import itertools
import time
from typing import Callable


class ReplicaPicker:
    AVOID_FIRST_S = 0.5
    AVOID_MAX_S = 10.0

    def __init__(self, n_replicas: int, clock: Callable[[], float] = time.monotonic):
        if n_replicas < 1:
            raise ValueError("a role needs at least one replica")
        self.outstanding = [0] * n_replicas
        self._avoid_until = [0.0] * n_replicas
        self._avoid_s = [0.0] * n_replicas
        self._turn = itertools.cycle(range(n_replicas))
        self._clock = clock

    def pick(self) -> int:
        """The replica for the next call (counted as outstanding until :meth:`finished`)."""
        n = len(self.outstanding)
        start = next(self._turn)
        order = [(start + i) % n for i in range(n)]
        now = self._clock()
        reachable = [i for i in order if self._avoid_until[i] <= now]
        if not reachable:
            reachable = [min(order, key=self._avoid_until.__getitem__)]
        chosen = min(reachable, key=self.outstanding.__getitem__)  # the first of the fewest: ties in turn
        self.outstanding[chosen] += 1
        return chosen

    def wait_s(self) -> float:
        """Seconds until some replica is worth a call: 0 while one is not being passed over."""
        return max(0.0, min(self._avoid_until) - self._clock())

    def finished(self, replica: int, unreachable: bool = False) -> None:
        """A call to ``replica`` is over; ``unreachable``: Ray said its actor could not be reached."""
        self.outstanding[replica] -= 1
        if unreachable:
            if self._clock() < self._avoid_until[replica]:
                return  # a call sent before the replica was found unreachable: no news, the backoff stands
            self._avoid_s[replica] = min(2 * self._avoid_s[replica] or self.AVOID_FIRST_S, self.AVOID_MAX_S)
            self._avoid_until[replica] = self._clock() + self._avoid_s[replica]
        else:  # it answered (a result or an error of its own): reachable again
            self._avoid_s[replica] = 0.0
            self._avoid_until[replica] = 0.0
