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
import datetime
import json
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.scale.latency import SOURCES  # noqa: E402
from benchmarks.scale.machine import git_head, loadavg  # noqa: E402
from benchmarks.scale.render import fmt, render  # noqa: E402
from benchmarks.scale.run import Run, parse_scale  # noqa: E402


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
            "off_loopback": sorted(run.off_loopback), "cluster_start_s": run.cluster_start_s, "git": git_head(),
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
