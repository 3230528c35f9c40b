"""Scale proof on a SIMULATED cluster: ``python -m benchmarks.scale [--quick] [--concurrency 1,64,256,1024,4096]``.

SIMULATION — no GPU, no model. A multi-node Ray on this machine mirrors cluster.yaml's node
types (benchmarks/scale/cluster.py); the five roles are placed with configs/gpu_cluster.yaml's
resources and keep their real server classes, batchers and interfaces, but their model compute
is a latency model taken from published GPU figures (benchmarks/scale/latency.py) and their
outputs are stand-ins (noise images, fixed texts: benchmarks/scale/standins.py; the report's
banner treats them as random-weight roles). The LangGraph agent, the SQLite checkpointer, the
writer and the report are the real ones: each concurrency level runs ``agents.batch.runner.run_batch``
in a fresh driver process (benchmarks/scale/driver.py) on fresh role actors.

Per level it reports images per minute, the efficiency against the ideal throughput the latency
model and the role capacities allow (latency.ideal_throughput), p50/p99 iteration latency, the
driver's CPU per iteration, its memory per optimisation in flight, the checkpoint database per
image, the writer's and the report's time per finished image, the batch sizes every role saw,
where each replica landed, and the machine's load average before and after. Then two batch jobs
run at once (two driver processes, two output folders) on ONE set of named role actors, and the
roles' per-job counters show their requests interleaved in the same batches.

Time dilation ``--dilation k``: every latency-model cost and batching wait × k, so the simulated
cluster runs 1/k times faster than the real one would; throughput is converted back (× k) in
the "real" columns. The driver's own costs are not dilated: they are what is measured.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import pickle
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.scale import analysis  # noqa: E402
from benchmarks.scale.cluster import classify_nodes, listeners_off_loopback, start_cluster  # noqa: E402
from benchmarks.scale.driver import DriverSpec  # noqa: E402
from benchmarks.scale.latency import SOURCES, LatencyModel, default_model  # noqa: E402
from benchmarks.scale.object_store import store_stats  # noqa: E402
from benchmarks.scale.object_store import summary as object_store_summary  # noqa: E402
from benchmarks.scale.faults import FaultPlan, in_flight_latency, parse_kills  # noqa: E402
from benchmarks.scale.standins import Behaviour, tag_image  # noqa: E402

NAMESPACE = "expectdiff-scale"
PROFILE = ("SIMULATION (python -m benchmarks.scale): configs/gpu_cluster.yaml placement on a simulated cluster; "
           "every role is a latency-model stand-in (noise images, fixed texts)")
STANDIN_README = ("These folders are not models. benchmarks/scale points the config's model fields here so that the "
                  "batch report flags every role as random-weight: the roles were latency-model stand-ins returning "
                  "noise images and fixed texts.\n")
EXPECTED_NODE_TYPE = {"t2i": "gpu_small", "captioner": "gpu_small", "clip": "gpu_small", "llm": "gpu_large", "vlm": "gpu_large"}


def load_cfg(work: Path, dilation: float, max_steps: int, config: Path, extra: list[str] = ()):
    """configs/gpu_cluster.yaml with: max_steps, model fields pointing at stand-in folders (report banner),
    and every batching wait × dilation (part of the time dilation)."""
    from actors.offline_kit import OFFLINE_KIT_MARKER
    from agents.config import ArpoConfig
    from core.config import load_config

    models = work / "standin_models"
    for role in ("t2i", "llm", "vlm", "captioner", "clip"):
        (models / role).mkdir(parents=True, exist_ok=True)
    (models / OFFLINE_KIT_MARKER).write_text(STANDIN_README)
    (models / "README.txt").write_text(STANDIN_README)
    overrides = [f"agent.max_steps={max_steps}", f"t2i.model={models / 't2i'}", f"llm.model={models / 'llm'}",
                 f"vlm.model={models / 'vlm'}", f"captioner.model={models / 'captioner'}", f"clip.pretrained={models / 'clip'}"]
    cfg = load_config(ArpoConfig, config, overrides + list(extra))
    for role in ("t2i", "captioner", "clip"):
        b = getattr(cfg, role).batching
        b.max_wait_ms = b.max_wait_ms * dilation
    return cfg


def make_images(folder: Path, n: int, seed: int, job: int = 0, side: int = 32) -> Path:
    """``n`` distinct ``side``×``side`` noise PNGs whose first row carries the job tag (noise: PNG's worst case,
    a photograph compresses about twice as well)."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        img = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        Image.fromarray(tag_image(img, job)).save(folder / f"img_{i:05d}.png")
    return folder


def folder_bytes(out: Path) -> dict:
    total = ckpt = 0
    for p in out.rglob("*"):
        if p.is_file():
            size = p.stat().st_size
            total += size
            if p.name.startswith("checkpoints.sqlite"):
                ckpt += size
    return {"total": total, "checkpoint": ckpt}


def decisions(out: Path, stats: dict) -> dict:
    """What the agent decided over a level, from its results log: why each image stopped, iterations per
    image, what Algorithm 8 did with the candidates; and the re-asks the LLM stand-in's prose answers caused."""
    import collections

    from agents.browser.results import RESULTS_JSONL, ResultsLog

    stops: collections.Counter = collections.Counter()
    outcomes: collections.Counter = collections.Counter()
    iterations = []
    for rec in ResultsLog(out / RESULTS_JSONL, repair=False).records():
        if rec.get("status") != "done":
            continue
        stops[rec.get("stop_reason")] += 1
        iterations.append(len(rec.get("iterations") or []))
        for it in rec.get("iterations") or []:
            outcomes.update(c.get("outcome") for c in it.get("selection") or [])
    reasks = sum(s.get("unreadable_answers", 0) for s in stats.get("llm", []))
    return {"stop_reasons": dict(stops), "candidate_outcomes": dict(outcomes), "reasks": reasks,
            "iterations_per_image": statistics.fmean(iterations) if iterations else None}


def checkpoint_contents(out: Path) -> dict:
    """What LangGraph's SQLite saver keeps: checkpoints and pending writes, and how much of it the latest
    checkpoint of each thread (all a resume needs) is."""
    import sqlite3

    path = out / "checkpoints.sqlite"
    if not path.is_file():
        return {}
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        n_ckpt, ckpt_bytes = con.execute("select count(*), coalesce(sum(length(checkpoint) + length(metadata)), 0) from checkpoints").fetchone()
        n_writes, write_bytes = con.execute("select count(*), coalesce(sum(length(value)), 0) from writes").fetchone()
        threads, latest = con.execute(
            "select count(*), coalesce(sum(length(c.checkpoint) + length(c.metadata)), 0) from checkpoints c join "
            "(select thread_id, checkpoint_ns, max(checkpoint_id) as last from checkpoints group by thread_id, checkpoint_ns) m "
            "on c.thread_id = m.thread_id and c.checkpoint_ns = m.checkpoint_ns and c.checkpoint_id = m.last").fetchone()
    finally:
        con.close()
    return {"threads": threads, "checkpoints": n_ckpt, "checkpoint_bytes": ckpt_bytes, "writes": n_writes,
            "write_bytes": write_bytes, "latest_checkpoint_bytes": latest}


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def tree_cpu() -> dict[int, float]:
    """CPU seconds (user + system) so far of this process and every descendant (nodes, workers, drivers)."""
    import psutil

    me = psutil.Process()
    out = {}
    for proc in [me, *me.children(recursive=True)]:
        try:
            t = proc.cpu_times()
            out[proc.pid] = t.user + t.system
        except psutil.Error:
            pass
    return out


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(v - before.get(pid, 0.0) for pid, v in after.items())


def wait_resources_back(timeout_s: float = 120.0) -> None:
    """Wait until every GPU the cluster has is free again. Actors and placement groups are removed
    asynchronously: a SPREAD group placed while the last level's bundles still hold one gpu_small node
    rightly puts both T2I replicas on the other (best effort), which is not the placement being measured."""
    import ray

    deadline = time.monotonic() + timeout_s
    while ray.available_resources().get("GPU", 0) < ray.cluster_resources().get("GPU", 0):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the cluster's GPUs were not all free {timeout_s:.0f} s after the roles were killed: "
                               f"{ray.available_resources().get('GPU', 0)} of {ray.cluster_resources().get('GPU', 0)}")
        time.sleep(0.2)


CHAT_ROLES = ("llm", "vlm")
GPU_SHARING_SAYS = {"partition": "a replica runs at its num_gpus share wherever it lands",
                    "time": "the processes on a node's GPU time-slice it; benchmarks/scale/gpu_clock.py"}


def check_sole_chat_tenants(placement: list[dict]) -> None:
    """``time`` mode models a chat engine as the only GPU tenant of its node (its own event-driven clock):
    refuse a placement where another role's replica shares that node."""
    by_node: dict[str, list[str]] = {}
    for p in placement:
        by_node.setdefault(p["node_id"], []).append(p["role"])
    for node, roles in by_node.items():
        chat = [r for r in roles if r in CHAT_ROLES]
        if chat and len(roles) > 1:
            raise ValueError(f"--gpu-sharing time: {chat[0]} shares node {node[:8]} with {sorted(set(roles) - {chat[0]}) or roles}; "
                             "a chat engine is modelled as its node GPU's only tenant")


def parse_scale(text: str) -> dict[str, float]:
    """'0.5' (every role) or 'llm=2,vlm=2' (those roles) -> {role: factor}."""
    roles = ("t2i", "llm", "vlm", "captioner", "clip")
    text = text.strip()
    if "=" not in text:
        return {r: float(text) for r in roles}
    out = {r: 1.0 for r in roles}
    for part in text.split(","):
        role, value = part.split("=")
        if role.strip() not in out:
            raise ValueError(f"--latency-scale: unknown role {role!r}")
        out[role.strip()] = float(value)
    return out


#: Options of this command's parser that other commands driving a Run (benchmarks.scale.train_beside) need not have.
RUN_DEFAULTS = {"image_side": 32, "store_every": 5.0, "tracemalloc": False, "inject_cpu_ms": 0.0, "inject_wait_s": 0.0,
                "gpu_sharing": "partition", "object_store_mb": 80,
                "images_by_value": False, "reject_share": 0.0, "unreadable_share": 0.0, "kill": "", "load_s": 0.0}


def with_run_defaults(args):
    """``args`` with every option of RUN_DEFAULTS it lacks set to its default."""
    for name, value in RUN_DEFAULTS.items():
        if not hasattr(args, name):
            setattr(args, name, value)
    return args


class Run:
    """The simulated cluster and what the levels share."""

    def __init__(self, args, work: Path):
        self.args, self.work = with_run_defaults(args), work
        self.cfg = load_cfg(work, args.dilation, args.max_steps, args.config, args.set)
        self.model: LatencyModel = default_model(self.cfg).scaled_roles(parse_scale(args.latency_scale)).with_dilation(args.dilation)
        counts = {"gpu_large": args.gpu_large_nodes, "gpu_small": args.gpu_small_nodes}
        t0 = time.perf_counter()
        self.sim = start_cluster(counts, temp_dir=f"/tmp/rsc{os.getpid()}", object_store_mb=self.args.object_store_mb)
        import ray

        ray.init(address=self.sim.address, namespace=NAMESPACE, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
        self.nodes = classify_nodes(self.sim)
        self.cluster_start_s = time.perf_counter() - t0
        self.off_loopback: set[str] = set(listeners_off_loopback())
        self.clocks: dict[str, dict] = {}  # prefix -> node id -> GPUClock (--gpu-sharing time)

    def close(self) -> None:
        self.sim.shutdown(remove_temp=not self.args.keep)

    # ------------------------------------------------------------------ roles
    def start_roles(self, prefix: str):
        from benchmarks.scale.roles import placement, role_specs, start_or_join_roles, wait_ready

        clocks = None
        if self.args.gpu_sharing == "time":  # one GPU clock per GPU node, before any stand-in looks for it
            from benchmarks.scale.gpu_clock import start_clocks

            self.clocks[prefix] = start_clocks(prefix, NAMESPACE, self.gpus_by_node())
            clocks = (prefix, NAMESPACE)
        behaviour = Behaviour(self.args.reject_share, self.args.unreadable_share)
        specs = role_specs(self.cfg, self.model, image_side=self.args.image_side, gpu_clocks=clocks, behaviour=behaviour,
                           load_s=self.args.load_s)
        handles = start_or_join_roles(self.cfg, specs, prefix)
        asyncio.run(wait_ready(handles))
        where = asyncio.run(placement(handles, self.nodes))
        if clocks:
            check_sole_chat_tenants(where)
        return specs, handles, where

    def gpus_by_node(self) -> dict[str, float]:
        import ray

        return {n["NodeID"]: float(n["Resources"].get("GPU", 0)) for n in ray.nodes() if n["Alive"]}

    def stop_roles(self, handles: dict, prefix: str) -> Optional[list[dict]]:
        """Kill the roles (and their placement groups); in ``time`` mode also the GPU clocks, whose figures are
        returned first."""
        import ray

        from benchmarks.scale.roles import kill

        kill(prefix)
        clocks = self.clocks.pop(prefix, None)
        stats = None
        if clocks:
            stats = ray.get([c.stats.remote() for c in clocks.values()])
            for c in clocks.values():
                ray.kill(c, no_restart=True)
        wait_resources_back()
        return stats

    # ------------------------------------------------------------------ drivers
    def run_drivers(self, specs: list[DriverSpec], timeout_s: float, faults: Optional[FaultPlan] = None) -> list[dict]:
        """Start one driver process per spec; they begin their batches together (a barrier). ``faults``: kills
        fired from here as the level's images finish (benchmarks/scale/faults.py)."""
        env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "PYTHONPATH": str(ROOT)}
        env.pop("RAY_ADDRESS", None)
        procs = []
        for i, spec in enumerate(specs):
            path = Path(spec.result).with_suffix(".spec.pkl")
            path.write_bytes(pickle.dumps(spec))
            log = open(Path(spec.result).with_suffix(".log"), "w")
            procs.append((subprocess.Popen([sys.executable, "-m", "benchmarks.scale.driver", "--spec", str(path)],
                                           cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT), log))
        deadline = time.monotonic() + timeout_s
        next_check = time.monotonic() + 5
        next_store = time.monotonic()
        self.store_samples = []
        while any(p.poll() is None for p, _ in procs):
            if time.monotonic() >= next_store:  # the object store, from here (not from the measured driver)
                self.store_samples.append(store_stats(self.sim.address))
                next_store = time.monotonic() + self.args.store_every
            if time.monotonic() > deadline:
                for p, _ in procs:
                    p.kill()
                raise TimeoutError(f"drivers still running after {timeout_s:.0f} s")
            if time.monotonic() >= next_check:  # every role and driver process is up: nothing off loopback?
                self.off_loopback |= set(listeners_off_loopback())
                next_check = time.monotonic() + 30
            if faults is not None:
                faults.tick()
            time.sleep(0.5)
        results = []
        for (p, log), spec in zip(procs, specs):
            log.close()
            if not Path(spec.result).is_file():
                tail = Path(spec.result).with_suffix(".log").read_text()[-3000:]
                raise RuntimeError(f"driver for {spec.out} exited {p.returncode} without results:\n{tail}")
            results.append(json.loads(Path(spec.result).read_text()))
        return results

    def driver_spec(self, role_specs: dict, prefix: str, images: Path, out: Path, concurrency: int,
                    barrier: Optional[Path], cprofile: Optional[str] = None) -> DriverSpec:
        return DriverSpec(address=self.sim.address, namespace=NAMESPACE, prefix=prefix, cfg=self.cfg, specs=role_specs,
                          images=str(images), out=str(out), concurrency=concurrency, profile=PROFILE,
                          result=str(out.parent / f"{out.name}.result.json"), cprofile=cprofile,
                          barrier=str(barrier) if barrier else None)

    # ------------------------------------------------------------------ one level
    def level(self, concurrency: int, n_images: int, seed: int, inject: bool = False) -> dict:
        from benchmarks.scale.roles import role_stats

        a = self.args
        tag = f"c{concurrency}" + ("-injected" if inject else "")
        images = make_images(self.work / f"images-{tag}", n_images, seed, side=a.image_side)
        out = self.work / f"out-{tag}"
        load_before = loadavg()
        specs, handles, where = self.start_roles(tag)
        cprofile = str(self.work / f"driver-{tag}.prof") if concurrency in a.cprofile else None
        spec = self.driver_spec(specs, tag, images, out, concurrency, None, cprofile)
        spec.tracemalloc = a.tracemalloc
        spec.images_by_value = a.images_by_value
        if inject:  # the fault check: CPU is the driver's own (not dilated); a wait of w real s is w × k on the sim clock
            spec.inject_cpu_s, spec.inject_wait_s = a.inject_cpu_ms / 1000, a.inject_wait_s * self.model.dilation
        cpu0 = tree_cpu()
        faults = None
        if a.kill and not inject:  # the fault run: kills as the images finish (benchmarks/scale/faults.py)
            faults = FaultPlan(parse_kills(a.kill), handles, where, out, n_images, replace_node=self.sim.replace_node)
        res = self.run_drivers([spec], a.timeout, faults=faults)[0]
        kills = faults.finish() if faults is not None else None
        stats = asyncio.run(role_stats(handles))
        others = cpu_delta(cpu0, tree_cpu())  # the cluster's processes (nodes, role actors); the driver has exited
        gpu_clocks = self.stop_roles(handles, tag)
        load_after = loadavg()
        row = self._figures(res, stats, concurrency, out, where)
        row.update(gpu_sharing=a.gpu_sharing, gpu_clocks=gpu_clocks, object_store=object_store_summary(self.store_samples),
                   kills=kills, kill_latency=in_flight_latency(res["images"], kills, res["t0_abs"]) if kills else None,
                   decisions=decisions(out, stats), checkpoint_contents=checkpoint_contents(out), concurrency=concurrency, placement=where, label=tag, load_before=load_before, load_after=load_after,
                   cprofile=cprofile, uptime=_uptime(),
                   cluster_cpu_ms_per_iteration=1000 * others / max(row["iterations"], 1),
                   cluster_busy_share=others / row["wall_s"] if row["wall_s"] else None)
        if not a.keep:
            shutil.rmtree(images, ignore_errors=True)
            shutil.rmtree(out, ignore_errors=True)
        return row

    def _figures(self, res: dict, stats: dict, concurrency: int, out: Path, where: list[dict]) -> dict:
        k = self.model.dilation
        fig = analysis.driver_figures(res, concurrency, folder_bytes(out))
        shared = (where, self.gpus_by_node()) if self.args.gpu_sharing == "time" else None
        ideal, path = analysis.ideal_for(self.cfg, self.model.with_dilation(1.0), stats, fig["done"], concurrency,
                                         time_shared=shared)
        real_steady = fig["images_per_s_regression"] * k
        little = fig["images_per_s_little"]
        path_s = sum(s.seconds for s in path)
        bound = ideal.bound if ideal.bound != "concurrency" else None
        fig.update(
            real_images_per_min_steady=60 * real_steady, real_images_per_min_whole=60 * fig["images_per_s_whole"] * k,
            ideal_images_per_min=60 * ideal.images_per_s, efficiency=real_steady / ideal.images_per_s,
            efficiency_middle_half=fig["images_per_s_steady"] * k / ideal.images_per_s,
            efficiency_little=(little * k / ideal.images_per_s) if little else None,
            # an image's latency against the critical path (real s): what the driver and the queues add per image
            latency_over_path=(fig["image_latency_mean_s"] / k) / path_s if fig["image_latency_mean_s"] and path_s else None,
            bottleneck_utilisation=_utilisation(analysis.role_summary(stats, res["wall_s"], k), bound),
            ideal=ideal.as_dict(), critical_path=[(s.name, s.seconds) for s in path],
            real_iteration_p50_s=(fig["iteration_p50_s"] or 0) / k, real_iteration_p99_s=(fig["iteration_p99_s"] or 0) / k,
            roles=analysis.role_summary(stats, res["wall_s"], k), role_stats=stats,
            report_banner=_banner(out))
        return fig

    # ------------------------------------------------------------------ two drivers
    def two_drivers(self, concurrency: int, n_images: int, seed: int) -> dict:
        from benchmarks.scale.roles import role_stats

        load_before = loadavg()
        specs, handles, where = self.start_roles("shared")
        barrier = self.work / "two-drivers.go"
        barrier.unlink(missing_ok=True)
        dspecs = []
        for job in (1, 2):
            images = make_images(self.work / f"images-job{job}", n_images, seed + job, job=job, side=self.args.image_side)
            dspecs.append(self.driver_spec(specs, "shared", images, self.work / f"out-job{job}", concurrency, barrier))
        results = self.run_drivers_with_barrier(dspecs, barrier)
        stats = asyncio.run(role_stats(handles))
        self.stop_roles(handles, "shared")
        jobs = []
        for spec, res in zip(dspecs, results):
            fig = analysis.driver_figures(res, concurrency, folder_bytes(Path(spec.out)))
            jobs.append({"out": spec.out, "done": fig["done"], "failed": fig["failed"], "wall_s": fig["wall_s"],
                         "start_abs": res["t0_abs"], "end_abs": res["t0_abs"] + res["wall_s"],
                         "report_banner": _banner(Path(spec.out)), "startup": fig["startup"]})
        roles = analysis.role_summary(stats, max(j["end_abs"] for j in jobs) - min(j["start_abs"] for j in jobs),
                                      self.model.dilation)
        row = {"concurrency_per_job": concurrency, "images_per_job": n_images, "jobs": jobs, "placement": where,
               "roles": roles, "role_stats": stats, "load_before": load_before, "load_after": loadavg(),
               "interleaved": interleaving(roles)}
        if not self.args.keep:
            for spec in dspecs:
                shutil.rmtree(spec.images, ignore_errors=True)
                shutil.rmtree(spec.out, ignore_errors=True)
        return row

    def run_drivers_with_barrier(self, specs: list[DriverSpec], barrier: Path) -> list[dict]:
        import threading

        def release():
            ready = [Path(s.result).with_suffix(".ready") for s in specs]
            deadline = time.monotonic() + self.args.timeout
            while not all(r.exists() for r in ready) and time.monotonic() < deadline:
                time.sleep(0.1)
            barrier.write_text("go")

        t = threading.Thread(target=release, daemon=True)
        t.start()
        return self.run_drivers(specs, self.args.timeout)


def interleaving(roles: dict) -> dict:
    """Per role replica: batches (engine admissions for chat) that held requests of both jobs, and items per job."""
    return {name: {"mixed": r["mixed"], "jobs": r["jobs"]} for name, r in roles.items()}


def _git() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        return head + (" (uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "?"


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _utilisation(roles: dict, role: Optional[str]) -> Optional[float]:
    """Mean busy share of ``role``'s replicas over the whole run (ramp and drain included, so below the
    steady value); None when the ideal is bound by the concurrency, not by a role."""
    if role is None:
        return None
    shares = [r["utilisation"] for name, r in roles.items() if name.split("[")[0] == role and r.get("utilisation") is not None]
    return statistics.fmean(shares) if shares else None


def _banner(out: Path) -> dict:
    html = (out / "report.html").read_text() if (out / "report.html").is_file() else ""
    return {"report_html": bool(html), "random_weight_banner": "random-weight models" in html,
            "simulation_profile": "SIMULATION" in html}


# ---------------------------------------------------------------------------- output

def fmt(v, spec=".1f"):
    return "–" if v is None else format(v, spec)


NODES = ["init", "generate", "describe", "diff", "propose", "select"]


def _node_table(title: str, rows: list[dict], per_node, cell) -> list[str]:
    """A table of one figure per graph node (``per_node(row)[name]``, formatted by ``cell``), one line per level."""
    out = ["", title, "", "| concurrency | " + " | ".join(NODES) + " |", "|---:|" + "---:|" * len(NODES)]
    for r in rows:
        per = per_node(r)
        out.append(f"| {r.get('label', r['concurrency'])} | " + " | ".join(cell(per[n]) if n in per else "–" for n in NODES) + " |")
    return out


def render(meta: dict, rows: list[dict], two: Optional[dict]) -> str:
    k = meta["dilation"]
    lines = [
        "SIMULATION — scale proof on a simulated cluster (python -m benchmarks.scale). No GPU, no model: the roles are",
        "latency-model stand-ins (noise images, fixed texts; the report banner flags them as random-weight roles).",
        f"date {meta['date']}, host {meta['host']} ({meta['cpus']} CPUs), git {meta['git']}, command: {meta['command']}",
        f"cluster: {meta['nodes']} (from cluster.yaml; CPU/GPU counts logical), roles: configs/gpu_cluster.yaml, "
        f"agent.max_steps={meta['max_steps']}, time dilation k={k} (latencies and batching waits × k; real = sim throughput × k), "
        f"latency scale ×{meta['latency_scale']}, config overrides {meta['overrides'] or 'none'}, "
        f"GPU sharing: {meta.get('gpu_sharing', 'partition')} ({GPU_SHARING_SAYS[meta.get('gpu_sharing', 'partition')]})",
        f"nothing listened off loopback: {not meta['off_loopback']} {meta['off_loopback'] or ''}",
        "",
        f"images {meta.get('image_side', 32)}×{meta.get('image_side', 32)} px, N = {meta.get('images_per_concurrency', 2)} × C; steady rate = least-squares slope of completions C+1..N−C over time "
        "(old: rate between the N/4-th and 3N/4-th completion; Little: C ÷ mean latency of the images inside the window)",
        f"injected per graph node in the driver: {meta.get('injected') or 'nothing'}",
        "",
        "| concurrency | images | sim wall s | images/min (real, steady) | ideal images/min | efficiency | efficiency (old window) | efficiency (Little) "
        "| bound | bottleneck busy | latency ÷ critical path | orchestration ms/iter (driver clock) | driver share of an image's latency | iteration p50 / p99 (real s) "
        "| driver CPU ms/iter | driver busy | cluster CPU ms/iter | RSS per in-flight KB | checkpoint KB/image | writer ms/image: record / flush / captions | load avg before → after |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        w = r["writer"]
        lines.append(
            f"| {r.get('label', r['concurrency'])} | {r['done']} ({r['failed']} failed) | {r['wall_s']:.0f} | {r['real_images_per_min_steady']:.2f} "
            f"| {r['ideal_images_per_min']:.2f} | {r['efficiency']:.3f} | {fmt(r.get('efficiency_middle_half'), '.3f')} "
            f"| {fmt(r.get('efficiency_little'), '.3f')} | {r['ideal']['bound']} | {fmt(r.get('bottleneck_utilisation'), '.2f')} "
            f"| {fmt(r.get('latency_over_path'), '.2f')} | {fmt((r.get('orchestration') or {}).get('ms_per_iteration'), '.1f')} "
            f"| {fmt(100 * r['driver_share_of_latency'] if r.get('driver_share_of_latency') is not None else None, '.1f')}% "
            f"| {r['real_iteration_p50_s']:.0f} / {r['real_iteration_p99_s']:.0f} | {r['driver_cpu_ms_per_iteration']:.1f} "
            f"| {100 * r['driver_busy_share']:.0f}% | {r['cluster_cpu_ms_per_iteration']:.1f} | {r['rss_per_inflight_kb']:.0f} | {r['checkpoint_bytes_per_image'] / 1024:.0f} "
            f"| {w['BatchWriter.record']['wall_ms_per_image']:.1f} / {w['BatchWriter.flush']['wall_ms_per_image']:.1f} / "
            f"{w['Captions.write']['wall_ms_per_image']:.1f} | {r['load_before'][0]} → {r['load_after'][0]} |")
    lines += ["", "Batch sizes the roles saw (mean / max; chat: sequences running at once, mean / max) and utilisation:", "",
              "| concurrency | " + " | ".join(rows[0]["roles"]) + " |" if rows else "",
              "|---:|" + "---|" * len(rows[0]["roles"]) if rows else ""]
    for r in rows:
        cells = []
        for name, s in r["roles"].items():
            if "mean_batch" in s:
                cells.append(f"{s['mean_batch']:.1f} / {s['max_batch']} ({100 * (s['utilisation'] or 0):.0f}%)")
            else:
                cells.append(f"{s['mean_running']:.1f} / {s['max_running']} ({100 * (s['utilisation'] or 0):.0f}%)")
        lines.append(f"| {r.get('label', r['concurrency'])} | " + " | ".join(cells) + " |")
    if rows and all(r.get("nodes") for r in rows):
        lines += _node_table("Time per graph node, including waits in the roles' queues (real s, p50 / p99):", rows,
                             lambda r: r["nodes"], lambda v: f"{v['p50_s'] / k:.1f} / {v['p99_s'] / k:.1f}")
    if rows and all(r.get("orchestration") for r in rows):
        lines += _node_table("The driver's own time per graph node (node wall − waiting on roles; driver clock, ms, p50 / mean):",
                             rows, lambda r: r["orchestration"]["per_node"], lambda v: f"{v['p50_ms']:.1f} / {v['mean_ms']:.1f}")
    if rows and any((r.get("traced") or {}).get("per_inflight_kb") is not None for r in rows):
        lines += ["", "The driver's Python allocations (tracemalloc) while C were in flight: per optimisation in flight, and the "
                      "growth per finished image (a least-squares slope; near 0: finished images leave nothing behind), "
                      "split into what the benchmark's own code holds (its samples and per-image timings, from a snapshot "
                      "at the start and the end) and the rest, the batch job's:", "",
                  "| concurrency | samples | start MB | median MB | peak MB | KB per in-flight | KB per finished image | "
                  "of which the harness's | the job's |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            t = r.get("traced") or {}
            if t.get("per_inflight_kb") is not None:
                lines.append(f"| {r.get('label', r['concurrency'])} | {t['samples']} | {t['start_mb']:.1f} | {t['median_mb']:.1f} "
                             f"| {t['peak_mb']:.1f} | {t['per_inflight_kb']:.0f} | {fmt(t['per_finished_kb'], '.2f')} "
                             f"| {fmt(t.get('harness_per_finished_kb'), '.2f')} | {fmt(t.get('job_per_finished_kb'), '.2f')} |")
    if rows:
        by = "pixel arrays on every call (--images-by-value)" if meta.get("images_by_value") else \
            "object references (actors/object_refs.py)"
        lines += ["", f"Images to the roles as {by}; the driver's memory (RSS) while C were in flight:", "",
                  "| concurrency | RSS start MB | RSS peak MB | RSS per in-flight KB | images the driver put | references reused |",
                  "|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            refs = r.get("image_refs") or {}
            lines.append(f"| {r.get('label', r['concurrency'])} | {r['rss0_mb']:.0f} | {r['rss_peak_full_mb']:.0f} "
                         f"| {r['rss_per_inflight_kb']:.0f} | {refs.get('puts', '–')} | {refs.get('reused', '–')} |")
        if all(r.get("rss_split") for r in rows):
            lines += ["", "Resident memory by kind (/proc/self/status; shared = Ray's object-store pages the driver mapped, "
                          "the store's memory, not the driver's): start → peak MB, growth per optimisation in flight KB:", "",
                      "| concurrency | anonymous (heap) | file-backed | shared (object store) |", "|---:|---|---|---|"]
            for r in rows:
                cells = [f"{v['start_mb']:.0f} → {v['peak_mb']:.0f} MB, {v['per_inflight_kb']:.0f} KB"
                         for v in (r["rss_split"][k] for k in ("RssAnon", "RssFile", "RssShmem"))]
                lines.append(f"| {r.get('label', r['concurrency'])} | " + " | ".join(cells) + " |")
    if rows and any(r.get("kills") for r in rows):
        k = meta["dilation"]
        lines += ["", f"Faults (SIGKILL of a replica's process, or its whole node lost and replaced; stand-in model load {meta.get('load_s', 0)} s real = "
                      f"{meta.get('load_s', 0) * k:.1f} s sim): recovery = kill until the restarted replica answers, in sim "
                      "(wall) seconds — the load is dilated, Ray's process restart is not; images in flight at a kill against "
                      "the others (median latency, real s); calls re-sent = calls the role client sent again while Ray said "
                      "their actor was unreachable (role_call_resends_total, the level's total by role):", "",
                  "| level | role:replica | at images finished | recovery sim s | new pid | failed images | calls re-sent | in-flight images: median latency vs others |",
                  "|---|---|---:|---:|---:|---:|---|---|"]
        for r in rows:
            lat = r.get("kill_latency") or {}
            for kr in r.get("kills") or []:
                extra = (f"{lat['hit_median_s'] / k:.0f} vs {lat['rest_median_s'] / k:.0f} ({lat['hit']} vs {lat['rest']} images)"
                         if lat.get("hit_median_s") is not None else "–")
                rec = kr.get("recovery_s")
                what, new = f"{kr['role']}:{kr['replica']}", kr.get("new_pid", "–")
                if kr.get("node"):  # a node lost and replaced: every replica it hosted
                    what = f"node of {what} ({', '.join(kr.get('hosted') or [])})"
                    replaced = kr.get("replaced") or {}
                    new = (f"node {str(replaced.get('added', '?'))[:8]} (+{replaced.get('add_s', 0):.1f} s real to start)"
                           if replaced else kr.get("error", "–"))
                resent = ", ".join(f"{role} {n:.0f}" for role, n in sorted((r.get("resends") or {}).items())) or "0"
                lines.append(f"| {r.get('label')} | {what} | {kr.get('images_finished', '–')} / {kr.get('of', '–')} "
                             f"| {fmt(rec, '.1f')} | {new} | {r['failed']} | {resent} | {extra} |")
        lines += ["", "In a level with kills the efficiency above is not meaningful: a restarted replica's work counters start "
                      "from zero, so the per-image work the ideal is computed from is undercounted; compare the throughput "
                      "with the same level's fault-free ideal."]
    if rows and (meta.get("reject_share") or meta.get("unreadable_share")):
        lines += ["", f"Stand-ins that say no (--reject-share {meta['reject_share']}, --unreadable-share {meta['unreadable_share']}): "
                      "why images stopped, candidates' fate (Algorithm 8), re-asks:", "",
                  "| concurrency | iterations per image | stop reasons | candidates | re-asks |", "|---:|---:|---|---|---:|"]
        for r in rows:
            d = r.get("decisions") or {}
            lines.append(f"| {r.get('label', r['concurrency'])} | {fmt(d.get('iterations_per_image'), '.2f')} "
                         f"| {', '.join(f'{k} {v}' for k, v in sorted(d.get('stop_reasons', {}).items()))} "
                         f"| {', '.join(f'{k} {v}' for k, v in sorted(d.get('candidate_outcomes', {}).items()))} | {d.get('reasks', 0)} |")
    if rows and all((r.get("object_store") or {}).get("samples") for r in rows):
        lines += ["", "Object store, whole cluster (Ray's store statistics, as `ray memory --stats-only`; sampled while the driver ran):", "",
                  "| concurrency | samples | peak in use MB | peak objects | spilled MB (objects) | capacity MB |", "|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            o = r["object_store"]
            lines.append(f"| {r.get('label', r['concurrency'])} | {o['samples']} | {o['peak_used_mb']:.1f} | {o['peak_objects']} "
                         f"| {o['spilled_mb']:.1f} ({o['spilled_objects']}) | {o['capacity_mb']:.0f} |")
    if rows:
        lines += ["", "Placement (each replica reports its node):", "", "| level | role | replica | node type | node |", "|---|---|---:|---|---|"]
        for r in rows:
            for p in r["placement"]:
                lines.append(f"| c={r['concurrency']} | {p['role']} | {p['replica']} | {p['node_type']} | {p['node_id'][:8]} |")
        r = rows[-1]
        lines += ["", f"Ideal at c={r['concurrency']} (real time): critical path {r['ideal']['critical_path_s']:.1f} s; role capacities:"]
        for c in r["ideal"]["capacities"]:
            lines.append(f"- {c['role']}: {c['replicas']} replica(s) × {c['share']} GPU, {c['busy_s_per_image']:.2f} GPU-s per image "
                         f"→ {60 * c['images_per_s']:.1f} images/min ({c['note']})")
        shared = r["ideal"].get("shared")
        if shared:  # --gpu-sharing time: the bound over the placement (time_shared_ideal.py)
            lines += ["", f"Time-shared GPUs (placement above): role bound {60 * shared['images_per_s']:.2f} images/min, "
                          f"bound by {shared['bound']}; at that rate each node's GPU would be busy "
                      + ", ".join(f"{n[:8]} {load:.2f}" for n, load in shared["node_load"].items())
                      + "; best split of each role's images over its nodes: "
                      + "; ".join(f"{role} " + ", ".join(f"{n[:8]} {f:.2f}" for n, f in split.items())
                                  for role, split in shared["split"].items())]
        if r.get("gpu_clocks"):
            lines.append("Node GPU clocks (measured): " + "; ".join(
                f"{g['node_id'][:8]} {g['calls']} calls, busy {g['busy_s'] / r['wall_s']:.2f} of the run, at most "
                f"{g['max_running']} at once" for g in r["gpu_clocks"]))
    if two:
        lines += ["", f"Two drivers, one set of shared named role actors: {two['images_per_job']} images each, concurrency "
                      f"{two['concurrency_per_job']} each", ""]
        for j in two["jobs"]:
            lines.append(f"- {Path(j['out']).name}: {j['done']} done, {j['failed']} failed, wall {j['wall_s']:.1f} s, "
                         f"report banner {j['report_banner']['random_weight_banner']}")
        lines += ["", "| role replica | batches holding both jobs | items per job |", "|---|---:|---|"]
        for name, v in two["interleaved"].items():
            lines.append(f"| {name} | {v['mixed']} | {v['jobs']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="CI size: concurrency 4, 32 images, max_steps 2, plainly and with 2 s injected per node; "
                                                      "then two 16-image drivers")
    p.add_argument("--concurrency", default="1,64,256,1024,4096")
    p.add_argument("--images-per-concurrency", type=float, default=8.0,
                   help="images N = this × concurrency C (at least 2); the steady window is completions C+1..N−C")
    p.add_argument("--inject-cpu-ms", type=float, default=0.0,
                   help="fault check: burn this much CPU in the driver per graph node (driver clock, not dilated)")
    p.add_argument("--inject-wait-s", type=float, default=0.0,
                   help="fault check: wait this long per graph node in the driver (real seconds; × k on the sim clock)")
    p.add_argument("--inject-compare", action="store_true",
                   help="run every level twice: plainly, then with the --inject-* costs (same images and seed)")
    p.add_argument("--image-side", type=int, default=32,
                   help="side of the reference and generated images in pixels (512: gpu_cluster.yaml's SD1.5 size)")
    p.add_argument("--store-every", type=float, default=5.0, help="seconds between object-store samples")
    p.add_argument("--images-by-value", action="store_true",
                   help="comparison: the graph hands the roles pixel arrays (Ray puts them into the store on every call) "
                        "instead of object references put once per optimisation (actors/object_refs.py)")
    p.add_argument("--object-store-mb", type=int, default=80,
                   help="object store of each simulated node in MB (a small one makes Ray spill to disk)")
    p.add_argument("--tracemalloc", action="store_true",
                   help="trace the driver's Python allocations (a memory run: tracing slows the driver)")
    p.add_argument("--max-steps", type=int, default=3)
    p.add_argument("--kill", default="",
                   help="faults: '[node:]role:replica@fraction,...' — SIGKILL that replica's process once that fraction "
                        "of the level's images is finished; node: lose the whole node hosting it and add a fresh one of its "
                        "type (e.g. t2i:0@0.25,vlm:0@0.5,node:t2i:1@0.75; benchmarks/scale/faults.py)")
    p.add_argument("--load-s", type=float, default=0.0,
                   help="each stand-in's model load in real seconds (× k), also when Ray restarts a killed replica")
    p.add_argument("--reject-share", type=float, default=0.0,
                   help="share of the stand-in LLM's fragments that CLIP's stand-in scores lower (Algorithm 8 drops them; an "
                        "iteration with no other candidate stops the image): 0 keeps every candidate")
    p.add_argument("--unreadable-share", type=float, default=0.0,
                   help="share of proposal requests the stand-in LLM first answers with prose (the agent re-asks)")
    p.add_argument("--dilation", type=float, default=0.05, help="time dilation k: every latency-model cost and batching wait × k")
    p.add_argument("--gpu-sharing", choices=("partition", "time"), default="partition",
                   help="how roles on one GPU share it: partition (each runs at its num_gpus share wherever it lands) or "
                        "time (the processes on a node's GPU time-slice it: alone a replica runs at full speed; "
                        "benchmarks/scale/gpu_clock.py), with the ideal from the placement Ray chose")
    p.add_argument("--latency-scale", default="1", help="sensitivity: every latency-model cost × this, or per role: 'llm=2,vlm=2'")
    p.add_argument("--gpu-large-nodes", type=int, default=2)
    p.add_argument("--gpu-small-nodes", type=int, default=2)
    p.add_argument("--two-drivers", default="64:128", help="'C:N': two jobs of N images at concurrency C each; 'none' to skip")
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "gpu_cluster.yaml")
    p.add_argument("--set", action="append", default=[], help="extra config override key=value (after the benchmark's own)")
    p.add_argument("--work", type=Path, default=None, help="work folder (default: a new temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep images and output folders")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--txt", type=Path, default=None)
    p.add_argument("--cprofile", default="", help="comma-separated concurrencies whose driver runs under cProfile (file in --work)")
    p.add_argument("--timeout", type=float, default=7200.0, help="seconds one level may take")
    a = p.parse_args(argv)
    if a.quick:  # below the saturation point, where the driver's overhead shows, plainly and with 2 s injected per node
        a.concurrency, a.images_per_concurrency, a.max_steps = "4", 8.0, 2
        a.inject_compare, a.inject_wait_s = True, a.inject_wait_s or 2.0
        a.two_drivers = "8:16" if a.two_drivers == "64:128" else a.two_drivers
        a.dilation = 0.02 if a.dilation == 0.05 else a.dilation
    a.cprofile = {int(c) for c in a.cprofile.split(",") if c.strip()}
    levels = [int(c) for c in a.concurrency.split(",") if c.strip()]
    work = a.work or Path(tempfile.mkdtemp(prefix="expectdiff-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    run = Run(a, work)
    rows, two = [], None
    try:
        for i, c in enumerate(levels):
            n = max(2, int(round(a.images_per_concurrency * c)))
            print(f"[scale] concurrency {c}: {n} images (load {loadavg()}) ...", file=sys.stderr, flush=True)
            injecting = bool(a.inject_cpu_ms or a.inject_wait_s)
            for inject in ((False, True) if a.inject_compare and injecting else (injecting,)):
                rows.append(run.level(c, n, seed=1000 + i, inject=inject))
                r = rows[-1]
                print(f"[scale]   {r['label']}: {r['real_images_per_min_steady']:.2f} images/min real, efficiency {r['efficiency']:.3f}, "
                      f"orchestration {fmt((r.get('orchestration') or {}).get('ms_per_iteration'))} ms/iter, "
                      f"driver CPU {r['driver_cpu_ms_per_iteration']:.1f} ms/iter, wall {r['wall_s']:.0f} s", file=sys.stderr, flush=True)
        if a.two_drivers != "none":
            c, n = (int(x) for x in a.two_drivers.split(":"))
            print(f"[scale] two drivers: {n} images each at concurrency {c} ...", file=sys.stderr, flush=True)
            two = run.two_drivers(c, n, seed=5000)
    finally:
        run.close()
        if not a.keep and a.work is None:
            shutil.rmtree(work, ignore_errors=True)
    meta = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "host": platform.node(), "cpus": os.cpu_count(),
            "command": "python -m benchmarks.scale " + " ".join(argv if argv is not None else sys.argv[1:]),
            "nodes": run.sim.counts, "overrides": a.set, "dilation": a.dilation, "latency_scale": parse_scale(a.latency_scale), "max_steps": a.max_steps, "gpu_sharing": a.gpu_sharing,
            "off_loopback": sorted(run.off_loopback), "cluster_start_s": run.cluster_start_s, "git": _git(),
            "latency_model": run.model.as_dict(), "sources": SOURCES,
            "images_per_concurrency": a.images_per_concurrency, "image_side": a.image_side,
            "object_store_mb_per_node": a.object_store_mb, "images_by_value": a.images_by_value,
            "reject_share": a.reject_share, "unreadable_share": a.unreadable_share, "kill": a.kill, "load_s": a.load_s,
            "injected": {"cpu_ms_per_node": a.inject_cpu_ms, "wait_real_s_per_node": a.inject_wait_s}}
    text = render(meta, rows, two)
    print(text)
    if a.txt:
        a.txt.write_text(text + "\n")
    if a.json:
        a.json.write_text(json.dumps({"meta": meta, "levels": rows, "two_drivers": two}, indent=1, default=str))
    ok = all(r["failed"] == 0 for r in rows) and (two is None or all(j["failed"] == 0 for j in two["jobs"]))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
