"""One batch job's driver on the simulated cluster: ``python -m benchmarks.scale.driver --spec SPEC.pkl``.

A fresh process (as ``python -m agents.batch_reverse`` is under ``ray job submit``), so its CPU
time and memory are the driver's alone. It joins the named role actors (starting any that are
missing), runs the REAL batch job — ``agents.batch.runner.run_batch`` with the LangGraph agent,
the SQLite checkpointer in the output folder, the writer and the report — and measures it
without editing it:

* each image's ``optimise`` call is wrapped (``run_batch(optimise_fn=...)``) to time its
  iterations (one ``generate`` node per iteration) and count optimisations in flight;
* ``BatchWriter.record`` / ``BatchWriter.flush`` and ``Captions.write`` are wrapped at class level
  to time the writer and the report per finished image;
* a sampler records the process's RSS and the in-flight count every ``sample_s``;
* ``time.process_time()`` gives the driver's CPU time (all its threads: asyncio loop, SQLite,
  Ray's core-worker threads);
* the role clients are timed per image (benchmarks/scale/overhead.py), so each node's time splits
  into waiting on roles and the driver's own orchestration; ``inject_cpu_s`` / ``inject_wait_s``
  add a known cost per node for the check that these figures can fail.

The measurements go to a JSON file; ``--profile`` adds a cProfile dump of the whole run.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import cProfile
import functools
import gc
import json
import os
import pickle
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional


@dataclass
class DriverSpec:
    """What one driver run needs (pickled by the benchmark's main process)."""

    address: str
    namespace: str
    prefix: str  # the shared-roles name (job.shared_roles) the benchmark started the roles under
    cfg: Any  # ArpoConfig
    specs: dict  # role -> RoleSpec
    images: str
    out: str
    concurrency: int
    profile: str  # the report's profile line
    result: str  # where the measurements JSON goes
    sample_s: float = 0.5
    cprofile: Optional[str] = None
    barrier: Optional[str] = None  # when set: write <result>.ready once set up, start when this file exists
    inject_cpu_s: float = 0.0  # the fault check: CPU burnt in the driver per node (benchmarks/scale/overhead.py)
    inject_wait_s: float = 0.0  # ... and a wait per node (sim seconds)
    tracemalloc: bool = False  # trace the driver's Python allocations (slows it: a memory run, not a speed run)
    #: hand the roles pixel arrays, as before images travelled by reference (a comparison run: Ray then puts an
    #: argument's pixels into the store again on every call)
    images_by_value: bool = False


class Timer:
    """Wall (perf_counter) and CPU time of each call of a wrapped method."""

    def __init__(self):
        self.calls: list[tuple[float, float, float]] = []  # (start, wall s, cpu s)

    def wrap(self, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.calls.append((t0, time.perf_counter() - t0, time.thread_time() - c0))
        return timed


class Patched:
    """Class-level timing wrappers around the writer's methods, undone on exit."""

    def __init__(self):
        from agents.batch.captions import Captions
        from agents.batch.writer import BatchWriter

        # The periodic summary refresh is BatchWriter.refresh since results.csv is appended to; before,
        # BatchWriter.flush was that refresh. Its timer keeps the key "BatchWriter.flush" either way.
        refresh = "refresh" if "refresh" in BatchWriter.__dict__ else "flush"
        self.targets = [(BatchWriter, "record", "BatchWriter.record"), (BatchWriter, refresh, "BatchWriter.flush"),
                        (Captions, "write", "Captions.write")]
        self.timers = {key: Timer() for _, _, key in self.targets}
        self._saved = []

    def __enter__(self):
        for cls, name, key in self.targets:
            original = cls.__dict__[name]
            self._saved.append((cls, name, original))
            setattr(cls, name, self.timers[key].wrap(original))
        return self

    def __exit__(self, *exc):
        for cls, name, original in reversed(self._saved):
            setattr(cls, name, original)
        return False


@dataclass
class Tracker:
    """Wraps agents.api.optimise: start/end and each ``generate`` completion of every image."""

    inflight: int = 0
    max_inflight: int = 0
    started: int = 0
    finished: list[float] = field(default_factory=list)  # completion times
    images: list[dict] = field(default_factory=list)  # per image: start, generate times, end

    async def __call__(self, *args, on_node=None, **kwargs):
        from agents.api import optimise
        from benchmarks.scale.overhead import ROLE_CALLS

        start = time.perf_counter()
        gens: list[float] = []
        nodes: list[tuple[str, float]] = []
        calls: list[tuple[float, float]] = []
        ROLE_CALLS.set(calls)  # this task's context: the graph's node tasks inherit it
        self.inflight += 1
        self.started += 1
        self.max_inflight = max(self.max_inflight, self.inflight)

        def node(name: str) -> None:
            now = time.perf_counter()
            nodes.append((name, now))
            if name == "generate":
                gens.append(now)
            if on_node is not None:
                on_node(name)

        try:
            return await optimise(*args, on_node=node, **kwargs)
        finally:
            self.inflight -= 1
            end = time.perf_counter()
            self.finished.append(end)
            self.images.append({"start": start, "generates": gens, "nodes": nodes, "end": end, "calls": calls})


def _node_split(images: list[dict]) -> dict[str, list[tuple[float, float]]]:
    """Per node name: (node wall s, of which waiting on roles s) of every run of it."""
    from benchmarks.scale.overhead import node_split

    out: dict[str, list[tuple[float, float]]] = {}
    for image in images:
        for name, wall, roles in node_split(image["start"], image["nodes"], image["calls"]):
            out.setdefault(name, []).append((round(wall, 5), round(roles, 5)))
    return out


def _node_seconds(images: list[dict]) -> dict[str, list[float]]:
    """Per node name: the time from the previous node's completion (or the image's start) to this one's,
    i.e. what the node took including its waits in the roles' queues."""
    out: dict[str, list[float]] = {}
    for image in images:
        last = image["start"]
        for name, t in image["nodes"]:
            out.setdefault(name, []).append(round(t - last, 4))
            last = t
    return out


def rss_split() -> dict:
    """The driver's resident memory by kind (Linux /proc/self/status, kB → bytes): anonymous (its heap and
    stacks), file-backed (code, libraries) and shared memory — Ray's object store pages the driver has mapped
    (objects it put or fetched), which belong to the store, not to the driver."""
    out = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("RssAnon", "RssFile", "RssShmem"):
                    out[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return out


#: The measuring harness's own files (this folder): what it allocates is told apart from the batch job's.
HARNESS_DIR = str(Path(__file__).resolve().parent) + os.sep


def harness_bytes() -> int:
    """Bytes (tracemalloc) still held that code in benchmarks/scale/ allocated: the harness's samples and per-image
    timings, which grow with the run as a leak of the job's would. One snapshot: call it at the start and the end."""
    import tracemalloc

    return sum(stat.size for stat in tracemalloc.take_snapshot().statistics("filename")
               if stat.traceback[0].filename.startswith(HARNESS_DIR))


async def _sample(tracker: Tracker, samples: list, every_s: float, traced: Optional[list] = None,
                  split: Optional[list] = None) -> None:
    import tracemalloc

    import psutil

    proc = psutil.Process()
    while True:
        now = time.perf_counter()
        samples.append((now, proc.memory_info().rss, tracker.inflight, len(tracker.finished)))
        if split is not None:
            split.append((now, rss_split(), tracker.inflight, len(tracker.finished)))
        if traced is not None:
            traced.append((now, tracemalloc.get_traced_memory()[0], tracker.inflight, len(tracker.finished)))
        await asyncio.sleep(every_s)


def start_up(spec: DriverSpec):
    """The batch job's own start-up (agents.batch.startup.start_ray_and_roles) with ``ray.address`` the simulated
    cluster and ``job.shared_roles`` the roles the benchmark started: connect, check capacity, start or join the
    role groups' named actors, wait until they answer, check their config fingerprints. Only what the actors run
    is the simulation's (``servers``: the stand-ins)."""
    from agents.batch.startup import start_ray_and_roles
    from benchmarks.scale.cluster import loopback_environment
    from benchmarks.scale.roles import standin_servers

    loopback_environment()
    cfg = spec.cfg.model_copy(update={"ray": spec.cfg.ray.model_copy(update={"address": spec.address}),
                                      "job": spec.cfg.job.model_copy(update={"shared_roles": spec.prefix})})
    return start_ray_and_roles(cfg, servers=standin_servers(spec.specs))


async def run(spec: DriverSpec, started_roles: Any) -> dict:
    from agents.batch.runner import run_batch
    from benchmarks.scale.overhead import Injected, timed_roles
    from benchmarks.scale.roles import ROLES

    # Import what run_batch imports lazily, so the memory baseline below holds the code, not just the data.
    import agents.api  # noqa: F401
    import agents.checkpointing  # noqa: F401
    import agents.graph  # noqa: F401
    import langgraph.checkpoint.sqlite.aio  # noqa: F401

    roles = timed_roles(started_roles)
    if spec.images_by_value:
        for name in ROLES:
            getattr(roles, name).takes_object_refs = False  # shadows the client's: the graph sends arrays
    shelves = _record_image_refs()
    resends = _count_resends()
    if spec.barrier:  # several drivers start their batches together
        Path(spec.result).with_suffix(".ready").write_text(str(os.getpid()))
        while not Path(spec.barrier).exists():
            await asyncio.sleep(0.05)
    tracker = Tracker()
    samples: list = []
    gc.collect()
    import psutil

    rss0 = psutil.Process().memory_info().rss
    traced: Optional[list] = None
    if spec.tracemalloc:
        import tracemalloc

        tracemalloc.start()
        traced = []
    harness0 = harness_bytes() if traced is not None else None
    split: list = []
    split0 = rss_split()
    sampler = asyncio.ensure_future(_sample(tracker, samples, spec.sample_s, traced, split))
    profiler = cProfile.Profile() if spec.cprofile else None
    with Patched() as patched, Injected(spec.inject_cpu_s, spec.inject_wait_s) as injected, \
            open(os.devnull, "w") as devnull:
        cpu0, t0, t0_abs = time.process_time(), time.perf_counter(), time.time()
        if profiler:
            profiler.enable()
        try:
            outcome = await run_batch(spec.cfg, spec.images, spec.out, roles, spec.concurrency, profile=spec.profile,
                                      progress_stream=devnull, optimise_fn=tracker)
        finally:
            if profiler:
                profiler.disable()
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    sampler.cancel()
    # What the harness itself holds at the end (its samples, each image's timings): part of the traced growth, not the job's
    harness = (harness0, harness_bytes()) if traced is not None else None
    rss_end = psutil.Process().memory_info().rss
    if profiler:
        profiler.dump_stats(spec.cprofile)
    return {
        "t0_abs": t0_abs, "wall_s": wall, "cpu_s": cpu, "rss0": rss0, "rss_end": rss_end,
        "outcome": {"total": outcome.total, "done": outcome.done, "failed": outcome.failed, "skipped": outcome.skipped,
                    "interrupted": outcome.interrupted},
        "max_inflight": tracker.max_inflight,
        "images": [{"start": i["start"] - t0, "generates": [g - t0 for g in i["generates"]], "end": i["end"] - t0}
                   for i in tracker.images],
        "node_seconds": _node_seconds(tracker.images),
        "node_split": _node_split(tracker.images),
        "injected": {"cpu_s": spec.inject_cpu_s, "wait_s": spec.inject_wait_s, "calls": injected.calls},
        "samples": [(t - t0, rss, n, f) for t, rss, n, f in samples],
        "traced": [(t - t0, b, n, f) for t, b, n, f in traced] if traced is not None else None,
        "traced_harness": harness,
        "writer": {name: [(s - t0, w, c) for s, w, c in timer.calls] for name, timer in patched.timers.items()},
        "pid": os.getpid(),
        "image_refs": shelves[0].stats() if shelves else None,
        "resends": dict(resends),
        "rss_split0": split0,
        "rss_split": [(t - t0, d, n, f) for t, d, n, f in split],
    }


def _count_resends() -> collections.Counter:
    """Calls the role client sent again because Ray said their actor was unreachable (its node lost, or it
    restarting), by role: the client's own ``role_call_resends_total`` records, counted as they are made."""
    import actors.role_client as role_client

    counts: collections.Counter = collections.Counter()
    real = role_client.record

    def record(name, value, tags):
        if name == "role_call_resends_total":
            counts[tags["role"]] += value
        return real(name, value, tags)

    role_client.record = record
    return counts


def _record_image_refs() -> list:
    """The batch job's object-reference shelf (actors.object_refs.ImageRefs), kept so its counters (images the
    driver put, references handed out again) can be reported after the run."""
    import agents.batch.runner as runner

    shelves: list = []
    base = runner.ImageRefs

    class Recorded(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            shelves.append(self)

    runner.ImageRefs = Recorded
    return shelves


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", required=True, type=Path, help="pickled DriverSpec written by python -m benchmarks.scale")
    a = p.parse_args(argv)
    spec: DriverSpec = pickle.loads(a.spec.read_bytes())
    from agents.batch.startup import stop_ray_and_roles

    running = start_up(spec)
    try:
        result = asyncio.run(run(spec, running.roles))
        result["startup"] = [{"group": c.group, "actors": c.actor_names, "started": c.started, "joined": c.joined}
                             for c in running.shared]
    finally:
        stop_ray_and_roles(running)  # leaves the shared roles running, as a batch job does
    Path(spec.result).write_text(json.dumps(result))
    return 0 if result["outcome"]["failed"] == 0 and not result["outcome"]["interrupted"] else 1


if __name__ == "__main__":
    sys.exit(main())
