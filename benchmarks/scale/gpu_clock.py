"""GPU time shared by the processes on one node: the scale simulation's ``--gpu-sharing time``.

SIMULATION. The default (``partition``) charges a replica by its ``num_gpus`` share wherever it lands: a
half-GPU replica runs at half speed even alone on a GPU, so where Ray puts the replicas changes no figure.
``time`` models what a GPU does with several processes on it (no MIG, no MPS): it time-slices between
their contexts. Processor sharing: while n calls run on a node with G GPUs, each progresses at
min(1, G/n) of a whole GPU's speed, so a replica alone on its GPU runs at full speed and two busy
replicas on one GPU at half speed each. Assumptions: no overlap gain and no switching cost between
contexts (the calibration script's two-process measurement, docs/gpu_figures.md, tests this rule when it
runs on a GPU); per node, not per GPU — exact for one-GPU nodes, which every GPU node type of
cluster.yaml is. Chat engines keep their event-driven clock and are modelled as the only tenant of their
node's GPU (the simulation refuses a placement where they are not).

:class:`ProcessorSharing` is the event logic on a given clock (tested without Ray); :class:`GPUClock` is
the Ray actor, one per simulated GPU node, that the stand-ins hand their calls' whole-GPU work to.
"""
from __future__ import annotations

import asyncio
import itertools
from typing import Optional

EPS = 1e-9


class ProcessorSharing:
    """Jobs of given whole-GPU work on ``gpus`` GPUs; each of n running jobs runs at min(1, gpus/n)."""

    def __init__(self, gpus: float):
        if not gpus > 0:
            raise ValueError(f"a GPU clock needs gpus > 0, got {gpus}")
        self.gpus = gpus
        self.remaining: dict[int, float] = {}
        self.last = 0.0
        self.busy_s = 0.0  # time with at least one job running
        self.gpu_s = 0.0  # GPU-seconds delivered (busy time × GPUs in use)
        self._ids = itertools.count()

    def rate(self) -> float:
        return min(1.0, self.gpus / len(self.remaining)) if self.remaining else 0.0

    def advance(self, now: float) -> list[int]:
        """Move the clock to ``now``; the ids of the jobs that finished by then."""
        elapsed = max(0.0, now - self.last)
        self.last = max(self.last, now)
        if not self.remaining or elapsed <= 0:
            return []
        rate = self.rate()
        self.busy_s += elapsed
        self.gpu_s += elapsed * rate * len(self.remaining)
        done = []
        for job in list(self.remaining):
            self.remaining[job] -= elapsed * rate
            if self.remaining[job] <= EPS:
                del self.remaining[job]
                done.append(job)
        return done

    def add(self, now: float, work_s: float) -> tuple[int, list[int]]:
        """A job of ``work_s`` arriving at ``now``: its id, and the ids of the jobs that finished by ``now``
        (the clock moves to ``now`` first; their callers must be told)."""
        done = self.advance(now)
        job = next(self._ids)
        self.remaining[job] = max(work_s, 0.0)
        return job, done

    def next_finish(self) -> Optional[float]:
        """When the next job finishes if nothing arrives (absolute time), or None when idle."""
        if not self.remaining:
            return None
        return self.last + min(self.remaining.values()) / self.rate()


class GPUClock:
    """A Ray async actor: ``await clock.run.remote(work_s)`` returns after ``work_s`` of whole-GPU work has been
    served on this node's GPUs beside the other calls running there (real seconds; the caller dilates)."""

    def __init__(self, gpus: float, node_id: str = ""):
        self.ps, self.node_id = ProcessorSharing(gpus), node_id
        self.waiters: dict[int, asyncio.Future] = {}
        self.calls = 0
        self.max_running = 0
        self._timer: Optional[asyncio.TimerHandle] = None
        self._started: Optional[float] = None

    def _now(self) -> float:
        loop = asyncio.get_running_loop()
        if self._started is None:
            self._started = loop.time()
            self.ps.last = 0.0
        return loop.time() - self._started

    def _release(self, jobs: list[int]) -> None:
        for job in jobs:
            fut = self.waiters.pop(job)
            if not fut.done():
                fut.set_result(None)

    def _settle(self) -> None:
        self._release(self.ps.advance(self._now()))
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        nxt = self.ps.next_finish()
        if nxt is not None:
            self._timer = asyncio.get_running_loop().call_later(max(0.0, nxt - self._now()), self._settle)

    async def run(self, work_s: float) -> float:
        loop = asyncio.get_running_loop()
        start = self._now()
        job, finished = self.ps.add(start, work_s)
        self.calls += 1
        self.max_running = max(self.max_running, len(self.ps.remaining))
        fut = loop.create_future()
        self.waiters[job] = fut
        self._release(finished)
        self._settle()
        await fut
        return self._now() - start

    async def stats(self) -> dict:
        if self._started is not None:
            self._settle()
        return {"node_id": self.node_id, "gpus": self.ps.gpus, "calls": self.calls, "max_running": self.max_running,
                "busy_s": round(self.ps.busy_s, 4), "gpu_s": round(self.ps.gpu_s, 4)}


def clock_name(prefix: str, node_id: str) -> str:
    return f"{prefix}-gpuclock-{node_id}"


def start_clocks(prefix: str, namespace: str, gpus_by_node: dict[str, float]) -> dict:
    """One GPUClock per GPU node (named :func:`clock_name`, on its node, no CPU asked), owned by the caller."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    cls = ray.remote(GPUClock)
    return {node: cls.options(name=clock_name(prefix, node), namespace=namespace, num_cpus=0, get_if_exists=True,
                              scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(gpus, node)
            for node, gpus in gpus_by_node.items() if gpus > 0}


class NodeGPU:
    """What a stand-in holds in ``time`` mode: its node's clock, looked up on first use (the stand-in runs in
    an actor: its node is where Ray put it)."""

    def __init__(self, prefix: str, namespace: str):
        self.prefix, self.namespace = prefix, namespace
        self._clock = None

    def run(self, work_s: float) -> float:
        """Block this thread until ``work_s`` of whole-GPU work is served; the seconds it took."""
        import ray

        if self._clock is None:
            node = ray.get_runtime_context().get_node_id()
            self._clock = ray.get_actor(clock_name(self.prefix, node), namespace=self.namespace)
        return ray.get(self._clock.run.remote(work_s))
