"""The results browser in a real browser: headless Chromium (Debian's package) driven by Playwright.

A synthetic output of 2,000 images, written through the batch job's own writer, is opened from
``file://`` (no server, no network): the summary's figures, sorting by gain, filtering the failed
ones, searching a name (one holding ``<script>``), the gain and iteration filters, paging, and a
detail page. Fails on any JavaScript error or console error, any failed request, or any dialog
(an ``alert`` from the hostile names would be one).

Screenshots go to ``tests/artifacts/report_browser/`` (ignored by git; ``REPORT_BROWSER_ARTIFACTS``
moves them); the test prints the folder. Without chromium (or the playwright package) the test
skips, or fails when the environment variable CI is set (.ci/run sets it).
"""
from __future__ import annotations

import os
import shutil
import statistics
from pathlib import Path

import pytest

from agents.browser.report import REPORT_HTML
from tests.agents.report_synthetic import EVIL_NAME, EVIL_PROMPT, write_synthetic_output

REPO = Path(__file__).resolve().parents[2]
N_IMAGES = 2000
ARTIFACTS = Path(os.environ.get("REPORT_BROWSER_ARTIFACTS", REPO / "tests" / "artifacts" / "report_browser"))


def _need(what: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing (CI is set: install it with scripts/setup_env.sh)")
    pytest.skip(f"{what} is missing (scripts/setup_env.sh installs it)")


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        _need("Debian's chromium")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _need("the playwright package")
    return path


def fmt(x: float) -> str:
    return f"{x:.4f}"


@pytest.mark.timeout(180)
def test_results_browser_in_headless_chromium(tmp_path):
    executable = chromium_path()
    from playwright.sync_api import sync_playwright

    out = tmp_path / "out"
    records = write_synthetic_output(out, N_IMAGES, durable=False)
    done = [r for r in records if r["status"] == "done"]
    failed = [r for r in records if r["status"] == "error"]
    gains = {r["image_id"]: r["best_clip_i"] - r["iterations"][0]["clip_i"] for r in records if r["iterations"]}
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots: {ARTIFACTS}")

    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} {r.failure}"))
            page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
            page.goto((out / REPORT_HTML).as_uri())
            page.wait_for_selector("html[data-ready]")
            text = page.inner_text

            # summary: counts (running and total come from the summary file), figures, histogram, stops
            assert text("#n-done strong") == str(len(done)) and text("#n-failed strong") == str(len(failed))
            assert text("#n-running strong") == "3" and text("#n-total strong") == str(N_IMAGES + 25)
            assert text("#n-left strong") == str(N_IMAGES + 25 - len(records))
            stats = page.locator("#stats tr").all_inner_texts()
            first = [r["iterations"][0]["clip_i"] for r in done]
            best = [r["best_clip_i"] for r in done]
            gain_done = [gains[r["image_id"]] for r in done]
            assert f"CLIP-I, first iteration\t{fmt(statistics.mean(first))}\t{fmt(statistics.median(first))}\t{len(done)}" in stats
            assert f"CLIP-I, best iteration\t{fmt(statistics.mean(best))}\t{fmt(statistics.median(best))}\t{len(done)}" in stats
            assert f"gain (best − first)\t{fmt(statistics.mean(gain_done))}\t{fmt(statistics.median(gain_done))}\t{len(done)}" in stats
            bars = page.locator("#gain-histogram rect")
            assert bars.count() > 3
            assert sum(int(t.split(": ")[1].split()[0]) for t in bars.locator("title").all_text_contents()) == len(done)
            stops = dict(row.split("\t") for row in page.locator("#stops tr").all_inner_texts()[1:])
            assert int(stops["failed"]) == len(failed) and sum(map(int, stops.values())) == len(records)
            assert "synthetic <profile>" in text("body") and "random-weight models (t2i, clip)" in text(".banner")
            assert text("#p-info").startswith(f"rows 1–100 of {N_IMAGES}")
            page.screenshot(path=str(ARTIFACTS / "01_index.png"))

            # sort by gain: descending first, then ascending; images without a gain go last either way
            page.click("button.sort[data-key=gain]")
            shown = page.locator("#rows td.gain").all_inner_texts()
            expected = sorted(gains.values(), reverse=True)[:100]
            assert [float(s) for s in shown] == pytest.approx(expected, abs=6e-5)
            assert page.get_attribute("button.sort[data-key=gain]", "aria-sort") == "descending"
            page.screenshot(path=str(ARTIFACTS / "02_sorted_by_gain.png"))
            page.click("button.sort[data-key=gain]")
            assert [float(s) for s in page.locator("#rows td.gain").all_inner_texts()] == pytest.approx(
                sorted(gains.values())[:100], abs=6e-5)

            # the failed ones only
            page.select_option("#f-status", "error")
            assert text("#p-info").startswith(f"rows 1–100 of {len(failed)} ({N_IMAGES} in all)")
            assert set(page.locator("#rows td.status").all_inner_texts()) == {"failed"}
            assert "the VLM <crashed>" in page.locator("#rows td.why").first.inner_text()
            page.screenshot(path=str(ARTIFACTS / "03_failed.png"))
            page.select_option("#f-status", "")

            # gain range and iterations
            page.fill("#f-gain-min", "0.1")
            n_gain = sum(g >= 0.1 for g in gains.values())
            assert text("#p-info").endswith(f"of {n_gain} ({N_IMAGES} in all) · page 1 of {-(-n_gain // 100)}")
            page.fill("#f-it-min", "6")
            n_both = sum(1 for r in records if r["image_id"] in gains and gains[r["image_id"]] >= 0.1 and len(r["iterations"]) >= 6)
            assert f"of {n_both} (" in text("#p-info") and set(page.locator("#rows td.iterations").all_inner_texts()) == {"6"}
            page.click("#f-clear")
            page.click("#p-next")
            assert text("#p-info").startswith(f"rows 101–200 of {N_IMAGES}")

            # search a name, then the one holding <script>: shown as text, never run
            target = records[1234]
            page.fill("#f-name", target["source"].split("/")[-1].upper())
            assert page.locator("#rows tr").count() == 1 and page.locator("#rows td.name").inner_text() == target["source"]
            page.fill("#f-name", "<script>")
            assert page.locator("#rows td.name").all_inner_texts() == [EVIL_NAME]
            page.screenshot(path=str(ARTIFACTS / "04_search.png"))

            # the detail page of the hostile record: everything shown as text, its images load
            page.click("#rows td.name a")
            page.wait_for_selector("section.iteration")
            evil = records[1]
            assert page.inner_text("h1") == EVIL_NAME
            assert page.locator("section.iteration").count() == len(evil["iterations"])
            assert EVIL_PROMPT in page.inner_text("section.iteration >> nth=0")
            assert "kept: CLIP-T" in page.inner_text("table.candidates >> nth=0")
            assert "dropped: too long for the token limit" in page.inner_text("table.candidates >> nth=0")
            page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
            page.wait_for_function("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
            page.screenshot(path=str(ARTIFACTS / "05_detail.png"), full_page=True)

            assert page.evaluate("document.querySelector('nav a').href") == (out / REPORT_HTML).as_uri()

            # back to the index: the search is kept (it lives in the URL's #fragment)
            page.go_back()
            page.wait_for_selector("html[data-ready]")
            assert page.input_value("#f-name") == "<script>" and page.locator("#rows tr").count() == 1
        finally:
            browser.close()
    assert not problems, problems
