"""Summarise a driver profile written by ``python -m benchmarks.scale --cprofile C --work W``:
``python -m benchmarks.scale.profile_summary W/driver-cC.prof [--top 25]``.

Prints the functions with the most own time and a few cumulative totals that group the driver's
work (Ray actor calls, the LangGraph loop, the checkpointer's serialisation, the writer's fsyncs).
cProfile sees the driver's main thread only (the asyncio loop); it roughly doubles the loop's CPU cost.
"""
from __future__ import annotations

import argparse
import io
import pstats
import sys

GROUPS = {
    "Ray actor calls (actors/ray_actors.py RoleClient call)": ("ray_actors.py", "call"),
    "  of which ray/actor.py _actor_method_call": ("actor.py", "_actor_method_call"),
    "LangGraph astream (graph steps, checkpoint writes; roles' awaits excluded)": ("main.py", "astream"),
    "greedy_select (agents/selection.py)": ("selection.py", "greedy_select"),
    "BatchWriter.record (agents/batch/writer.py)": ("writer.py", "record"),
    "BatchWriter.flush (agents/batch/writer.py)": ("writer.py", "flush"),
    "posix.fsync": ("~", "<built-in method posix.fsync>"),
    "json encoding (checkpoint serialiser, records)": ("encoder.py", "iterencode"),
    "epoll wait (idle)": ("~", "<method 'poll' of 'select.epoll' objects>"),
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("profile")
    p.add_argument("--top", type=int, default=25)
    a = p.parse_args(argv)
    stats = pstats.Stats(a.profile)
    total = stats.total_tt
    print(f"profile {a.profile}: {total:.1f} s in the driver's main thread (idle epoll wait included)\n")
    print("| group | cumulative s | share of non-idle |\n|---|---:|---:|")
    raw = stats.stats  # {(file, line, func): (cc, nc, tt, ct, callers)}
    idle = sum(v[2] for k, v in raw.items() if k[2] == "<method 'poll' of 'select.epoll' objects>")
    for label, (file_end, func) in GROUPS.items():
        ct = sum(v[3] for k, v in raw.items() if k[0].endswith(file_end) and k[2] == func) if file_end != "~" else \
            sum(v[3] for k, v in raw.items() if k[2] == func)
        share = "" if "idle" in label else f"{100 * ct / max(total - idle, 1e-9):.0f}%"
        print(f"| {label} | {ct:.1f} | {share} |")
    out = io.StringIO()
    pstats.Stats(a.profile, stream=out).sort_stats("tottime").print_stats(a.top)
    print("\nTop functions by own time:\n")
    print(out.getvalue().split("\n", 3)[-1].strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
