"""Where the CPU goes: CPU-seconds per ARPO iteration for each role, the driver and Ray itself.

    python benchmarks/cpu_accounting.py [--config configs/offline.yaml] [--images 32]
        [--concurrency 1,8,32] [--baseline-images 2] [--set key=value ...] [--out docs/benchmarks/cpu_accounting_before]

A thin layer over benchmarks/arpo_throughput.py: the same Ray start, the same five role
actors started once, the same images and ``run_once`` per concurrency. Around each run it
snapshots the CPU time (user + system, from /proc via psutil) of every process in this
driver's process tree, grouped as:

- one group per role: the role actor's process (found by its Ray process title,
  ``ray::<ServerClass>``) and all its descendants (a vLLM engine's ``EngineCore`` process);
- ``driver``: this process alone (LangGraph, the checkpointer, serialisation, results);
- ``ray``: every other descendant of this process: gcs_server, raylet, the log monitor,
  idle and prestarted workers;
- ``other (not ours)``: the machine's busy CPU time minus all of the above (the other jobs
  sharing the machine), so a figure can be read against the load it was taken under.

Each process counts its own time plus the time of children it has reaped
(``children_user``/``children_system``), so a child that exits between the two snapshots is
still counted. The deltas are divided by the iterations of the run (generate steps recorded
in results.jsonl, as arpo_throughput counts them). The load average is recorded before and
after each run. With the offline profile every model except the LLM (SmolLM2-135M) is a tiny
random-weight model: the outputs are meaningless, the CPU figures measure this machine's
plumbing and serving of those models.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterable, Mapping

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.arpo_throughput import DEFAULT_OVERRIDES, level_images, run_once  # noqa: E402

#: Ray process title prefix of each role actor (``ray::T2IServer`` or ``ray::T2IServer.generate``).
ROLE_TITLES = {"T2IServer": "t2i", "LLMServer": "llm", "VLMServer": "vlm", "CaptionerServer": "captioner",
               "ClipServer": "clip", "ChatGroupServer": "llm+vlm"}
GROUPS = ("t2i", "llm", "vlm", "captioner", "clip", "llm+vlm", "driver", "ray")


# --------------------------------------------------------------------------- process-tree accounting

@dataclasses.dataclass(frozen=True)
class ProcInfo:
    """What one snapshot keeps of a process: its CPU seconds and where it sits in the tree."""

    pid: int
    ppid: int
    title: str
    cpu_s: float  # own user + system, plus reaped children's


def role_of_title(title: str) -> str | None:
    """``ray::VLMServer.chat ...`` -> ``vlm``; None for any other process."""
    if not title.startswith("ray::"):
        return None
    cls = title[5:].split()[0].split(".")[0] if len(title) > 5 else ""
    return ROLE_TITLES.get(cls)


def classify(procs: Mapping[int, ProcInfo], driver_pid: int) -> dict[int, str]:
    """Group of every process under ``driver_pid`` (itself included): the role of its nearest
    role-actor ancestor (or itself), ``driver`` for the driver, ``ray`` for the rest."""
    children: dict[int, list[int]] = {}
    for p in procs.values():
        children.setdefault(p.ppid, []).append(p.pid)
    groups: dict[int, str] = {}
    stack = [(driver_pid, "driver")]
    while stack:
        pid, inherited = stack.pop()
        if pid not in procs:
            continue
        own = role_of_title(procs[pid].title)
        group = own or ("driver" if pid == driver_pid else ("ray" if inherited == "driver" else inherited))
        groups[pid] = group
        for c in children.get(pid, ()):
            stack.append((c, group))
    return groups


def group_totals(procs: Mapping[int, ProcInfo], groups: Mapping[int, str]) -> dict[str, float]:
    totals = {g: 0.0 for g in GROUPS}
    for pid, g in groups.items():
        totals[g] = totals.get(g, 0.0) + procs[pid].cpu_s
    return totals


def take_snapshot(driver_pid: int | None = None) -> dict:
    """CPU seconds per group now, the machine's busy CPU seconds, the load average."""
    import psutil

    driver_pid = driver_pid or os.getpid()
    procs: dict[int, ProcInfo] = {}
    root = psutil.Process(driver_pid)
    for p in [root] + root.children(recursive=True):
        try:
            with p.oneshot():
                t = p.cpu_times()
                title = " ".join(p.cmdline()) or p.name()
                procs[p.pid] = ProcInfo(p.pid, p.ppid(), title, t.user + t.system + t.children_user + t.children_system)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    # The driver's own time only: its reaped children are Ray's processes, not the driver's work.
    t = root.cpu_times()
    procs[driver_pid] = dataclasses.replace(procs[driver_pid], cpu_s=t.user + t.system)
    groups = classify(procs, driver_pid)
    m = psutil.cpu_times()
    machine_busy = sum(getattr(m, f) for f in m._fields if f not in ("idle", "iowait", "guest", "guest_nice"))
    return {"groups": group_totals(procs, groups), "machine_busy_s": machine_busy, "loadavg": list(os.getloadavg()),
            "processes": {str(pid): {"group": groups[pid], "title": procs[pid].title[:80], "cpu_s": round(procs[pid].cpu_s, 3),
                                     "threads": top_threads(pid)} for pid in groups}}


def top_threads(pid: int, n: int = 6) -> list:
    """The ``n`` busiest threads of a process so far: [name, CPU seconds] (Linux /proc; [] elsewhere)."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    rows = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
                fields = stat[stat.rindex(")") + 2:].split()
                name = stat[stat.index("(") + 1:stat.rindex(")")]
                rows.append([name, (int(fields[11]) + int(fields[12])) / tick])
            except (OSError, ValueError, IndexError):
                continue
    except OSError:
        return []
    return sorted(rows, key=lambda r: -r[1])[:n]


def account(before: dict, after: dict, iterations: int) -> dict:
    """Per group: CPU seconds spent between two snapshots, per iteration, and share of our total;
    ``other (not ours)`` is the machine's busy time not spent by our processes."""
    delta = {g: after["groups"].get(g, 0.0) - before["groups"].get(g, 0.0) for g in set(before["groups"]) | set(after["groups"])}
    delta = {g: v for g, v in delta.items() if v > 0 or g in GROUPS[:5] + ("driver", "ray")}
    ours = sum(delta.values())
    other = max(0.0, (after["machine_busy_s"] - before["machine_busy_s"]) - ours)
    n = max(iterations, 1)
    rows = {g: {"cpu_s": v, "cpu_s_per_iter": v / n, "share": v / ours if ours else 0.0} for g, v in delta.items()}
    return {"iterations": iterations, "ours_cpu_s": ours, "ours_cpu_s_per_iter": ours / n, "rows": rows,
            "other_cpu_s": other, "loadavg_before": before["loadavg"], "loadavg_after": after["loadavg"]}


async def chat_tokens(roles) -> dict:
    """Prompt and completion tokens each chat role has processed so far (its server's counters)."""
    out = {}
    for role in ("llm", "vlm"):
        stats = await getattr(roles, role).broadcast("stats")
        out[role] = {k: sum(s.get(k, 0) for s in stats) for k in ("calls", "prompt_tokens", "completion_tokens")}
    return out


def tokens_per_iter(before: dict, after: dict, iterations: int) -> dict:
    n = max(iterations, 1)
    return {role: {k: (after[role][k] - before[role][k]) / n for k in after[role]} for role in after}


def process_deltas(before: dict, after: dict, iterations: int) -> dict:
    """CPU-s per iteration of each role's processes between two snapshots, keyed ``group: title``
    (a process born in between counts from zero)."""
    out: dict[str, float] = {}
    for pid, p in after["processes"].items():
        if p["group"] in ("driver", "ray"):
            continue
        was = before["processes"].get(pid)
        key = f"{p['group']}: {p['title'].split()[0] if p['title'].strip() else '?'}"
        out[key] = out.get(key, 0.0) + (p["cpu_s"] - (was["cpu_s"] if was else 0.0)) / max(iterations, 1)
    return dict(sorted(out.items()))


def largest_share(acc: dict) -> tuple[str, float]:
    g = max(acc["rows"], key=lambda k: acc["rows"][k]["cpu_s"])
    return g, acc["rows"][g]["share"]


def format_table(results: Iterable[dict]) -> str:
    results = list(results)
    groups = [g for g in GROUPS if any(g in r["cpu"]["rows"] for r in results)]
    base = next((r["images_per_min"] for r in results if r["concurrency"] == 1), None)
    head = ("| concurrency | images | iterations | wall s | images/min | vs c=1 | " + " | ".join(f"{g} CPU-s/iter" for g in groups)
            + " | ours CPU-s/iter | largest | other jobs CPU-s | load avg (1 min) before → after |")
    lines = [head, "|" + "---:|" * (6 + len(groups) + 1) + "---|---:|---|"]
    for r in results:
        ratio = f"{r['images_per_min'] / base:.2f}×" if base else "–"
        c = r["cpu"]
        big, share = largest_share(c)
        cells = " | ".join(f"{c['rows'][g]['cpu_s_per_iter']:.2f} ({100 * c['rows'][g]['share']:.0f}%)" if g in c["rows"] else "–" for g in groups)
        lines.append(f"| {r['concurrency']} | {r['images']} ({r['failed']} failed) | {c['iterations']} | {r['wall_s']:.0f} | {r['images_per_min']:.2f} | {ratio} "
                     f"| {cells} | {c['ours_cpu_s_per_iter']:.2f} | {big} {100 * share:.0f}% | {c['other_cpu_s']:.0f} "
                     f"| {c['loadavg_before'][0]:.2f} → {c['loadavg_after'][0]:.2f} |")
    return "\n".join(lines)


def compare(before: dict, after: dict) -> str:
    """Before/after table from two JSON files this script wrote: CPU-s per iteration per group and
    concurrency, and each run's role processes (for a run without the per-process split, the
    difference of consecutive runs' process totals)."""
    def split(doc: dict) -> dict:
        out, prev = {}, None
        for r in doc["runs"]:
            if "process_cpu_s_per_iter" in r:
                out[r["concurrency"]] = r["process_cpu_s_per_iter"]
            elif prev is not None:
                out[r["concurrency"]] = process_deltas({"processes": prev}, {"processes": r["processes_after"]}, r["cpu"]["iterations"])
            prev = r["processes_after"]
        return out

    runs_b = {r["concurrency"]: r for r in before["runs"]}
    runs_a = {r["concurrency"]: r for r in after["runs"]}
    groups = [g for g in GROUPS if any(g in r["cpu"]["rows"] for r in list(runs_b.values()) + list(runs_a.values()))]
    lines = ["| concurrency | CPU-s per iteration | " + " | ".join(groups) + " | ours | images/min | other jobs CPU-s / ours |",
             "|---:|---|" + "---:|" * (len(groups) + 3)]
    for c in sorted(set(runs_b) & set(runs_a)):
        for name, r in (("before", runs_b[c]), ("after", runs_a[c])):
            cpu = r["cpu"]
            lines.append(f"| {c} | {name} | " + " | ".join(f"{cpu['rows'][g]['cpu_s_per_iter']:.2f}" if g in cpu["rows"] else "–" for g in groups)
                         + f" | {cpu['ours_cpu_s_per_iter']:.2f} | {r['images_per_min']:.2f} | {cpu['other_cpu_s'] / max(cpu['ours_cpu_s'], 1e-9):.1f} |")
        b, a = runs_b[c]["cpu"], runs_a[c]["cpu"]
        lines.append(f"| {c} | after / before | " + " | ".join(
            f"{a['rows'][g]['cpu_s_per_iter'] / b['rows'][g]['cpu_s_per_iter']:.2f}" if g in a["rows"] and g in b["rows"] and b["rows"][g]["cpu_s_per_iter"] else "–"
            for g in groups) + f" | {a['ours_cpu_s_per_iter'] / b['ours_cpu_s_per_iter']:.2f} | {runs_a[c]['images_per_min'] / runs_b[c]['images_per_min']:.2f} | |")
    for name, doc in (("before", before), ("after", after)):
        for c, procs in split(doc).items():
            lines.append(f"\n{name}, c={c}, role processes CPU-s per iteration: "
                         + ", ".join(f"{k} {v:.2f}" for k, v in procs.items() if v >= 0.005))
    return "\n".join(lines)


# --------------------------------------------------------------------------- the run

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "configs" / "offline.yaml"))
    p.add_argument("--set", action="append", default=[], help="extra config override (after the benchmark's own)")
    p.add_argument("--images", type=int, default=32, help="images for every concurrency above 1")
    p.add_argument("--baseline-images", type=int, default=2, help="images for concurrency 1")
    p.add_argument("--concurrency", default="1,8,32")
    p.add_argument("--idle-s", type=float, default=20.0, help="also measure the roles idle for this long after start-up (0: skip)")
    p.add_argument("--out", type=Path, default=None, help="write OUT.json and OUT.txt")
    p.add_argument("--label", default="", help="a line saying what this run is (e.g. 'before', 'after: ...')")
    p.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE.json", "AFTER.json"),
                   help="print (and with --out write OUT.txt) the before/after table of two earlier runs; runs nothing")
    a = p.parse_args(argv)
    if a.compare:
        text = compare(*(json.loads(f.read_text()) for f in a.compare))
        text = (f"command: python benchmarks/cpu_accounting.py {' '.join(argv if argv is not None else sys.argv[1:])}\n"
                f"before: {a.compare[0]}, after: {a.compare[1]}\n\n{text}")
        print(text)
        if a.out:
            a.out.with_suffix(".txt").write_text(text + "\n")
        return 0
    levels = [int(c) for c in a.concurrency.split(",")]

    from actors.ray_actors import start_roles, stop_roles, wait_ready
    from agents.config import ArpoConfig
    from core.config import load_config
    from core.ray_config import init_ray

    overrides = DEFAULT_OVERRIDES + a.set
    cfg = load_config(ArpoConfig, a.config, overrides)
    init_ray(cfg.ray)
    roles = start_roles(cfg)
    t0 = time.perf_counter()
    clients = [getattr(roles, f.name) for f in dataclasses.fields(roles)]
    asyncio.run(wait_ready(*clients))
    startup_s = time.perf_counter() - t0
    print(f"roles ready in {startup_s:.0f} s", file=sys.stderr)
    snap = take_snapshot()
    found = sorted({v["group"] for v in snap["processes"].values()} - {"driver", "ray"})
    print(f"role processes found: {found}", file=sys.stderr)
    idle = None
    if a.idle_s > 0:
        time.sleep(5)  # let start-up settle
        s0 = take_snapshot()
        time.sleep(a.idle_s)
        s1 = take_snapshot()
        idle = account(s0, s1, 1)
        idle["seconds"] = a.idle_s
    work = Path(tempfile.mkdtemp(prefix="cpu-acct-"))
    results = []
    try:
        for c in levels:
            image_dir = level_images(work, c, a.images, a.baseline_images)
            tokens0 = asyncio.run(chat_tokens(roles))
            before = take_snapshot()
            row = asyncio.run(run_once(cfg, roles, image_dir, work / f"out-c{c}", c))
            after = take_snapshot()
            row["cpu"] = account(before, after, row["iterations"])
            row["chat_tokens_per_iter"] = tokens_per_iter(tokens0, asyncio.run(chat_tokens(roles)), row["iterations"])
            row["processes_after"] = after["processes"]
            row["process_cpu_s_per_iter"] = process_deltas(before, after, row["iterations"])
            results.append(row)
            print(format_table(results[-1:]), file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        try:
            asyncio.run(stop_roles(*clients))
        except Exception:  # noqa: BLE001 - the numbers are taken; Ray's shutdown ends the rest
            pass
    command = "python benchmarks/cpu_accounting.py " + " ".join(argv if argv is not None else sys.argv[1:])
    header = [f"CPU accounting, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()} "
              f"({os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, shared with other jobs), "
              f"config {a.config} + {' '.join(overrides)}",
              f"command: {command}"]
    if a.label:
        header.append(a.label)
    header.append("Offline profile: t2i, vlm, captioner and clip are tiny RANDOM-WEIGHT models (their images, captions, "
                  "descriptions and scores are meaningless); the LLM is the real SmolLM2-135M. CPU-s = user + system "
                  "seconds of each group's processes (a role: its actor process and all descendants, e.g. vLLM's "
                  "EngineCore); per iteration = divided by the generate steps recorded; % = share of our processes' total.")
    header.append(f"roles ready in {startup_s:.0f} s")
    text = "\n".join(header) + "\n\n" + format_table(results)
    text += "\n\nchat work per iteration (the servers' counters): " + "; ".join(
        f"c={r['concurrency']}: " + ", ".join(f"{role} {t['calls']:.1f} calls, {t['prompt_tokens']:.0f} prompt + {t['completion_tokens']:.0f} completion tokens"
                                             for role, t in r["chat_tokens_per_iter"].items())
        for r in results if "chat_tokens_per_iter" in r)
    text += "\n\nrole processes, CPU-s per iteration: " + "; ".join(
        f"c={r['concurrency']}: " + ", ".join(f"{k} {v:.2f}" for k, v in r["process_cpu_s_per_iter"].items() if v >= 0.005)
        for r in results)
    if idle:
        text += (f"\n\nidle, {idle['seconds']:.0f} s after start-up, no work: CPU-s per second of wall time: "
                 + ", ".join(f"{g} {v['cpu_s'] / idle['seconds']:.3f}" for g, v in sorted(idle["rows"].items()))
                 + f" (load avg {idle['loadavg_before'][0]:.2f} → {idle['loadavg_after'][0]:.2f})")
    print(text)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.with_suffix(".txt").write_text(text + "\n")
        a.out.with_suffix(".json").write_text(json.dumps({"command": command, "label": a.label, "config": a.config,
                                                          "overrides": overrides, "startup_s": startup_s, "idle": idle,
                                                          "runs": results, "cpu_count": os.cpu_count()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
