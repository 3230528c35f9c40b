"""Training beside serving on a SIMULATED cluster: ``python -m benchmarks.scale.train_beside [--quick]``.

SIMULATION — no GPU, no serving model. The simulated cluster of ``python -m benchmarks.scale``
(cluster.yaml's node types as raylets on this machine, benchmarks/scale/cluster.py), this time with
the head's dashboard and job server on 127.0.0.1; the five roles placed with configs/gpu_cluster.yaml's
resources as latency-model stand-ins (benchmarks/scale/roles.py, standins.py); the real batch job
driver (benchmarks/scale/driver.py). Then:

1. a batch alone (the baseline throughput);
2. the same roles, a second batch, and while it runs a REAL Ray Train MDSS job submitted with
   ``ray job submit -- python -m training.train --config configs/mdss/tiny_fashion_mnist.yaml``
   (a ~45k-parameter UNet on Fashion-MNIST from the Debian package, a few steps) whose workers ask
   for ``custom_resources_per_worker={gpu_small: 1}`` — the simulated GPU node type. The simulated
   nodes have no CUDA, so the job runs with ``use_gpu: false`` (Ray's ScalingConfig refuses a GPU
   amount without use_gpu, and torch would find no GPU): only the custom resource places the workers.

The serving roles hold fractions of both gpu_small nodes, so no gpu_small node has a whole
``gpu_small: 1`` free: the training's placement group stays pending. The benchmark records that
(Ray's pending demand, as the autoscaler reads it from the GCS), waits ``--pending-hold`` seconds to
show it does not resolve by itself, then does what Ray's autoscaler would do with cluster.yaml — adds
nodes of the node type that can hold the pending bundles (benchmarks/scale/autoscale.py plans them;
``cluster.add_node`` with that type's resources starts them) — and the training runs there.

Recorded: where the training workers landed (node type), that both jobs finished, the batch's
throughput alone and while the training ran, who waited for resources and how long, the serving
roles' placement and processes before and after (untouched), and the autoscaler's plan for the real
configs (serving, each MDSS config, both together) against cluster.yaml's max_workers.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.scale import analysis  # noqa: E402
from benchmarks.scale.level_outputs import folder_bytes, report_banner  # noqa: E402
from benchmarks.scale.machine import git_head, loadavg  # noqa: E402
from benchmarks.scale.run import NAMESPACE, PROFILE, Run, load_cfg, make_images, with_run_defaults  # noqa: E402
from benchmarks.scale.autoscale import (ClusterLimits, cluster_limits, over_limits, plan_nodes,  # noqa: E402
                                        serving_bundles, training_bundles)
from benchmarks.scale.cluster import (classify_nodes, free_port, listeners_off_loopback, node_types,  # noqa: E402
                                      start_cluster)
from benchmarks.scale.latency import default_model  # noqa: E402

TRAIN_CONFIG = ROOT / "configs" / "mdss" / "tiny_fashion_mnist.yaml"
REAL_TRAIN_CONFIGS = ("finetune_cifar10_ddpm", "sd15_text2image")
SUBMISSION_PREFIX = "mdss-beside"


# ---------------------------------------------------------------------------- plans for the real configs

def real_plans(limits: ClusterLimits) -> dict:
    """The autoscaler's plan (new nodes per type on an empty cluster) for the serving roles of
    configs/gpu_cluster.yaml, for each real-cluster MDSS config, and for serving plus each training."""
    from agents.config import ArpoConfig
    from core.config import load_config
    from training.config import TrainConfig

    serving = serving_bundles(load_config(ArpoConfig, ROOT / "configs" / "gpu_cluster.yaml"))
    out = {"serving (configs/gpu_cluster.yaml)": _plan_row(serving, limits)}
    for name in REAL_TRAIN_CONFIGS:
        cfg = load_config(TrainConfig, ROOT / "configs" / "mdss" / f"{name}.yaml")
        train = training_bundles(cfg)
        out[f"training (configs/mdss/{name}.yaml)"] = dict(_plan_row(train, limits), worker=train[0],
                                                           workers=cfg.num_workers)
        out[f"serving + training ({name})"] = _plan_row(serving + train, limits)
    return out


def _plan_row(bundles: list[dict], limits: ClusterLimits) -> dict:
    plan = plan_nodes(bundles, limits)
    return {"new_nodes": plan.counts(), "unplaceable": plan.unplaceable, "over_limits": over_limits(plan.counts(), limits)}


# ---------------------------------------------------------------------------- cluster state

def live_free_resources(gcs_address: str) -> tuple[list[dict], dict]:
    """Each live node's free resources, and the pending demand, both as Ray's autoscaler reads them
    from the GCS (``ray.autoscaler.v2.sdk.get_cluster_status``)."""
    from ray.autoscaler.v2.sdk import get_cluster_status

    status = get_cluster_status(gcs_address)
    free = []
    for node in list(status.active_nodes) + list(status.idle_nodes):
        usage = node.resource_usage.usage if node.resource_usage else []
        free.append({u.resource_name: u.total - u.used for u in usage})
    demand = status.resource_demands
    pending = {
        "placement_groups": [{"strategy": d.strategy, "state": d.state,
                              "bundles": [{"bundle": b.bundle, "count": b.count} for b in d.bundles_by_count]}
                             for d in demand.placement_group_demand],
        "tasks_actors": [{"bundle": b.bundle, "count": b.count} for d in demand.ray_task_actor_demand
                         for b in d.bundles_by_count],
    }
    return free, pending


def pending_bundles(pending: dict) -> list[dict]:
    """The bundles of the pending demand, one dict per bundle (a STRICT_PACK group as one sum)."""
    out = []
    for pg in pending["placement_groups"]:
        bundles = [dict(b["bundle"]) for b in pg["bundles"] for _ in range(b["count"])]
        if pg.get("strategy") == "STRICT_PACK":
            total: dict = {}
            for b in bundles:
                for k, v in b.items():
                    total[k] = total.get(k, 0.0) + v
            bundles = [total]
        out += bundles
    out += [dict(b["bundle"]) for b in pending["tasks_actors"] for _ in range(b["count"])]
    return out


def training_groups() -> dict[str, dict]:
    """Ray Train's placement groups on the cluster (not the groups spreading the roles' replicas)."""
    import ray

    from benchmarks.scale.roles import ROLE_GROUP_SUFFIX

    return {pg_id: {"state": info["state"], "strategy": info["strategy"],
                    "bundles": [dict(b) for b in info["bundles"].values()],
                    "nodes": list(info["bundles_to_node_id"].values())}
            for pg_id, info in ray.util.placement_group_table().items()
            if not (info.get("name") or "").endswith(ROLE_GROUP_SUFFIX)}


def train_workers(gcs_address: str) -> list[dict]:
    """Ray Train's worker actors (class RayTrainWorker) and their nodes, from the state API of the cluster
    at ``gcs_address`` (named: without it the state API picks the newest Ray on the machine, maybe not ours)."""
    from ray.util.state import list_actors

    try:
        rows = list_actors(address=gcs_address, filters=[("class_name", "=", "RayTrainWorker")],
                           raise_on_missing_output=False, timeout=20)
    except Exception as exc:  # the state API answers through the dashboard; a slow answer is not fatal
        return [{"error": repr(exc)}]
    return [{"actor_id": r.actor_id, "node_id": r.node_id, "state": r.state, "pid": r.pid} for r in rows]


# ---------------------------------------------------------------------------- the run

class BesideRun(Run):
    """The simulated cluster (with its dashboard), the roles, and the two batches."""

    def __init__(self, args, work: Path):
        # Run.__init__'s set-up, with the head's dashboard and job server (Run starts none).
        self.args, self.work = with_run_defaults(args), work
        self.cfg = load_cfg(work, args.dilation, args.max_steps, args.config, args.set)
        self.model = default_model(self.cfg).with_dilation(args.dilation)
        counts = {"gpu_large": args.gpu_large_nodes, "gpu_small": args.gpu_small_nodes}
        t0 = time.perf_counter()
        self.dashboard_port = free_port()
        self.sim = start_cluster(counts, temp_dir=f"/tmp/rtb{os.getpid()}", dashboard_port=self.dashboard_port)
        import ray

        ray.init(address=self.sim.address, namespace=NAMESPACE, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
        self.nodes = classify_nodes(self.sim)
        self.cluster_start_s = time.perf_counter() - t0
        self.off_loopback: set[str] = set(listeners_off_loopback())
        self.clocks: dict[str, dict] = {}  # as Run's (--gpu-sharing time only; this command keeps partition)
        self.added_nodes: list[dict] = []

    def batch(self, specs: dict, name: str, n_images: int, concurrency: int, seed: int, on_start=None) -> dict:
        """One batch job (a driver process) on the shared role actors; ``on_start(t0_abs)`` runs in this
        thread once the driver has started its batch, while the driver runs."""
        images = make_images(self.work / f"images-{name}", n_images, seed)
        out = self.work / f"out-{name}"
        barrier = self.work / f"{name}.go"
        barrier.unlink(missing_ok=True)
        spec = self.driver_spec(specs, "beside", images, out, concurrency, barrier)
        box: dict = {}

        def drive():
            try:
                box["result"] = self.run_drivers([spec], self.args.timeout)[0]
            except BaseException as exc:  # reported below, in the calling thread
                box["error"] = exc

        thread = threading.Thread(target=drive, daemon=True)
        thread.start()
        ready = Path(spec.result).with_suffix(".ready")
        deadline = time.monotonic() + self.args.timeout
        while not ready.exists() and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        barrier.write_text("go")
        started = time.time()
        if on_start:
            on_start(started)
        thread.join()
        if "error" in box:
            raise box["error"]
        res = box["result"]
        fig = analysis.driver_figures(res, concurrency, folder_bytes(out))
        k = self.model.dilation
        row = {"name": name, "images": n_images, "concurrency": concurrency, "done": fig["done"], "failed": fig["failed"],
               "wall_s": fig["wall_s"], "t0_abs": res["t0_abs"],
               "ends_abs": sorted(res["t0_abs"] + i["end"] for i in res["images"]),
               "real_images_per_min_steady": 60 * fig["images_per_s_steady"] * k,
               "real_images_per_min_whole": 60 * fig["images_per_s_whole"] * k,
               "report_banner": report_banner(out)}
        if not self.args.keep:
            shutil.rmtree(images, ignore_errors=True)
            shutil.rmtree(out, ignore_errors=True)
        return row

    # ------------------------------------------------------------------ the training job
    def submit_training(self, run_dir: Path, log: Path) -> tuple[subprocess.Popen, list[str], str]:
        a = self.args
        ray_bin = str(Path(sys.executable).with_name("ray"))
        self._submissions = getattr(self, "_submissions", 0) + 1
        sub_id = f"{SUBMISSION_PREFIX}-{os.getpid()}-{int(time.time())}-{self._submissions}"
        entry = [sys.executable, "-m", "training.train", "--config", str(a.train_config),
                 "--set", f"run_dir={run_dir}", "--set", f"num_workers={a.train_workers}",
                 "--set", f"total_steps={a.train_steps}", "--set", "use_gpu=false",
                 "--set", f"cpus_per_worker={a.train_cpus}",
                 "--set", f"custom_resources_per_worker={{{a.node_type}: 1}}"]
        command = [ray_bin, "job", "submit", "--address", f"http://127.0.0.1:{self.dashboard_port}",
                   "--submission-id", sub_id, "--", *entry]
        env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
        env.pop("RAY_ADDRESS", None)
        fh = open(log, "w")
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
        proc._log_handle = fh  # closed by the caller's wait
        return proc, command, sub_id

    def train_beside(self, batch_start_abs: float) -> dict:
        """Runs in the main thread while the beside batch's driver runs: submit the training job, watch its
        placement, play the autoscaler when it is pending, wait for it to finish. On any error the job is
        stopped (its driver must not outlive the benchmark)."""
        try:
            return self._train_beside(batch_start_abs)
        except BaseException:
            self.stop_job()
            raise

    def stop_job(self) -> None:
        """Stop the submitted job (``ray job stop``) and the local ``ray job submit`` process."""
        job = getattr(self, "_job", None)
        if not job:
            return
        proc, sub_id = job
        if proc.poll() is None:
            proc.kill()
        env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
        env.pop("RAY_ADDRESS", None)
        try:
            subprocess.run([str(Path(sys.executable).with_name("ray")), "job", "stop", "--address",
                            f"http://127.0.0.1:{self.dashboard_port}", sub_id], env=env, capture_output=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            pass

    def _train_beside(self, batch_start_abs: float) -> dict:
        a = self.args
        time.sleep(a.submit_after)
        run_dir = self.work / "train-runs"
        log = self.work / "train-job.log"
        attempts, proc, command, sub_id = 0, None, None, None
        submit_abs = time.time()
        while True:  # right after start-up the head's job agent may not be up yet: the job was not submitted then
            attempts += 1
            proc, command, sub_id = self.submit_training(run_dir, log)
            self._job = (proc, sub_id)
            while proc.poll() is None and "submitted successfully" not in log.read_text() \
                    and "No available agent" not in log.read_text():
                time.sleep(0.2)
            if "No available agent" in log.read_text() and attempts < 30:
                proc.wait()
                time.sleep(2)
                continue
            break
        events = [{"t": time.time(), "event": "submitted", "attempts": attempts}]
        first_pending = placed = scaled = None
        pending_seen: Optional[dict] = None
        free_at_pending: list = []
        plan_counts: dict = {}
        groups_seen: dict = {}
        workers_seen: dict = {}
        types = node_types()
        deadline = time.monotonic() + a.timeout
        while proc.poll() is None:
            if time.monotonic() > deadline:
                proc.kill()
                raise TimeoutError(f"training job still running after {a.timeout:.0f} s")
            groups = training_groups()
            for pg_id, g in groups.items():
                groups_seen.setdefault(pg_id, {"first_state": g["state"], "first_seen": time.time()})
                groups_seen[pg_id].update(last_state=g["state"], bundles=g["bundles"], strategy=g["strategy"])
                if g["state"] == "CREATED" and "created" not in groups_seen[pg_id]:
                    groups_seen[pg_id]["created"] = time.time()
                    groups_seen[pg_id]["nodes"] = g["nodes"]
            pending_pgs = [g for g in groups.values() if g["state"] in ("PENDING", "RESCHEDULING")]
            if pending_pgs and first_pending is None:
                first_pending = time.time()
                free_at_pending, pending_seen = live_free_resources(self.sim.address)
                events.append({"t": first_pending, "event": "training placement group pending",
                               "pending_demand": pending_seen})
            if any(g["state"] == "CREATED" for g in groups.values()) and placed is None:
                placed = time.time()
                events.append({"t": placed, "event": "training placement group created"})
            if (pending_pgs and scaled is None and a.autoscale and first_pending is not None
                    and time.time() - first_pending >= a.pending_hold):
                free, pending = live_free_resources(self.sim.address)
                plan = plan_nodes(pending_bundles(pending), cluster_limits(), existing_free=free)
                plan_counts = plan.counts()
                events.append({"t": time.time(), "event": "autoscaler plan", "pending_demand": pending,
                               "new_nodes": plan_counts, "unplaceable": plan.unplaceable,
                               "over_limits": over_limits(plan_counts, cluster_limits())})
                for name in plan.new_nodes:
                    t = types[name]
                    t_add = time.time()
                    node = self.sim.cluster.add_node(node_ip_address="127.0.0.1", num_cpus=int(t.num_cpus),
                                                     num_gpus=int(t.num_gpus), resources=dict(t.custom),
                                                     object_store_memory=80 * 2**20)
                    self.added_nodes.append({"node_type": name, "node_id": node.node_id, "start_s": time.time() - t_add})
                self.sim.cluster.wait_for_nodes()
                self.sim.counts.update({k: self.sim.counts.get(k, 0) + v for k, v in plan_counts.items()})
                self.nodes = classify_nodes(self.sim)
                scaled = time.time()
                events.append({"t": scaled, "event": "nodes added", "nodes": list(self.added_nodes)})
            for w in train_workers(self.sim.address) if (placed and len(workers_seen) < a.train_workers) else []:
                if w.get("actor_id") and w.get("node_id"):
                    workers_seen[w["actor_id"]] = w
            self.off_loopback |= set(listeners_off_loopback())
            time.sleep(1.0)
        proc.wait()
        proc._log_handle.close()
        end = time.time()
        events.append({"t": end, "event": f"ray job submit exited {proc.returncode}"})
        text = log.read_text()
        self.nodes = classify_nodes(self.sim)
        worker_rows = [dict(w, node_type=self.nodes.get(w["node_id"], "?")) for w in workers_seen.values()]
        pgs = [dict(g, pg_id=pg_id, node_types=[self.nodes.get(n, "?") for n in g.get("nodes", [])])
               for pg_id, g in groups_seen.items()]
        state = _final_training_state(run_dir)
        return {
            "command": shlex.join(command), "submission_id": sub_id, "returncode": proc.returncode,
            "succeeded": proc.returncode == 0 and "succeeded" in text.lower(),
            "finished_line": next((l for l in text.splitlines() if l.startswith("finished ")), None),
            "final_step": state.get("step"), "history_steps": state.get("history_steps"),
            "submitted_abs": submit_abs, "batch_start_abs": batch_start_abs, "placed_abs": placed, "end_abs": end,
            "pending_abs": first_pending, "scaled_abs": scaled,
            "waited_for_resources_s": (placed - first_pending) if (placed and first_pending) else 0.0,
            "pending_demand_at_first_sight": pending_seen, "free_resources_at_first_sight": free_at_pending,
            "nodes_added": list(self.added_nodes), "autoscaler_plan": plan_counts,
            "placement_groups": pgs, "workers": worker_rows, "events": events,
            "log_tail": text[-4000:],
        }


def _final_training_state(run_dir: Path) -> dict:
    """Step and logged steps of the newest checkpoint under ``run_dir``."""
    try:
        import torch

        from training.checkpoint import read_history, read_training_state

        found = sorted(run_dir.glob("*/checkpoint_*"))
        if not found:
            return {}
        states = [(p, read_training_state(p, torch.device("cpu"))) for p in found if p.is_dir()]
        folder, state = max(states, key=lambda ps: ps[1]["step"])
        return {"step": int(state["step"]), "history_steps": [row["step"] for row in read_history(folder)]}
    except Exception as exc:  # reported, not fatal: the job's own exit status is the verdict
        return {"error": repr(exc)}


def rate_in_window(ends_abs: list[float], start: float, end: float) -> Optional[float]:
    """Images finished per second between ``start`` and ``end`` (absolute times); None for an empty window."""
    if end <= start:
        return None
    return sum(1 for t in ends_abs if start <= t <= end) / (end - start)


def summarise(base: Optional[dict], beside: dict, train: dict, k: float) -> dict:
    """Who waited, the overlap, and the beside batch's throughput in three windows (real images per minute):
    before the training's workers were placed (its job driver starting, then its placement group pending),
    while they ran (placed → job finished), and after the training finished; plus the batch alone."""
    b_start = beside["t0_abs"]
    b_end = max(beside["ends_abs"]) if beside["ends_abs"] else b_start
    t_run0 = train["placed_abs"] or train["end_abs"]
    windows = {"before_training_ran": (b_start, min(b_end, t_run0)),
               "while_training_ran": (max(b_start, t_run0), min(b_end, train["end_abs"])),
               "after_training": (max(b_start, train["end_abs"]), b_end)}
    rates = {}
    for name, (w0, w1) in windows.items():
        r = rate_in_window(beside["ends_abs"], w0, w1)
        rates[name] = {"seconds": max(0.0, w1 - w0), "images": sum(1 for t in beside["ends_abs"] if w0 <= t <= w1),
                       "real_images_per_min": None if r is None else 60 * r * k}
    overlap = rates["while_training_ran"]["seconds"]
    run_s = train["end_abs"] - t_run0
    return {
        "training_run_s": run_s, "training_overlap_s": overlap,
        "training_overlap_share": overlap / run_s if run_s > 0 else None,
        "batch_windows": rates,
        "batch_alone_real_images_per_min_steady": base["real_images_per_min_steady"] if base else None,
        "batch_alone_real_images_per_min_whole": base["real_images_per_min_whole"] if base else None,
        "batch_beside_real_images_per_min_steady": beside["real_images_per_min_steady"],
        "batch_beside_real_images_per_min_whole": beside["real_images_per_min_whole"],
        "training_waited_s": train["waited_for_resources_s"],
        "submit_to_placed_s": t_run0 - train["submitted_abs"],
    }


# ---------------------------------------------------------------------------- output

def fmt(v, spec=".2f") -> str:
    return "–" if v is None else format(v, spec)


def render(meta: dict, plans: dict, roles_before: list, roles_after: list, base: dict, beside: dict, train: dict,
           summary: dict) -> str:
    t0 = beside["t0_abs"]

    def rel(t):
        return "–" if t is None else f"{t - t0:+.1f} s"

    untouched = _same_roles(roles_before, roles_after)
    lines = [
        "SIMULATION — training beside serving on a simulated cluster (python -m benchmarks.scale.train_beside).",
        "No GPU and no serving model: the five roles are latency-model stand-ins placed by configs/gpu_cluster.yaml's",
        "resources; the batch driver is the real one. The training job is a REAL Ray Train MDSS run of a tiny UNet on",
        "Fashion-MNIST, submitted with `ray job submit`; it runs with use_gpu: false (the simulated nodes have no CUDA):",
        f"its workers are placed by the custom resource alone ({meta['node_type']}: 1 per worker).",
        f"date {meta['date']}, host {meta['host']} ({meta['cpus']} CPUs), git {meta['git']}, command: {meta['command']}",
        f"cluster at start: {meta['nodes_at_start']} (cluster.yaml's node types; CPU/GPU counts logical); time dilation "
        f"k={meta['dilation']} (real images/min = simulated × k), agent.max_steps={meta['max_steps']}",
        f"nothing listened off loopback: {not meta['off_loopback']} {meta['off_loopback'] or ''}",
        f"load average before → after: {meta['load_before']} → {meta['load_after']}",
        "",
        "Autoscaler plan for the real configs (new worker nodes per type on an empty cluster; benchmarks/scale/autoscale.py):",
        "",
        "| workload | nodes to add | within cluster.yaml's max_workers |",
        "|---|---|---|",
    ]
    for name, row in plans.items():
        lines.append(f"| {name} | {row['new_nodes']} | {'yes' if not row['over_limits'] else '; '.join(row['over_limits'])} |")
    lines += ["", "Serving roles (placed before the batches; the same actors served both):", "",
              "| role | replica | node type | node | pid before → after |", "|---|---:|---|---|---|"]
    after = {(r["role"], r["replica"]): r for r in roles_after}
    for r in roles_before:
        a = after.get((r["role"], r["replica"]), {})
        lines.append(f"| {r['role']} | {r['replica']} | {r['node_type']} | {r['node_id'][:8]} | {r['pid']} → {a.get('pid', '?')} |")
    lines += ["", f"serving roles untouched (same nodes, same processes): {untouched}", ""]
    lines += ["Training job:", "", f"- command: `{train['command']}`",
              f"- result: ray job submit exit {train['returncode']}, succeeded {train['succeeded']}; "
              f"{train['finished_line'] or 'no finished line'}; last checkpoint step {train['final_step']}",
              f"- submitted {rel(train['submitted_abs'])} after the beside batch started; placement group pending from "
              f"{rel(train['pending_abs'])}; nodes added at {rel(train['scaled_abs'])}; placed {rel(train['placed_abs'])}; "
              f"finished {rel(train['end_abs'])}",
              f"- waited for resources: {train['waited_for_resources_s']:.1f} s; pending demand when first seen: "
              f"{json.dumps(train['pending_demand_at_first_sight'])}",
              f"- autoscaler plan for that demand: {train['autoscaler_plan'] or 'none needed'}; nodes added: "
              + (", ".join(f"{n['node_type']} {n['node_id'][:8]} ({n['start_s']:.1f} s)" for n in train["nodes_added"]) or "none")]
    for w in train["workers"]:
        lines.append(f"- worker {w['actor_id'][:8]} on {w['node_type']} node {w['node_id'][:8]} (pid {w['pid']})")
    for g in train["placement_groups"]:
        lines.append(f"- placement group {g['pg_id'][:8]} ({g.get('strategy')}): bundles {g.get('bundles')}, first state "
                     f"{g['first_state']}, on node types {g['node_types']}")
    lines += ["", f"Batch throughput (real images/min; the same role actors, concurrency {beside['concurrency']}):", "",
              "| batch | images | done / failed | sim wall s | steady | whole run |", "|---|---:|---|---:|---:|---:|"]
    for b in (base, beside):
        if b:
            lines.append(f"| {b['name']} | {b['images']} | {b['done']} / {b['failed']} | {b['wall_s']:.1f} | "
                         f"{b['real_images_per_min_steady']:.2f} | {b['real_images_per_min_whole']:.2f} |")
    lines += ["", "The beside batch in three windows (images finished in the window ÷ its length):", "",
              "| window | sim s | images | real images/min |", "|---|---:|---:|---:|"]
    labels = {"before_training_ran": "before the training's workers were placed (its driver starting, then pending)",
              "while_training_ran": "while the training ran (workers placed → job finished)",
              "after_training": "after the training finished"}
    for name, w in summary["batch_windows"].items():
        lines.append(f"| {labels[name]} | {w['seconds']:.1f} | {w['images']} | {fmt(w['real_images_per_min'])} |")
    lines += ["",
              f"{summary['training_overlap_s']:.1f} s of the training's {summary['training_run_s']:.1f} s run overlapped the batch.",
              "The batch's role actors held their resources throughout: it asked Ray for nothing new and waited for "
              "nothing. Any change in its rate is the 2-core VM's CPUs being shared with the training's processes "
              "(on the real cluster those run on other machines) and the windows' ramp-up / drain."]
    return "\n".join(lines)


def _same_roles(before: list, after: list) -> bool:
    key = lambda r: (r["role"], r["replica"], r["node_id"], r["pid"])  # noqa: E731
    return sorted(map(key, before)) == sorted(map(key, after))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="CI size: no baseline, a 32-image beside batch at concurrency 16, max_steps 2, "
                                                        "1 training worker, 2 steps, 3 s pending hold")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--baseline-images", type=int, default=128, help="images of the batch alone; 0: no baseline")
    p.add_argument("--beside-seconds", type=float, default=300.0,
                   help="size the beside batch to last about this long at the baseline's rate")
    p.add_argument("--beside-images", type=int, default=None,
                   help="images of the beside batch (default: from --beside-seconds; needed with --baseline-images 0)")
    p.add_argument("--max-steps", type=int, default=3)
    p.add_argument("--dilation", type=float, default=0.1)
    p.add_argument("--gpu-large-nodes", type=int, default=2)
    p.add_argument("--gpu-small-nodes", type=int, default=2)
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "gpu_cluster.yaml")
    p.add_argument("--set", action="append", default=[], help="extra serving-config override key=value")
    p.add_argument("--train-config", type=Path, default=TRAIN_CONFIG)
    p.add_argument("--train-workers", type=int, default=2)
    p.add_argument("--train-steps", type=int, default=6)
    p.add_argument("--train-cpus", type=float, default=1.0, help="cpus_per_worker of the training job")
    p.add_argument("--node-type", default="gpu_small", help="node type (custom resource) the training workers ask for")
    p.add_argument("--submit-after", type=float, default=3.0, help="seconds into the beside batch before submitting")
    p.add_argument("--pending-hold", type=float, default=15.0,
                   help="seconds the training stays pending before the simulated autoscaler adds nodes")
    p.add_argument("--no-autoscale", dest="autoscale", action="store_false",
                   help="never add nodes (the training then waits until resources free up)")
    p.add_argument("--work", type=Path, default=None)
    p.add_argument("--keep", action="store_true")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--txt", type=Path, default=None)
    p.add_argument("--timeout", type=float, default=1800.0)
    a = p.parse_args(argv)
    if a.quick:
        a.concurrency, a.baseline_images, a.beside_images, a.max_steps = 16, 0, 32, 2
        a.train_workers, a.train_steps, a.pending_hold, a.submit_after = 1, 2, 3.0, 1.0
    if a.baseline_images <= 0 and not a.beside_images:
        p.error("--baseline-images 0 needs --beside-images")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # the dashboard must not phone home
    work = a.work or Path(tempfile.mkdtemp(prefix="expectdiff-beside-"))
    work.mkdir(parents=True, exist_ok=True)
    load_before = loadavg()
    plans = real_plans(cluster_limits())
    run = BesideRun(a, work)
    nodes_at_start = dict(run.sim.counts)
    try:
        from benchmarks.scale.roles import placement

        specs, handles, roles_before = run.start_roles("beside")
        base = None
        if a.baseline_images > 0:
            print(f"[beside] baseline: {a.baseline_images} images at concurrency {a.concurrency} ...", file=sys.stderr, flush=True)
            base = run.batch(specs, "alone", a.baseline_images, a.concurrency, seed=11)
            print(f"[beside]   {base['real_images_per_min_whole']:.2f} images/min real", file=sys.stderr, flush=True)
        n_beside = a.beside_images or max(a.concurrency, int(round(base["done"] / max(base["wall_s"], 1e-9) * a.beside_seconds)))
        print(f"[beside] beside batch: {n_beside} images, training job submitted {a.submit_after:.0f} s in ...",
              file=sys.stderr, flush=True)
        box: dict = {}

        def on_start(started_abs: float):
            box["train"] = run.train_beside(started_abs)

        beside = run.batch(specs, "beside", n_beside, a.concurrency, seed=12, on_start=on_start)
        train = box["train"]
        roles_after = asyncio.run(placement(handles, run.nodes))
    finally:
        run.close()
        if not a.keep and a.work is None:
            shutil.rmtree(work, ignore_errors=True)
    summary = summarise(base, beside, train, a.dilation)
    meta = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "host": platform.node(), "cpus": os.cpu_count(),
            "command": "python -m benchmarks.scale.train_beside " + " ".join(argv if argv is not None else sys.argv[1:]),
            "nodes_at_start": nodes_at_start, "nodes_at_end": run.sim.counts, "dilation": a.dilation,
            "max_steps": a.max_steps, "node_type": a.node_type, "off_loopback": sorted(run.off_loopback),
            "cluster_start_s": run.cluster_start_s, "git": git_head(), "load_before": load_before, "load_after": loadavg(),
            "profile": PROFILE, "train_config": str(a.train_config.relative_to(ROOT) if a.train_config.is_relative_to(ROOT)
                                                    else a.train_config)}
    text = render(meta, plans, roles_before, roles_after, base, beside, train, summary)
    print(text)
    result = {"meta": meta, "plans": plans, "roles_before": roles_before, "roles_after": roles_after,
              "roles_untouched": _same_roles(roles_before, roles_after), "baseline": base, "beside": beside,
              "training": train, "summary": summary}
    if a.txt:
        a.txt.write_text(text + "\n")
    if a.json:
        a.json.write_text(json.dumps(result, indent=1, default=str))
    ok = (train["succeeded"] and (base is None or base["failed"] == 0) and beside["failed"] == 0 and beside["done"] == beside["images"]
          and result["roles_untouched"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
