"""Faults under load (SIMULATION benchmark, issue #24 item 3): role processes killed with SIGKILL mid-run, and
whole nodes lost and replaced.

``--kill t2i:0@0.25,vlm:0@0.5`` kills replica 0 of the T2I role once a quarter of the level's images are
finished, and the VLM's once half are — ``kill -9`` of the actor's worker process, found from the pid the
replica reported at placement. Ray then restarts the actor (``resources.max_restarts``), the stand-in loads
its "model" again (``--load-s``: real seconds, × k on the simulated clock), and the calls that were in flight
are retried on the new process (``resources.max_task_retries``); calls made meanwhile wait for it. The agent
itself re-sends nothing: a call that Ray cannot complete fails its graph node, the image's record says so,
and a rerun resumes it from its last checkpoint (docs/reliability.md).

``--kill node:t2i:1@0.5`` loses the node that hosts T2I replica 1 once half the images are finished: every process
of that simulated node killed at once (raylet, object store, the workers of every actor on it — there the T2I
replica, and on a gpu_small node maybe the captioner and CLIP), then a fresh node of the same type added, as an
autoscaler would (cluster.SimCluster.replace_node). Ray restarts the lost actors on the new node (their placement
group's bundles are rescheduled there); generated images whose only copy was in the lost object store are
recomputed by Ray from their lineage (the T2I call re-run: ``max_task_retries`` > 0 makes actor results
reconstructable) or, failing that, fail their graph node.

Measured per kill, from the benchmark's main process (not the measured driver): when it happened, how many
images were finished then, and the recovery time — from the kill until the restarted replica answers a
``ping`` (a control method: it returns once the new process has finished ``__init__``). The level's records
then give the images failed (target 0) and the extra latency of the images that were in flight at the kill.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional


@dataclass
class Kill:
    role: str
    replica: int
    at_fraction: float  # of the level's images finished
    done: bool = False
    record: dict = field(default_factory=dict)
    node: bool = False  # True: lose the whole node hosting the replica (and replace it), not only its process


def parse_kills(text: str) -> list[Kill]:
    """``[node:]role:replica@fraction`` items, comma-separated (``t2i:0@0.25,vlm:0@0.5,node:t2i:1@0.75``)."""
    kills = []
    for item in (x.strip() for x in text.split(",") if x.strip()):
        try:
            who, at = item.split("@")
            parts = who.split(":")
            node = len(parts) == 3 and parts[0].strip() == "node"
            role, replica = parts[1:] if node else parts
            kill = Kill(role.strip(), int(replica), float(at), node=node)
        except ValueError:
            raise ValueError(f"--kill item {item!r}: expected [node:]role:replica@fraction, e.g. t2i:0@0.25 or "
                             "node:t2i:1@0.5") from None
        if not 0.0 < kill.at_fraction < 1.0:
            raise ValueError(f"--kill item {item!r}: the fraction of images finished must lie strictly between 0 and 1")
        kills.append(kill)
    return kills


class FinishedImages:
    """Lines in a level's results log so far (each a finished image, done or failed), counted as the log grows:
    each call reads only what was appended since the last (the log reaches tens of MB; this runs every 0.5 s)."""

    def __init__(self, out: Path):
        self.path, self.offset, self.lines = out / "results.jsonl", 0, 0

    def count(self) -> int:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    self.lines += chunk.count(b"\n")
                    self.offset += len(chunk)
        except FileNotFoundError:
            pass
        return self.lines


def finished_images(out: Path) -> int:
    """Lines in the level's results log now."""
    return FinishedImages(out).count()


class FaultPlan:
    """The kills of one level, fired from the main process's polling loop (:meth:`tick`)."""

    def __init__(self, kills: list[Kill], handles: dict[str, list], where: list[dict], out: Path, n_images: int,
                 replace_node: Optional[Callable[[str], dict]] = None):
        self.kills, self.handles, self.n_images = kills, handles, n_images
        self.finished = FinishedImages(out)
        self.pids = {(w["role"], w["replica"]): w["pid"] for w in where}
        self.nodes = {(w["role"], w["replica"]): w.get("node_id") for w in where}
        self.replace_node = replace_node
        for k in kills:
            if (k.role, k.replica) not in self.pids:
                raise ValueError(f"--kill {k.role}:{k.replica}: no such replica (roles: {sorted(set(self.pids))})")
            if k.node and replace_node is None:
                raise ValueError(f"--kill node:{k.role}:{k.replica}: this run cannot replace nodes")
        self.threads: list[threading.Thread] = []
        self.t0 = time.time()

    def tick(self) -> None:
        pending = [k for k in self.kills if not k.done]
        if not pending:
            return
        finished = self.finished.count()
        for k in pending:
            if finished >= k.at_fraction * self.n_images:
                self._fire(k, finished)

    def _fire(self, k: Kill, finished: int) -> None:
        if k.node:
            return self._lose_node(k, finished)
        k.done = True
        pid = self.pids[(k.role, k.replica)]
        at = time.time()
        try:
            os.kill(pid, signal.SIGKILL)
            killed = True
        except ProcessLookupError:
            killed = False
        k.record = {"role": k.role, "replica": k.replica, "pid": pid, "killed": killed, "at_abs": at,
                    "images_finished": finished, "of": self.n_images}
        thread = threading.Thread(target=self._await_recovery, args=(k, at), daemon=True)
        thread.start()
        self.threads.append(thread)

    def _await_recovery(self, k: Kill, at: float) -> None:
        k.record.update(self._replica_recovery(k.role, k.replica, at))

    def _replica_recovery(self, role: str, replica: int, at: float, timeout_s: float = 3600) -> dict:
        """How long after ``at`` the replica answered again. While its node is lost but not yet declared dead, Ray
        answers ActorUnavailableError (and retries no further): asked again with a backoff, as RoleClient does."""
        import ray
        from ray.exceptions import ActorUnavailableError

        handle = self.handles[role][replica]
        deadline, pause = time.monotonic() + timeout_s, 0.2
        while True:
            try:
                where = ray.get(handle.where.remote(), timeout=max(1.0, deadline - time.monotonic()))
                now = time.time()
                return {"recovered_abs": now, "recovery_s": now - at, "new_pid": where["pid"],
                        "new_node": where["node_id"]}
            except ActorUnavailableError as exc:
                if time.monotonic() + pause > deadline:
                    return {"recovered_abs": None, "recovery_s": None, "error": f"{type(exc).__name__}: {exc}"}
                time.sleep(pause)
                pause = min(2 * pause, 5.0)
            except Exception as exc:  # noqa: BLE001 - recorded: the replica did not come back
                return {"recovered_abs": None, "recovery_s": None, "error": f"{type(exc).__name__}: {exc}"}

    def _lose_node(self, k: Kill, finished: int) -> None:
        """The node replaced here, in the polling loop's (main) thread: a starting Ray node registers a SIGTERM handler
        (ray._private.node.Node), which Python allows only in the main thread — from the plan's own thread the
        replacement never joined. Then each replica it hosted is timed, each in a thread, until it answers again."""
        k.done = True
        node = self.nodes[(k.role, k.replica)]
        hosted = sorted(key for key, n in self.nodes.items() if n == node)
        at = time.time()
        k.record = {"role": k.role, "replica": k.replica, "node": node, "killed": True, "at_abs": at,
                    "images_finished": finished, "of": self.n_images,
                    "hosted": [f"{role}[{replica}]" for role, replica in hosted]}
        try:
            k.record.update(replaced=self.replace_node(node))
        except Exception as exc:  # noqa: BLE001 - recorded: the node could not be replaced
            k.record.update(recovered_abs=None, recovery_s=None, error=f"{type(exc).__name__}: {exc}")
            return

        def wait_for_replicas() -> None:
            from concurrent.futures import ThreadPoolExecutor

            # each replica asked in a thread of its own, all at once: asked in turn, one already back would be timed
            # when the one before it answered
            with ThreadPoolExecutor(max_workers=len(hosted)) as pool:
                futures = {f"{role}[{replica}]": pool.submit(self._replica_recovery, role, replica, at)
                           for role, replica in hosted}
            replicas = {name: future.result() for name, future in futures.items()}
            back = None not in (r["recovery_s"] for r in replicas.values())  # the node's recovery: its last replica's
            k.record.update(replicas=replicas,
                            recovered_abs=max(r["recovered_abs"] for r in replicas.values()) if back else None,
                            recovery_s=max(r["recovery_s"] for r in replicas.values()) if back else None)

        thread = threading.Thread(target=wait_for_replicas, daemon=True)
        thread.start()
        self.threads.append(thread)

    def finish(self, timeout_s: float = 600) -> list[dict]:
        for t in self.threads:
            t.join(timeout_s)
        return [k.record or {"role": k.role, "replica": k.replica, "killed": False, "note": "not reached"} for k in self.kills]


def in_flight_latency(images: list[dict], kills: list[dict], t0_abs: float) -> dict:
    """Latency (driver clock) of the images in flight at any kill against all others: the extra latency."""
    import statistics

    at = [k["at_abs"] - t0_abs for k in kills if k.get("killed")]
    hit, rest = [], []
    for im in images:
        lat = im["end"] - im["start"]
        (hit if any(im["start"] <= a <= im["end"] for a in at) else rest).append(lat)
    if not hit or not rest:
        return {"hit": len(hit), "rest": len(rest)}
    return {"hit": len(hit), "rest": len(rest), "hit_median_s": statistics.median(hit),
            "rest_median_s": statistics.median(rest), "extra_median_s": statistics.median(hit) - statistics.median(rest)}


def load_pause(load_s: float, dilation: float) -> None:
    """A stand-in's model load: ``load_s`` real seconds on the simulated clock (× k), in ``__init__``."""
    if load_s > 0:
        time.sleep(load_s * dilation)

