"""Results browser timings: the index in headless Chromium at 2,000 and 10,000 images, and the
batch writer's cost per finished image at 100 vs 2,000 images done.

    python benchmarks/report_browser.py [--sizes 2000,10000] [--repeats 5] [--writer-sizes 100,2000,100,2000]
                                        [--writer-images 100] [--out docs/benchmarks/report_browser.txt]

Browser (synthetic outputs written through the job's writer, fsync off to build them fast; opened
from file:// in Debian's chromium via Playwright, a fresh browser context per load):
  first paint        first-contentful-paint, ms after navigation start
  table ready        ms after navigation start until the rows are read, the summary computed and the
                     first page of the table drawn (the page's own mark, ARPO.ready)
  sorted (URL)       the same for report.html#sort=gain&dir=desc: time to a table sorted by gain
  sort click         ms from a click on the gain header (sorting all rows by gain) to the next frame
Writer (real fsyncs, as in the job): an output folder with N images done (results.jsonl and the
browser's files), then a resumed run's ``BatchWriter.record`` for ``--writer-images`` more images,
each timed (wall, user CPU, fsyncs); ``flush`` (results.csv rewritten from every record + the summary file) timed
apart: the job runs it at most every job.summary_refresh_s seconds (2 s by default).
Prints a text report; ``--out`` also writes it to a file.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere without installing

from agents.batch.writer import BatchWriter  # noqa: E402
from agents.browser.report import REPORT_HTML, ROWS_JS, ReportHeader  # noqa: E402
from agents.browser.results import RESULTS_JSONL, ResultsLog  # noqa: E402
from tests.agents.report_synthetic import synthetic_records, write_pool, write_synthetic_output  # noqa: E402


def browser_version(executable: str) -> str:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            return f"Chromium {browser.version}"
        finally:
            browser.close()


def browser_timings(out: Path, executable: str, repeats: int) -> dict[str, list[float]]:
    from playwright.sync_api import sync_playwright

    figures: dict[str, list[float]] = {"first paint": [], "table ready": [], "sorted (URL)": [], "sort click": []}
    errors: list[str] = []
    url = (out / REPORT_HTML).as_uri()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            for _ in range(repeats):
                for mode in ("plain", "sorted"):
                    context = browser.new_context(viewport={"width": 1400, "height": 1000})
                    page = context.new_page()
                    page.on("pageerror", lambda e: errors.append(str(e)))
                    page.on("requestfailed", lambda r: errors.append(f"{r.url} {r.failure}"))
                    page.goto(url + ("#sort=gain&dir=desc" if mode == "sorted" else ""))
                    page.wait_for_selector("html[data-ready]")
                    if mode == "plain":
                        page.wait_for_function("performance.getEntriesByName('first-contentful-paint').length > 0")
                        figures["first paint"].append(page.evaluate("performance.getEntriesByName('first-contentful-paint')[0].startTime"))
                        figures["table ready"].append(page.evaluate("ARPO.ready"))
                        figures["sort click"].append(page.evaluate("""() => new Promise(done => {
                            const button = document.querySelector('button.sort[data-key=gain]');
                            const t = performance.now();
                            button.click();
                            requestAnimationFrame(() => setTimeout(() => done(performance.now() - t), 0));
                        })"""))
                    else:
                        assert page.get_attribute("button.sort[data-key=gain]", "aria-sort") == "descending"
                        figures["sorted (URL)"].append(page.evaluate("ARPO.ready"))
                    context.close()
        finally:
            browser.close()
    if errors:
        raise SystemExit(f"the page reported errors: {errors[:5]}")
    return figures


async def writer_timings(out: Path, done: int, extra: int) -> dict[str, float]:
    """Per-image cost of BatchWriter.record in a run that resumes an output folder with ``done`` images done."""
    out.mkdir(parents=True)
    pool = write_pool(out)
    records = synthetic_records(done + extra, seed=1, pool=pool)
    header = ReportHeader(profile="benchmark", total=done + extra)
    with mock.patch("os.fsync"):  # the images already done: written fast, by the same writer
        earlier = BatchWriter(out, ResultsLog(out / RESULTS_JSONL), header, refresh_s=3600.0)
        for r in records[:done]:
            earlier.record(SimpleNamespace(folder=out / r["output_dir"]), r)
        earlier.flush()
    real_fsync, fsyncs = os.fsync, [0]

    def counted_fsync(fd):
        fsyncs[0] += 1
        real_fsync(fd)

    with mock.patch("os.fsync", counted_fsync):
        t0 = time.perf_counter()
        writer = BatchWriter(out, ResultsLog(out / RESULTS_JSONL), header, refresh_s=3600.0)  # the resumed run
        start_s = time.perf_counter() - t0
        walls, users, counts = [], [], []
        for r in records[done:]:
            fsyncs[0] = 0
            u, w = resource.getrusage(resource.RUSAGE_SELF).ru_utime, time.perf_counter()
            writer.record(SimpleNamespace(folder=out / r["output_dir"]), r)
            walls.append(time.perf_counter() - w)
            users.append(resource.getrusage(resource.RUSAGE_SELF).ru_utime - u)
            counts.append(fsyncs[0])
        flushes = []
        for _ in range(3):
            w = time.perf_counter()
            writer.flush()
            flushes.append(time.perf_counter() - w)
    return {"wall": 1000 * statistics.median(walls), "user": 1000 * statistics.mean(users),
            "fsyncs": statistics.mean(counts), "flush": 1000 * statistics.median(flushes), "start": 1000 * start_s}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="2000,10000")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--writer-sizes", default="100,2000,100,2000",
                    help="images done before the timed ones; repeated sizes interleave the runs (the machine is shared)")
    ap.add_argument("--writer-images", type=int, default=100)
    ap.add_argument("--out", help="Also write the report to this file.")
    args = ap.parse_args()
    executable = shutil.which("chromium")
    if executable is None:
        raise SystemExit("Debian's chromium is needed (scripts/setup_env.sh installs it)")
    lines = [f"# benchmarks/report_browser.py {' '.join(sys.argv[1:])}".rstrip(),
             f"# {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} · {platform.node() or 'host'} · {os.cpu_count()} CPUs "
             f"· Python {platform.python_version()} · {browser_version(executable)} headless",
             "# load average at start (1/5/15 min): " + " ".join(f"{x:.1f}" for x in os.getloadavg())]

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    print("\n".join(lines), flush=True)

    with tempfile.TemporaryDirectory(prefix="report-bench-") as tmp:
        say("## browser: index page from file://, ms (median, min, max over repeats)")
        say(f"{'images':>7} {'rows file':>10} | {'first paint':>20} | {'table ready':>20} | {'sorted (URL)':>20} | {'sort click':>20}")
        for n in (int(s) for s in args.sizes.split(",") if s):
            out = Path(tmp) / f"browser-{n}"
            write_synthetic_output(out, n, durable=False)
            figures = browser_timings(out, executable, args.repeats)
            size = (out / ROWS_JS).stat().st_size / 1e6
            cells = [f"{statistics.median(v):7.0f} ({min(v):4.0f}–{max(v):4.0f})" for v in figures.values()]
            say(f"{n:>7} {size:>8.1f}MB | " + " | ".join(f"{c:>20}" for c in cells))
            shutil.rmtree(out)
        say()
        say(f"## writer: cost per finished image with N images done ({args.writer_images} images timed, real fsyncs)")
        say("# record: wall ms (median) | user CPU ms (mean; the kernel's fsync time not in it) | fsyncs per image;")
        say("# flush: results.csv from every record + summary, ms (median of 3); start-up: once per run, ms")
        say(f"{'N done':>7} | {'record wall ms':>14} | {'record user CPU ms':>18} | {'fsyncs/image':>12} | {'flush ms':>8} | {'start-up ms':>11}")
        for k, n in enumerate(int(s) for s in args.writer_sizes.split(",") if s):
            t = asyncio.run(writer_timings(Path(tmp) / f"writer-{k}-{n}", n, args.writer_images))
            say(f"{n:>7} | {t['wall']:>14.1f} | {t['user']:>18.2f} | {t['fsyncs']:>12.1f} | {t['flush']:>8.1f} | {t['start']:>11.0f}")
    say("# load average at end (1/5/15 min): " + " ".join(f"{x:.1f}" for x in os.getloadavg()))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
