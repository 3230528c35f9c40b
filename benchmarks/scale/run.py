"""The simulated cluster and one concurrency level's run on it (SIMULATION; ``python -m benchmarks.scale``).

``Run`` starts a multi-node Ray on this machine shaped like cluster.yaml (benchmarks/scale/cluster.py), starts the
latency-model stand-in roles per level (benchmarks/scale/roles.py), runs each batch job's driver in a process of
its own (benchmarks/scale/driver.py) and turns what they measured into a level's figures
(benchmarks/scale/analysis.py). ``benchmarks.scale.train_beside`` drives one too."""
from __future__ import annotations

import asyncio
import json
import os
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from benchmarks.scale import analysis
from benchmarks.scale.cluster import classify_nodes, listeners_off_loopback, start_cluster
from benchmarks.scale.driver import DriverSpec
from benchmarks.scale.faults import FaultPlan, in_flight_latency, parse_kills
from benchmarks.scale.latency import LatencyModel, default_model
from benchmarks.scale.level_outputs import (bottleneck_busy, checkpoint_contents, decisions, folder_bytes, interleaving,
                                            report_banner)
from benchmarks.scale.machine import cpu_delta, loadavg, tree_cpu, uptime
from benchmarks.scale.object_store import store_stats
from benchmarks.scale.object_store import summary as object_store_summary
from benchmarks.scale.standins import Behaviour, tag_image

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "expectdiff-scale"
PROFILE = ("SIMULATION (python -m benchmarks.scale): configs/gpu_cluster.yaml placement on a simulated cluster; "
           "every role is a latency-model stand-in (noise images, fixed texts)")
STANDIN_README = ("These folders are not models. benchmarks/scale points the config's model fields here so that the "
                  "batch report flags every role as random-weight: the roles were latency-model stand-ins returning "
                  "noise images and fixed texts.\n")


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
                   cprofile=cprofile, uptime=uptime(),
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
            bottleneck_utilisation=bottleneck_busy(analysis.role_summary(stats, res["wall_s"], k), bound),
            ideal=ideal.as_dict(), critical_path=[(s.name, s.seconds) for s in path],
            real_iteration_p50_s=(fig["iteration_p50_s"] or 0) / k, real_iteration_p99_s=(fig["iteration_p99_s"] or 0) / k,
            roles=analysis.role_summary(stats, res["wall_s"], k), role_stats=stats,
            report_banner=report_banner(out))
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
                         "report_banner": report_banner(Path(spec.out)), "startup": fig["startup"]})
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
