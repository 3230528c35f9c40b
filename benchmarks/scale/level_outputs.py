"""What one finished level of the scale benchmark left behind (SIMULATION): its output folder's sizes, the
agent's decisions from the results log, the checkpoint database's contents, the report's banner, and the roles'
busy shares and job interleaving from their counters."""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import Optional


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


def interleaving(roles: dict) -> dict:
    """Per role replica: batches (engine admissions for chat) that held requests of both jobs, and items per job."""
    return {name: {"mixed": r["mixed"], "jobs": r["jobs"]} for name, r in roles.items()}


def bottleneck_busy(roles: dict, role: Optional[str]) -> Optional[float]:
    """Mean busy share of ``role``'s replicas over the whole run (ramp and drain included, so below the
    steady value); None when the ideal is bound by the concurrency, not by a role."""
    if role is None:
        return None
    shares = [r["utilisation"] for name, r in roles.items() if name.split("[")[0] == role and r.get("utilisation") is not None]
    return statistics.fmean(shares) if shares else None


def report_banner(out: Path) -> dict:
    html = (out / "report.html").read_text() if (out / "report.html").is_file() else ""
    return {"report_html": bool(html), "random_weight_banner": "random-weight models" in html,
            "simulation_profile": "SIMULATION" in html}
