"""Parser: linear time. How long agents.parsing.parse_fragments takes on adversarial LLM answers.

For each family of adversarial text (unclosed brackets, spaces inside a bullet line, long
quoted strings, a random mix, ...) the parser reads the text at two lengths, by default 10k
and 1M characters, with its length cap (MAX_ANSWER_CHARS, 64 KiB) lifted through
``max_chars``. It prints the time at each length, the time per character, and the ratio of
the per-character times: ~1 for a linear parser, ~100 (the length ratio) for a quadratic one.
Rows marked "from_text" time PromptParts.from_text, which reads a user's initial prompt.

On a shared machine use ``--clock cpu`` (this thread's CPU time): other processes stretch
wall time at random, and the ratio is about the parser, not the neighbours.

Needs nothing beyond the project (no Ray, no torch):
    python benchmarks/parser_linear.py --clock cpu              # 10k and 1M characters
    python benchmarks/parser_linear.py --sizes 10000,100000 --repeats 5
"""
from __future__ import annotations

import argparse
import gc
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from agents.parsing import MAX_ANSWER_CHARS, parse_fragments  # noqa: E402
from agents.prompt_parts import PromptParts  # noqa: E402


def _repeat(unit: str, n: int) -> str:
    return (unit * (n // len(unit) + 1))[:n]


def _mixed(n: int, seed: int = 0, block: int = 10_000) -> str:
    """A ``block``-character mix of runs of adversarial pieces (each repeated 1-200 times,
    seeded random order), repeated to ``n`` characters: the same text at every length."""
    rng = random.Random(seed)
    # no letters: nothing is ever found, so every shape is searched to the end
    pieces = ["[", "{", "(", "]", "}", '"', "'", "«", "`", "```", "\\", "\\'", " ", "\t", "\n", ",", ";", ":",
              "- ", "1. ", "**", "[[[[[", '["', "['", "\n- 1   "]
    out, size = [], 0
    while size < block:
        run = rng.choice(pieces) * rng.randint(1, 200)
        out.append(run)
        size += len(run)
    return _repeat("".join(out)[:block], n)


REAL_ANSWER = ('Sure! Here are some prompts that reduce the differences:\n'
               '["soft warm lighting", "oil painting, thick impasto", "a red scarf around the neck"]\n')

# (name, what is timed, make(n) -> text of n characters)
FAMILIES: list[tuple[str, str, Callable[[int], str]]] = [
    ("unclosed brackets [[[[...", "parse", lambda n: "[" * n),
    ("unclosed braces, then separators {{..,,", "parse", lambda n: "{" * (n // 2) + "," * (n - n // 2)),
    ("spaces inside a bullet line", "parse", lambda n: "- a" + " " * (n - 4) + "b"),
    ("bullet lines ending in spaces", "parse", lambda n: _repeat("- soft light" + " " * 200 + "\n", n)),
    ("long unclosed quoted item, escaped quotes", "parse", lambda n: '["' + _repeat('\\\\" a', n - 2)),
    ("long unclosed quoted item, apostrophes", "parse", lambda n: "['" + _repeat("it's ", n - 2)),
    ("long closed quoted items", "parse", lambda n: "[" + _repeat('"' + "soft light " * 50 + '", ', n - 2) + "]"),
    ("an item of nested bullets - - - ...", "parse", lambda n: "[" + _repeat("- ", n - 3) + "x]"),
    ("fences without a close", "parse", lambda n: _repeat("```python\n[", n)),
    ("mixed random runs, no letters (10k block)", "parse", _mixed),
    ("a real answer, repeated (reference)", "parse", lambda n: _repeat(REAL_ANSWER, n)),
    ("from_text: blank lines", "from_text", lambda n: "a" + "\n" * (n - 2) + "b"),
    ("from_text: spaces", "from_text", lambda n: "a" + " " * (n - 2) + "b"),
]


def _run(kind: str, text: str):
    if kind == "parse":
        return parse_fragments(text, max_chars=len(text))
    return PromptParts.from_text(text)


CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}


def best_seconds(kind: str, text: str, repeats: int, clock: Callable[[], float]) -> float:
    best = float("inf")
    for _ in range(repeats):
        gc.collect()
        start = clock()
        _run(kind, text)
        best = min(best, clock() - start)
    return best


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10000,1000000", help="two lengths in characters, small,large")
    p.add_argument("--repeats", type=int, default=3, help="runs at the small length (best is shown)")
    p.add_argument("--repeats-large", type=int, default=1, help="runs at the large length (best is shown)")
    p.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                   help="wall: time.perf_counter; cpu: time.thread_time (this thread's CPU time)")
    args = p.parse_args(argv)
    small, large = (int(s) for s in args.sizes.split(","))

    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {load[0]:.2f} at start; cap MAX_ANSWER_CHARS={MAX_ANSWER_CHARS} lifted")
    print(f"{args.clock} clock; best of {args.repeats} runs at {small:,} characters, of {args.repeats_large} at {large:,}")
    print(f"{'family':44s} {'ms @small':>10s} {'us/char':>8s} {'ms @large':>11s} {'us/char':>8s} {'ratio':>6s}")
    for name, kind, make in FAMILIES:
        a, b = make(small), make(large)
        assert len(a) == small and len(b) == large, name
        clock = CLOCKS[args.clock]
        ts, tl = best_seconds(kind, a, args.repeats, clock), best_seconds(kind, b, args.repeats_large, clock)
        per_s, per_l = ts / small * 1e6, tl / large * 1e6
        print(f"{name:44s} {ts * 1e3:10.2f} {per_s:8.3f} {tl * 1e3:11.1f} {per_l:8.3f} {per_l / per_s:6.2f}", flush=True)


if __name__ == "__main__":
    main()
