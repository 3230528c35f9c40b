"""Per-image cost of the batch job's results writer as the batch grows.

    python benchmarks/writer_cost.py [--images 8192] [--marks 128,512,2048,8192] [--refresh-s 2]
        [--rate 30] [--txt FILE] [--json FILE]

Writes synthetic result records (tests/agents/report_synthetic.py: the shapes the job writes,
no model involved) through ``agents.batch.writer.BatchWriter`` one by one, as the job does,
with real fsyncs, and reports at each mark (images finished so far):

- ``record``: wall and CPU ms per image over the images since the previous mark (per-image folder,
  detail page, report row, log line);
- ``refresh``: wall and CPU ms of one periodic summary refresh (``flush``: results.csv and
  report_summary.js) at that point of the batch;
- the refresh's share per finished image at ``--rate`` images per second finishing with the job's
  ``summary_refresh_s`` (``--refresh-s``): refresh CPU ÷ (rate × refresh_s). Flat means the
  writer's cost per image does not grow with the batch.

CPU is the thread's CPU time (``time.thread_time``); wall includes the fsync waits (disk).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents.batch.writer import BatchWriter  # noqa: E402
from agents.browser.report import ReportHeader  # noqa: E402
from agents.browser.results import RESULTS_JSONL, ResultsLog  # noqa: E402
from tests.agents.report_synthetic import synthetic_records, write_pool  # noqa: E402


def _timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.thread_time()
    fn()
    return (time.perf_counter() - wall) * 1e3, (time.thread_time() - cpu) * 1e3


async def measure(out: Path, n: int, marks: list[int], refresh_s: float, rate: float, seed: int = 0) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    records = synthetic_records(n, seed, write_pool(out))
    header = ReportHeader(profile="writer benchmark (synthetic records)", random_weight_roles=[], total=n, running=0)
    # refresh_s huge: the benchmark calls the refresh itself at each mark, so every figure is one call
    writer = BatchWriter(out, ResultsLog(out / RESULTS_JSONL), header, refresh_s=3600.0)
    rows, since, wall_sum, cpu_sum = [], 0, 0.0, 0.0
    for i, record in enumerate(records, 1):
        wall, cpu = _timed(lambda: writer.record(SimpleNamespace(folder=out / record["output_dir"]), record))
        wall_sum, cpu_sum, since = wall_sum + wall, cpu_sum + cpu, since + 1
        if i in marks:
            # the periodic refresh: BatchWriter.refresh, or flush in versions before results.csv was appended to
            r_wall, r_cpu = _timed(getattr(writer, "refresh", writer.flush))
            rows.append({"images": i, "record_wall_ms": wall_sum / since, "record_cpu_ms": cpu_sum / since,
                         "refresh_wall_ms": r_wall, "refresh_cpu_ms": r_cpu,
                         "refresh_cpu_ms_per_image": r_cpu / (rate * refresh_s)})
            since, wall_sum, cpu_sum = 0, 0.0, 0.0
    return rows


def render(meta: dict, rows: list[dict]) -> str:
    lines = [f"writer cost per image (synthetic records, real fsyncs) — {meta['date']}, {meta['host']} ({meta['cpus']} CPUs), "
             f"git {meta['git']}", f"command: {meta['command']}", "",
             f"| images finished | record: wall / CPU ms per image | one refresh: wall / CPU ms | refresh CPU ms per image at {meta['rate']}/s, every {meta['refresh_s']} s |",
             "|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['images']:,} | {r['record_wall_ms']:.1f} / {r['record_cpu_ms']:.2f} | "
                     f"{r['refresh_wall_ms']:.1f} / {r['refresh_cpu_ms']:.2f} | {r['refresh_cpu_ms_per_image']:.3f} |")
    return "\n".join(lines) + "\n"


def _git() -> str:
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        return head + (" (uncommitted changes)" if dirty else "")
    except OSError:
        return "?"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=8192)
    p.add_argument("--marks", default="128,512,2048,8192", help="images finished at which to measure")
    p.add_argument("--refresh-s", type=float, default=2.0, help="the job's summary_refresh_s")
    p.add_argument("--rate", type=float, default=30.0, help="images finishing per second, for the per-image share")
    p.add_argument("--work", type=Path, default=None, help="folder for the output (default: a temporary folder, removed)")
    p.add_argument("--txt", type=Path)
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    marks = sorted({int(m) for m in a.marks.split(",") if int(m) <= a.images})
    meta = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "host": platform.node(), "cpus": os.cpu_count(),
            "git": _git(), "command": "python benchmarks/writer_cost.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "rate": a.rate, "refresh_s": a.refresh_s}
    with tempfile.TemporaryDirectory(prefix="writer_cost_") as tmp:
        rows = asyncio.run(measure((a.work or Path(tmp)) / "out", a.images, marks, a.refresh_s, a.rate))
    text = render(meta, rows)
    print(text, end="")
    if a.txt:
        a.txt.write_text(text)
    if a.json:
        a.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
