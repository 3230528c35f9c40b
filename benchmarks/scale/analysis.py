"""From one driver's measurements and the roles' counters to the benchmark's figures (SIMULATION).

Units: "sim" figures are on this machine's clock, under the time dilation k (every latency-model
cost × k); "real" figures convert them to the cluster's clock: throughput × k, latency ÷ k.
"""
from __future__ import annotations

import math
import statistics
from typing import Any, Optional

from benchmarks.scale.latency import (Ideal, LatencyModel, RoleDemand, batched_capacity, clip_capacity,
                                      critical_path, engine_capacity, fit_line, ideal_throughput)
from benchmarks.scale.standins import PROPOSED_PER_ANSWER
from benchmarks.scale.time_shared_ideal import time_shared_bound


def percentile(values: list[float], q: float) -> Optional[float]:
    if not values:
        return None
    values = sorted(values)
    pos = (len(values) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def steady_rate(finish_times: list[float]) -> tuple[float, str]:
    """Images per second between the N/4-th and the 3N/4-th completion (the middle half: no
    ramp-up, no drain); the whole run's rate for fewer than 8 images."""
    t = sorted(finish_times)
    n = len(t)
    if n >= 8:
        k1, k2 = n // 4, (3 * n) // 4 - 1
        if t[k2] > t[k1]:
            return (k2 - k1) / (t[k2] - t[k1]), f"completions {k1 + 1}..{k2 + 1} of {n}"
    return (n / t[-1] if n and t[-1] > 0 else 0.0), "whole run"


def steady_window(n: int, concurrency: int) -> tuple[int, int]:
    """1-based completions C+1 .. N−C: after the first wave (the C optimisations admitted at once),
    before the drain (fewer than C left). Empty (0, 0) when N < 2C + 2."""
    lo, hi = concurrency + 1, n - concurrency
    return (lo, hi) if hi - lo >= 1 else (0, 0)


def regression_rate(finish_times: list[float], concurrency: int) -> tuple[float, str]:
    """Images per second: the least-squares slope of the completion count over time for completions
    C+1 .. N−C (``steady_window``). Unlike a rate between two completions, the slope uses every
    completion in the window, so where its ends fall in the admission waves hardly matters; with
    N = 8C it spans about six waves. The whole run's rate when the window is empty."""
    t = sorted(finish_times)
    lo, hi = steady_window(len(t), concurrency)
    if not lo:
        return (len(t) / t[-1] if t and t[-1] > 0 else 0.0), "whole run"
    xs = t[lo - 1:hi]
    if len(set(xs)) < 2:
        return 0.0, "degenerate"
    return fit_line(list(zip(xs, range(lo, hi + 1))))[1], f"regression over completions {lo}..{hi} of {len(t)}"


def little_rate(images: list[dict], concurrency: int) -> Optional[float]:
    """Little's law, X = L / W, over the images that started and ended inside the steady window (in flight
    = C the whole time): C ÷ their mean latency. An estimator independent of the completion times' spacing."""
    t = sorted(i["end"] for i in images)
    lo, hi = steady_window(len(t), concurrency)
    if not lo:
        return None
    a, b = t[lo - 1], t[hi - 1]
    inside = [i["end"] - i["start"] for i in images if i["start"] >= a and i["end"] <= b]
    return concurrency / statistics.fmean(inside) if inside else None


def orchestration(node_split: dict[str, list], iterations: int, images: int) -> dict:
    """The driver's own time (node wall − waiting on roles; benchmarks/scale/overhead.py), in driver
    seconds (this machine's clock, not dilated): per node name p50/mean, per iteration and per image."""
    per_node = {}
    total = 0.0
    for name, runs in node_split.items():
        own = [max(0.0, wall - roles) for wall, roles in runs]
        total += sum(own)
        per_node[name] = {"n": len(own), "p50_ms": 1000 * percentile(own, 0.5), "p99_ms": 1000 * percentile(own, 0.99),
                          "mean_ms": 1000 * statistics.fmean(own),
                          "role_wait_mean_ms": 1000 * statistics.fmean(r for _, r in runs)}
    return {"per_node": per_node, "ms_per_iteration": 1000 * total / max(iterations, 1),
            "ms_per_image": 1000 * total / max(images, 1)}


def traced_memory(traced: Optional[list], concurrency: int, harness: Optional[tuple] = None) -> Optional[dict]:
    """The driver's Python allocations (tracemalloc) while C optimisations were in flight: a least-squares
    line ``bytes = base + per_finished · finished`` over those samples — ``per_finished`` near 0 means
    finished images leave nothing behind — and ``(median − traced at the start) ÷ C`` per optimisation in flight.

    ``harness`` (bytes the benchmark's own code held at the start and the end, driver.harness_bytes): its growth per
    finished image is the measuring's share of ``per_finished``; ``job_per_finished_kb`` is the rest, the batch job's."""
    if not traced:
        return None
    start = traced[0][1]
    full = [(f, b) for _, b, n, f in traced if n >= concurrency and f >= 1]
    if len(full) < 3:
        return {"samples": len(full)}
    ys = [b for _, b in full]
    slope = fit_line(full)[1] if len({f for f, _ in full}) > 1 else None
    return {"samples": len(full), "start_mb": start / 2**20, "median_mb": statistics.median(ys) / 2**20,
            "peak_mb": max(ys) / 2**20,
            "per_inflight_kb": (statistics.median(ys) - start) / 1024 / concurrency,
            "per_finished_kb": slope / 1024 if slope is not None else None,
            **_harness_share(slope, harness, traced[-1][3])}


def _harness_share(slope: Optional[float], harness: Optional[tuple], finished: int) -> dict:
    if not harness or slope is None or finished < 1:
        return {}
    per = (harness[1] - harness[0]) / finished
    return {"harness_per_finished_kb": per / 1024, "job_per_finished_kb": (slope - per) / 1024}


def rss_split_peaks(res: dict, concurrency: int) -> Optional[dict]:
    """Peak of each kind of resident memory (anonymous / file / shared: the object store's pages) while C were in
    flight, and its growth over the start per optimisation in flight, in KB."""
    full = [d for _, d, n, f in res.get("rss_split") or [] if n >= concurrency and f >= 1 and d]
    start = res.get("rss_split0") or {}
    if not full or not start:
        return None
    out = {}
    for key in ("RssAnon", "RssFile", "RssShmem"):
        peak = max(d.get(key, 0) for d in full)
        out[key] = {"start_mb": start.get(key, 0) / 2**20, "peak_mb": peak / 2**20,
                    "per_inflight_kb": (peak - start.get(key, 0)) / 1024 / concurrency}
    return out


def _sum(rows: list[dict], *keys) -> float:
    total = 0.0
    for r in rows:
        v: Any = r
        for k in keys:
            v = v.get(k, {}) if isinstance(v, dict) else {}
        total += v if isinstance(v, (int, float)) else 0.0
    return total


def demands(stats: dict, images: int) -> dict[str, RoleDemand]:
    """Per image: what each role was asked, from the stand-ins' own counters."""
    n = max(images, 1)
    t2i = RoleDemand(items=_sum(stats["t2i"], "standin", "items") / n)
    cap = RoleDemand(items=_sum(stats["captioner"], "standin", "items") / n)
    clip = RoleDemand(text_items=_sum(stats["clip"], "standin", "text", "items") / n,
                      image_items=_sum(stats["clip"], "standin", "image", "items") / n)
    out = {"t2i": t2i, "captioner": cap, "clip": clip}
    for role in ("llm", "vlm"):
        out[role] = RoleDemand(items=_sum(stats[role], "engine", "requests") / n,
                               prompt_tokens=_sum(stats[role], "engine", "prompt_tokens") / n,
                               completion_tokens=_sum(stats[role], "engine", "completion_tokens") / n,
                               images=_sum(stats[role], "engine", "images") / n)
    return out


def mean_prompt_tokens(stats: dict, role: str, kind: str) -> int:
    reqs = _sum(stats[role], "kinds", kind, "requests")
    toks = _sum(stats[role], "kinds", kind, "prompt_tokens")
    return int(round(toks / reqs)) if reqs else 0


def ideal_for(cfg: Any, model: LatencyModel, stats: dict, images: int, concurrency: int,
              time_shared: Optional[tuple[list[dict], dict[str, float]]] = None) -> tuple[Ideal, list]:
    """The ideal throughput (real images/s) of this workload on these roles (latency.ideal_throughput).

    ``time_shared`` ((placement rows, GPUs per node), ``--gpu-sharing time``): every replica's cost is a
    whole GPU's, and the role bound is time_shared_ideal's linear programme over that placement."""
    d = demands(stats, images)
    shares = {r: getattr(cfg, r).resources.num_gpus for r in ("t2i", "llm", "vlm", "captioner", "clip")}
    if time_shared:
        shares = {r: 1.0 for r in shares}
    reps = {r: getattr(cfg, r).resources.num_replicas for r in shares}
    caps = [
        batched_capacity("t2i", model.t2i, reps["t2i"], shares["t2i"], d["t2i"].items, cfg.t2i.batching.max_batch_size),
        batched_capacity("captioner", model.captioner, reps["captioner"], shares["captioner"], d["captioner"].items,
                         cfg.captioner.batching.max_batch_size),
        clip_capacity(model.clip_text, model.clip_image, reps["clip"], shares["clip"], d["clip"], cfg.clip.batching.max_batch_size),
        engine_capacity("llm", model.llm, reps["llm"], shares["llm"], d["llm"]),
        engine_capacity("vlm", model.vlm, reps["vlm"], shares["vlm"], d["vlm"]),
    ]
    path = critical_path(model, cfg, shares, max_steps=cfg.agent.max_steps, candidates=2 * PROPOSED_PER_ANSWER,
                         describe_prompt_tokens=mean_prompt_tokens(stats, "vlm", "describe"),
                         differences_prompt_tokens=mean_prompt_tokens(stats, "llm", "differences"),
                         propose_prompt_tokens=mean_prompt_tokens(stats, "llm", "propose"))
    ideal = ideal_throughput(concurrency, sum(s.seconds for s in path), caps)
    if time_shared:
        placement, gpus = time_shared
        replicas_on: dict[str, dict[str, int]] = {}
        for p in placement:
            on = replicas_on.setdefault(p["role"], {})
            on[p["node_id"]] = on.get(p["node_id"], 0) + 1
        # a capacity's busy_s_per_image at share 1 is the role's whole-GPU work per image
        shared = time_shared_bound({c.role: c.busy_s_per_image for c in caps}, replicas_on, gpus)
        conc = ideal.concurrency_bound
        ideal = Ideal(min(conc, shared.images_per_s), "concurrency" if conc < shared.images_per_s else shared.bound,
                      conc, shared.images_per_s, ideal.critical_path_s, caps, shared=shared.as_dict())
    return ideal, path


def role_summary(stats: dict, wall_s: float, k: float) -> dict:
    """Batch sizes each role saw, its utilisation (busy share of the run's wall time), jobs mixed in one batch."""
    out = {}
    for role in ("t2i", "captioner"):
        for i, s in enumerate(stats[role]):
            out[f"{role}[{i}]"] = _ledger(s["standin"], wall_s)
    for i, s in enumerate(stats["clip"]):
        out[f"clip[{i}] text"] = _ledger(s["standin"]["text"], wall_s)
        out[f"clip[{i}] image"] = _ledger(s["standin"]["image"], wall_s)
    for role in ("llm", "vlm"):
        for i, s in enumerate(stats[role]):
            e = s["engine"]
            out[f"{role}[{i}]"] = {"requests": e["requests"], "mean_running": e["mean_running"], "max_running": e["max_running"],
                                   "utilisation": round(e["busy_s"] * k / wall_s, 3) if wall_s else None,
                                   "mixed": e["mixed_admissions"], "jobs": e["job_requests"]}
    return out


def _ledger(led: dict, wall_s: float) -> dict:
    return {"calls": led["calls"], "items": led["items"], "mean_batch": round(led["mean_batch"], 2), "max_batch": led["max_batch"],
            "batch_sizes": led["batch_sizes"], "utilisation": round(led["busy_s"] / wall_s, 3) if wall_s else None,
            "mixed": led["mixed_calls"], "jobs": led["job_items"], "overshoot_s": led["overshoot_s"]}


def driver_figures(res: dict, concurrency: int, out_dir_bytes: dict) -> dict:
    """Throughput, latency, CPU, memory and writer cost of one driver run (sim clock)."""
    images = res["outcome"]["done"] + res["outcome"]["failed"]
    finish = [i["end"] for i in res["images"]]
    rate, window = steady_rate(finish)
    regression = regression_rate(finish, concurrency)
    gaps = [b - a for i in res["images"] for a, b in zip(i["generates"], i["generates"][1:])]
    iterations = sum(len(i["generates"]) for i in res["images"])
    orch = orchestration(res["node_split"], iterations, images) if res.get("node_split") else None
    latencies = [i["end"] - i["start"] for i in res["images"]]
    mean_latency = statistics.fmean(latencies) if latencies else None
    # memory: samples while every worker was busy (in flight == concurrency) after the first completion
    full = [rss for t, rss, n, f in res["samples"] if n >= concurrency and f >= 1]
    peak = max(full) if full else max((s[1] for s in res["samples"]), default=res["rss0"])
    writer = {}
    for name, calls in res["writer"].items():
        walls = [w for _, w, _ in calls]
        cpus = [c for _, _, c in calls]
        q = max(1, len(walls) // 4)
        writer[name] = {"calls": len(calls), "wall_ms_per_image": 1000 * sum(walls) / max(images, 1),
                        "cpu_ms_per_image": 1000 * sum(cpus) / max(images, 1),
                        "mean_ms_per_call": 1000 * statistics.fmean(walls) if walls else 0.0,
                        "first_quarter_ms_per_call": 1000 * statistics.fmean(walls[:q]) if walls else 0.0,
                        "last_quarter_ms_per_call": 1000 * statistics.fmean(walls[-q:]) if walls else 0.0}
    import bisect

    done_at = sorted(finish)
    flushes = [(bisect.bisect_right(done_at, start), wall, cpu) for start, wall, cpu in res["writer"].get("BatchWriter.flush", [])]
    step = max(1, len(flushes) // 40)
    flush_curve = [(n, round(1000 * w, 2), round(1000 * c, 2)) for n, w, c in flushes[::step]]
    nodes = {name: {"n": len(v), "p50_s": percentile(v, 0.5), "p99_s": percentile(v, 0.99), "mean_s": statistics.fmean(v)}
             for name, v in (res.get("node_seconds") or {}).items() if v}
    return {
        "nodes": nodes,
        "flush_curve": flush_curve,  # (images finished, wall ms, CPU ms) of every k-th results.csv refresh
        "images": images, "done": res["outcome"]["done"], "failed": res["outcome"]["failed"],
        "wall_s": res["wall_s"], "iterations": iterations,
        "images_per_s_whole": images / res["wall_s"] if res["wall_s"] else 0.0,
        "images_per_s_steady": rate, "steady_window": window,
        "images_per_s_regression": regression[0], "regression_window": regression[1],
        "images_per_s_little": little_rate(res["images"], concurrency),
        "orchestration": orch,
        # Little's law at a fixed C: below saturation the throughput would rise by at most this share if the
        # driver took no time at all (its own time ÷ an image's latency)
        "driver_share_of_latency": (orch["ms_per_image"] / 1000 / mean_latency) if orch and mean_latency else None,
        "injected": res.get("injected"),
        "traced": traced_memory(res.get("traced"), concurrency, res.get("traced_harness")),
        "iteration_p50_s": percentile(gaps, 0.5), "iteration_p99_s": percentile(gaps, 0.99),
        "image_latency_p50_s": percentile(latencies, 0.5), "image_latency_mean_s": mean_latency,
        "driver_cpu_s": res["cpu_s"], "driver_cpu_ms_per_iteration": 1000 * res["cpu_s"] / max(iterations, 1),
        "driver_busy_share": res["cpu_s"] / res["wall_s"] if res["wall_s"] else 0.0,
        "rss0_mb": res["rss0"] / 2**20, "rss_peak_full_mb": peak / 2**20, "rss_end_mb": res["rss_end"] / 2**20,
        "rss_samples_full": len(full),
        "rss_per_inflight_kb": (peak - res["rss0"]) / 1024 / concurrency,
        "max_inflight": res["max_inflight"],
        "checkpoint_bytes_per_image": out_dir_bytes.get("checkpoint", 0) / max(images, 1),
        "output_bytes_per_image": out_dir_bytes.get("total", 0) / max(images, 1),
        "writer": writer,
        "image_refs": res.get("image_refs"),  # the driver's shelf: images put, references handed out again
        "rss_split": rss_split_peaks(res, concurrency),
        "resends": res.get("resends") or {},  # calls re-sent while a role's actor was unreachable, by role
        "startup": res.get("startup"),  # how the driver came by the roles: started or joined, per group (its start-up)
    }
