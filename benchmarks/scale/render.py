"""The scale benchmark's text report (SIMULATION): one table per figure, a line per level."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

GPU_SHARING_SAYS = {"partition": "a replica runs at its num_gpus share wherever it lands",
                    "time": "the processes on a node's GPU time-slice it; benchmarks/scale/gpu_clock.py"}


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
