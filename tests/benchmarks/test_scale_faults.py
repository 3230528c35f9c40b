"""Faults under load in the scale simulation (issue #24 item 3): SIGKILL of role replicas mid-run.

Unit part: the --kill plan fires at the asked share of finished images and kills the replica's process; the
extra latency of the images in flight. End to end (slow): the real batch job on the simulated cluster with the
T2I replica and the VLM killed mid-run and a stand-in model load on every (re)start — Ray restarts them, retries
the calls in flight, and every image is done (0 failed), with the recovery time recorded; in the same run the node
hosting the second T2I replica is lost (every process of it killed) and a fresh node of its type added — the calls
to it are re-sent (RoleClient) until Ray has restarted its replicas elsewhere."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.scale.faults import FaultPlan, finished_images, in_flight_latency, parse_kills

REPO = Path(__file__).resolve().parents[2]


def test_kill_items_are_parsed_and_bad_ones_named():
    kills = parse_kills("t2i:0@0.25, vlm:0@0.5")
    assert [(k.role, k.replica, k.at_fraction) for k in kills] == [("t2i", 0, 0.25), ("vlm", 0, 0.5)]
    for bad in ("t2i@0.5", "t2i:0@1.0", "t2i:x@0.5", "t2i:0", "rack:t2i:0@0.5", "node:t2i@0.5"):
        with pytest.raises(ValueError, match="--kill item"):
            parse_kills(bad)
    [node] = parse_kills("node:t2i:1@0.5")
    assert (node.node, node.role, node.replica, node.at_fraction) == (True, "t2i", 1, 0.5)
    assert not kills[0].node


def test_a_lost_node_is_replaced_and_every_replica_it_hosted_is_waited_for(tmp_path, monkeypatch):
    where = [{"role": "t2i", "replica": 0, "pid": 1, "node_id": "A"}, {"role": "t2i", "replica": 1, "pid": 2, "node_id": "B"},
             {"role": "clip", "replica": 0, "pid": 3, "node_id": "B"}, {"role": "vlm", "replica": 0, "pid": 4, "node_id": "C"}]
    import threading

    replaced, waited = [], []
    both_asked = threading.Barrier(2, timeout=10)  # the node's two replicas are asked at once, not in turn

    def recovery(self, role, replica, at):
        waited.append((role, replica))
        both_asked.wait()
        return {"recovered_abs": at + 2.0 + replica, "recovery_s": 2.0 + replica}
    monkeypatch.setattr(FaultPlan, "_replica_recovery", recovery)
    plan = FaultPlan(parse_kills("node:t2i:1@0.5"), {}, where, tmp_path, n_images=2,
                     replace_node=lambda node: replaced.append((node, threading.current_thread() is threading.main_thread()))
                     or {"removed": node, "added": "D", "add_s": 1.5})
    (tmp_path / "results.jsonl").write_text('{"a": 1}\n')
    plan.tick()
    [record] = plan.finish()
    # replaced from the main thread (a starting Ray node sets a signal handler); the node's replicas waited for, no others
    assert replaced == [("B", True)] and sorted(waited) == [("clip", 0), ("t2i", 1)]
    assert record["hosted"] == ["clip[0]", "t2i[1]"] and record["replaced"]["added"] == "D"
    assert record["recovery_s"] == 3.0 and record["recovered_abs"] == record["at_abs"] + 3.0  # the last of them back
    with pytest.raises(ValueError, match="cannot replace nodes"):
        FaultPlan(parse_kills("node:t2i:1@0.5"), {}, where, tmp_path, 2)


def test_a_replica_on_a_lost_node_is_asked_again_until_it_answers(tmp_path, monkeypatch):
    """Before Ray declares a lost node dead, a call to its actors fails at once with ActorUnavailableError: the
    recovery probe asks again (as RoleClient does) rather than recording a replica that never came back."""
    import ray
    from ray.exceptions import ActorUnavailableError

    answers = [ActorUnavailableError("connection refused", None)] * 3 + [{"pid": 7, "node_id": "D"}]

    class Replica:
        class where:
            @staticmethod
            def remote():
                return answers.pop(0)

    def get(answer, timeout):
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(ray, "get", get)
    monkeypatch.setattr(time, "sleep", lambda s: None)
    where = [{"role": "t2i", "replica": 0, "pid": 1, "node_id": "A"}]
    plan = FaultPlan([], {"t2i": [Replica]}, where, tmp_path, n_images=2)
    got = plan._replica_recovery("t2i", 0, at=time.time())
    assert got["new_pid"] == 7 and got["new_node"] == "D" and got["recovery_s"] >= 0 and not answers
    answers[:] = [ValueError("the actor died")]  # any other error: recorded, not retried
    assert plan._replica_recovery("t2i", 0, at=time.time())["error"] == "ValueError: the actor died"


def test_the_plan_kills_the_replica_once_its_share_of_images_is_finished(tmp_path, monkeypatch):
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        where = [{"role": "t2i", "replica": 0, "pid": victim.pid}, {"role": "vlm", "replica": 0, "pid": os.getpid()}]
        monkeypatch.setattr(FaultPlan, "_await_recovery", lambda self, k, at: k.record.update(recovery_s=0.0))
        plan = FaultPlan(parse_kills("t2i:0@0.5"), {"t2i": [None]}, where, tmp_path, n_images=4)
        (tmp_path / "results.jsonl").write_text('{"a": 1}\n')
        plan.tick()
        assert victim.poll() is None and not plan.kills[0].done  # 1 of 4 finished: not yet
        (tmp_path / "results.jsonl").write_text('{"a": 1}\n{"b": 2}\n')
        assert finished_images(tmp_path) == 2
        plan.tick()
        assert victim.wait(timeout=10) == -9  # SIGKILL
        [record] = plan.finish()
        assert record["images_finished"] == 2 and record["killed"] and record["pid"] == victim.pid
        with pytest.raises(ValueError, match="no such replica"):
            FaultPlan(parse_kills("llm:0@0.5"), {}, where, tmp_path, 4)
    finally:
        victim.kill()


def test_extra_latency_compares_the_images_in_flight_at_a_kill_with_the_rest():
    t0 = 1000.0
    images = [{"start": 0, "end": 10}, {"start": 5, "end": 30}, {"start": 12, "end": 20}, {"start": 21, "end": 29}]
    lat = in_flight_latency(images, [{"killed": True, "at_abs": t0 + 8}], t0)
    assert (lat["hit"], lat["rest"]) == (2, 2)
    assert lat["hit_median_s"] == 17.5 and lat["rest_median_s"] == 8.0 and lat["extra_median_s"] == 9.5


@pytest.mark.slow
@pytest.mark.ray
def test_replicas_killed_and_a_node_lost_mid_run_come_back_and_no_image_fails(tmp_path):
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    env.pop("RAY_ADDRESS", None)
    out = tmp_path / "faults.json"
    started = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "benchmarks.scale", "--concurrency", "8", "--images-per-concurrency", "3",
                          "--max-steps", "2", "--dilation", "0.02", "--two-drivers", "none", "--load-s", "60",
                          "--kill", "t2i:0@0.25,vlm:0@0.5,node:t2i:1@0.75", "--work", str(tmp_path / "w"),
                          "--json", str(out)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    level = json.loads(out.read_text())["levels"][0]
    assert (level["done"], level["failed"]) == (24, 0)
    process_kills = {k["role"]: k for k in level["kills"] if "node" not in k}
    [node_loss] = [k for k in level["kills"] if "node" in k]
    for role in ("t2i", "vlm"):
        k = process_kills[role]
        assert k["killed"] and k["new_pid"] != k["pid"], k
        # the restart loads the stand-in's model again: 60 s real x k = 1.2 s at least
        assert k["recovery_s"] >= 60 * 0.02, k
    # the node: removed, a fresh one of its type added, and every replica it hosted answering again
    replaced = node_loss["replaced"]
    assert "t2i[1]" in node_loss["hosted"] and replaced["type"] == "gpu_small", node_loss
    assert replaced["removed"] == node_loss["node"] != replaced["added"], node_loss
    assert set(node_loss["replicas"]) == set(node_loss["hosted"]), node_loss
    for name, r in node_loss["replicas"].items():
        assert r["recovery_s"] >= 60 * 0.02 and r["new_node"] != node_loss["node"], (name, r)
    print(f"fault run: {time.monotonic() - started:.0f} s; recovery "
          f"{[process_kills[r]['recovery_s'] for r in process_kills] + [node_loss['recovery_s']]}")
