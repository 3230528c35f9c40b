"""The whole job as a user runs it: ``python -m agents.batch_reverse`` with real Ray actors
serving the offline kit's tiny random-weight models. Skipped until the pieces exist."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

pytestmark = [pytest.mark.slow, pytest.mark.ray]

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("METRICS_ARTIFACTS", REPO / "tests" / "artifacts" / "metrics"))


def _kit_builders():
    try:
        from actors.offline_kit import captioner, clip, llm, t2i, vlm
        from actors.ray_actors import start_roles  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"offline kit or Ray role shells not importable yet: {exc}")
    return t2i, llm, vlm, captioner, clip


@pytest.fixture(scope="module")
def kit_config(tmp_path_factory) -> Path:
    t2i, llm, vlm, captioner, clip = _kit_builders()
    kit = tmp_path_factory.mktemp("kit")
    sections = {
        "t2i": t2i.build(kit),
        # vLLM for both chat roles, as the README's offline profile: its engine-core and worker
        # processes are what a job must not leave behind.
        "llm": llm.build(kit / "llm", backend="vllm"),
        "vlm": vlm.build(kit / "vlm", backend="vllm"),
        "captioner": captioner.build(kit),
        "clip": clip.build(kit),
        "agent": {"framework": "enhanced", "max_steps": 2, "seeds": [0]},
        "job": {"concurrency": 4, "summary_refresh_s": 0},
        "ray": {"num_cpus": 2},
    }
    path = kit / "offline.yaml"
    path.write_text(yaml.safe_dump(sections))
    return path


def test_batch_job_end_to_end_on_ray_with_offline_kit(kit_config, tmp_path):
    images = tmp_path / "imgs"
    (images / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(images / "a.png")
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(images / "sub" / "b.JPG", format="JPEG")
    (images / "broken.webp").write_bytes(b"RIFF....WEBPVP8 nope")
    out = tmp_path / "out"
    marker = f"batch-ray-test-{os.getpid()}-{tmp_path.name}"  # inherited by every process the job starts
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "EXPECTDIFF_TEST_RUN": marker}
    env.pop("RAY_ADDRESS", None)
    run = subprocess.run([sys.executable, "-m", "agents.batch_reverse", "--dir", str(images), "--out", str(out),
                          "--config", str(kit_config)], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    print(run.stderr[-3000:])  # shown with -s: the progress lines and summary
    assert run.returncode == 1, run.stderr[-4000:]  # broken.webp failed; the two images finished
    # Old code: the two vLLM engine-core processes (and their helpers) outlived a job that exited normally.
    assert _processes_with(marker) == []
    records = {r["source"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert records["broken.webp"]["status"] == "error"
    for source in ("a.png", "sub/b.JPG"):
        rec = records[source]
        assert rec["status"] == "done", rec.get("error")
        assert rec["iterations"] and all((out / p).is_file() for it in rec["iterations"] for p in it["images"])
    from agents.config import ArpoConfig
    from agents.browser.report import random_weight_roles
    from core.config import load_config

    flagged = random_weight_roles(load_config(ArpoConfig, kit_config))
    assert ("random-weight models" in (out / "report.html").read_text()) == bool(flagged)


def _one_chat_actor_profile(kit_config: Path, tmp_path: Path) -> Path:
    """The kit profile with the LLM, the VLM and the captioner served by one transformers actor (the tiny LLaVA-Next):
    one model load instead of two vLLM engines, for tests about the agent rather than the engines."""
    cfg = yaml.safe_load(kit_config.read_text())
    vlm = dict(cfg["vlm"], backend="transformers")
    cfg.update(vlm=vlm, llm=dict(vlm, sampling=cfg["llm"]["sampling"]), captioner={"backend": "vlm", "max_new_tokens": 8})
    config = tmp_path / "shared.yaml"
    config.write_text(yaml.safe_dump(cfg))
    return config


def test_batch_job_with_llm_vlm_and_captioner_in_one_actor(kit_config, tmp_path):
    """The agent unchanged over shared roles: the kit's tiny LLaVA-Next serves the LLM, the VLM and
    (captioner.backend: vlm) the captioner from one actor (transformers backend: vLLM would refuse
    the agent's longest prompts, which exceed the tiny model's 512 positions)."""
    config = _one_chat_actor_profile(kit_config, tmp_path)
    from actors.role_groups import role_groups
    from agents.config import ArpoConfig
    from core.config import load_config

    assert list(role_groups(load_config(ArpoConfig, config))) == ["t2i", "llm+vlm+captioner", "clip"]
    images = tmp_path / "imgs"
    images.mkdir()
    rng = np.random.default_rng(2)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(images / name)
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    env.pop("RAY_ADDRESS", None)
    run = subprocess.run([sys.executable, "-m", "agents.batch_reverse", "--dir", str(images), "--out", str(out),
                          "--config", str(config), "--prompts-per-image", "2", "--caption-prefix", "ohwx", "--negative"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted((r["source"], r["status"]) for r in records) == [("a.png", "done"), ("b.png", "done")]
    assert all(r["iterations"] for r in records)
    # several prompts and a trigger word through the real job (each iteration's prompt is a new one)
    for r in records:
        assert r["prompts_per_image"] == 2 and len(r["prompts"]) == min(2, len(r["iterations"]))
        assert r["caption"] == "ohwx, " + r["prompt"]["rendered"]
        # the negative-prompt search ran to its end (random weights: whatever it found, it is recorded)
        assert r["negative"]["searched"] and len(r["negative"]["outcomes"]) == len(r["negative"]["candidates"])
        assert all((out / p).is_file() for t in r["negative"]["tries"] for p in t["image_paths"])
    metadata = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert {m["file_name"]: m["text"] for m in metadata} == {r["source"]: r["caption"] for r in records}


def test_one_style_only_prompt_for_a_set_through_the_real_job(kit_config, tmp_path):
    """--group-by folder and --style-only through the real batch job, roles and CLIP twin (random weights: the
    prompt means nothing; what is checked is that a set runs as one optimisation scored against its members
    with the style similarity, and holds style fragments only). The chat roles share one transformers actor: the
    engines are not what this test is about (the vLLM-served job is the end-to-end test above)."""
    config = _one_chat_actor_profile(kit_config, tmp_path)
    images = tmp_path / "imgs"
    (images / "style_a").mkdir(parents=True)
    rng = np.random.default_rng(5)
    for name in ("x.png", "y.png", "z.png"):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(images / "style_a" / name)
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    env.pop("RAY_ADDRESS", None)
    run = subprocess.run([sys.executable, "-m", "agents.batch_reverse", "--dir", str(images), "--out", str(out),
                          "--config", str(config), "--group-by", "folder", "--style-only",
                          "--set", "agent.init_prompt=a cat, oil painting"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]
    (record,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert record["status"] == "done" and record["kind"] == "set" and record["style_only"] is True
    assert record["members"] == ["style_a/x.png", "style_a/y.png", "style_a/z.png"]
    assert all(it["content"] == [] and -1 <= it["style_i"] <= 1 for it in record["iterations"])
    best = max(record["iterations"], key=lambda it: (it["style_i"], -it["iteration"]))
    assert record["best_iteration"] == best["iteration"]
    assert record["iterations"][0]["rendered"] == "oil painting"  # the starting prompt's style part only
    captions = [json.loads(line) for line in (out / "captions.jsonl").read_text().splitlines()]
    assert sorted(c["file"] for c in captions) == record["members"]  # every member gets the set's caption
    assert {c["text"] for c in captions} == {record["prompt"]["rendered"]}
    assert (out / record["output_dir"] / "reference.png").is_file()  # the grid the VLM and captioner saw


def _processes_with(marker: str) -> list[str]:
    """Live processes whose environment carries ``marker``, i.e. started by the job (or its children)."""
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if proc.environ().get("EXPECTDIFF_TEST_RUN") == marker and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(f"{proc.pid}: {' '.join(proc.info['cmdline'] or [])[:120]}")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ray_job_submit_to_a_local_head(kit_config, tmp_path):
    """`ray job submit -- python -m agents.batch_reverse ...` against a head started here on
    127.0.0.1: the job joins that cluster (RAY_ADDRESS) instead of starting its own Ray. The job uploads
    the code only (deploy/job_runtime_env.yaml), and its metrics and the roles' reach Debian's real
    Prometheus, started on loopback with the head's service-discovery file (docs/metrics.md). The chat roles share
    one transformers actor (no vLLM engine start: the job's joining and upload are what is tested here)."""
    import shutil

    ray_bin = Path(sys.executable).with_name("ray")
    images = tmp_path / "imgs"
    images.mkdir()
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)).save(images / "c.png")
    out = tmp_path / "out"
    # Short temp dir: Ray puts unix sockets there and their paths have a length limit.
    temp = Path(f"/tmp/rj{os.getpid()}")
    # metrics reported every second (Ray's default is slower), so a short job's last figures are exported
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token",
           "RAY_metrics_report_interval_ms": "1000"}
    env.pop("RAY_ADDRESS", None)
    gcs, dash, metrics_port, prom_port = _free_port(), _free_port(), _free_port(), _free_port()
    start = subprocess.run([str(ray_bin), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs}",
                            "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--num-cpus=2",
                            f"--metrics-export-port={metrics_port}",
                            "--include-dashboard=true", f"--temp-dir={temp}", "--disable-usage-stats"],
                           env=env, capture_output=True, text=True, timeout=120)
    assert start.returncode == 0, start.stdout + start.stderr
    prometheus = _start_prometheus(temp / "prom_metrics_service_discovery.json", tmp_path / "prometheus", prom_port)
    try:
        import time

        command = [str(ray_bin), "job", "submit", "--address", f"http://127.0.0.1:{dash}",
                   "--runtime-env", "deploy/job_runtime_env.yaml", "--",
                   sys.executable, "-m", "agents.batch_reverse", "--dir", str(images), "--out", str(out),
                   "--config", str(_one_chat_actor_profile(kit_config, tmp_path)), "--set", "agent.max_steps=1"]
        deadline = time.monotonic() + 180  # the job agent has taken over 90 s to come up on a loaded 2-core machine
        while True:
            submit = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
            logs = submit.stdout + submit.stderr
            # Right after `ray start` the head's job agent may not be up yet; the job was not submitted then.
            if "No available agent to submit job" not in logs or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert submit.returncode == 0, logs[-4000:]
        assert "succeeded" in logs.lower()
        records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
        assert [r["status"] for r in records] == ["done"]
        # it joined the test's cluster: no second local Ray was started by the job
        # (the driver's INFO lines go to OUT/logs/job.log; the console shows the progress bar)
        job_log = (out / "logs" / "job.log").read_text()
        assert "joined the Ray cluster" in job_log and "started a local Ray" not in job_log + logs
        # the job ran from the uploaded package: the code and the profiles, no venv, tests, docs or images
        unpacked = [p for p in temp.glob("session_2*/runtime_resources/working_dir_files/*") if p.is_dir()]
        assert len(unpacked) == 1, unpacked
        tops = {p.name for p in unpacked[0].iterdir()}
        assert {"agents", "actors", "core", "training", "configs", "pyproject.toml"} <= tops, tops
        assert not tops & {".venv", ".git", "tests", "docs", "examples", "outputs", "runs"}, tops
        # the job's and the roles' metrics, read back through Prometheus' HTTP API
        job_id = json.loads((out / "job.json").read_text())["job_id"]
        series = _prometheus_series(prom_port, {
            "done": f'ray_expectdiff_images_total{{job_id="{job_id}",status="done"}}',
            "iterations": f'ray_expectdiff_iterations_total{{job_id="{job_id}"}}',
            "generate_node": 'ray_expectdiff_node_seconds_count{node="generate"}',
            "t2i_calls": 'ray_expectdiff_role_calls_total{role="t2i",method="generate",outcome="ok"}',
            "t2i_batches": 'ray_expectdiff_role_batch_size_count{batcher="t2i"}',
            "clip_starts": 'ray_expectdiff_role_starts_total{role="clip"}',
            "llm_tokens": 'ray_expectdiff_role_tokens_total{role="llm",direction="completion"}',
            "clip_text_cache": 'ray_expectdiff_role_cache_total{cache="clip_text"}',
        })
        print("prometheus series:", series)
        assert set(series) == {"done", "iterations", "generate_node", "t2i_calls", "t2i_batches", "clip_starts",
                               "llm_tokens", "clip_text_cache"}, series
        assert series["done"] == 1 and series["iterations"] >= 1 and series["generate_node"] >= series["iterations"], series
        assert series["t2i_calls"] >= series["iterations"] and series["t2i_batches"] >= 1 and series["clip_starts"] >= 1, series
        assert series["llm_tokens"] >= 1 and series["clip_text_cache"] >= 1, series
        _screenshot_prometheus(prom_port, "sum by (role, method) (ray_expectdiff_role_calls_total)",
                               ARTIFACTS / "prometheus_graph.png")
    finally:
        prometheus.terminate()
        prometheus.wait(timeout=30)
        # Not `ray stop`: it stops every Ray on the machine, a user's or another test run's too.
        _stop_processes_using(temp)
        shutil.rmtree(temp, ignore_errors=True)


def _start_prometheus(discovery_file: Path, folder: Path, port: int) -> subprocess.Popen:
    """Debian's prometheus on 127.0.0.1:``port``, scraping every second the targets Ray's head lists in
    ``discovery_file`` (the file Ray writes for exactly this; docs/metrics.md)."""
    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    if not Path(binary).exists():
        if os.environ.get("CI"):
            pytest.fail("prometheus is not installed (scripts/setup_env.sh installs Debian's package)")
        pytest.skip("prometheus is not installed (scripts/setup_env.sh installs Debian's package)")
    folder.mkdir(parents=True)
    config = folder / "prometheus.yml"
    config.write_text(yaml.safe_dump({"global": {"scrape_interval": "1s"}, "scrape_configs": [
        {"job_name": "ray", "file_sd_configs": [{"files": [str(discovery_file)], "refresh_interval": "1s"}]}]}))
    log = (folder / "prometheus.log").open("w")
    return subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)


def _prometheus_series(port: int, queries: dict[str, str], timeout_s: float = 90.0) -> dict[str, float]:
    """Each query's latest value over the last 15 minutes (series of finished processes included), summed over
    its series; waits until every one has a value (scrapes trail the job by a few seconds)."""
    import time
    import urllib.parse
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while True:
        found = {}
        for key, query in queries.items():
            url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": f"sum(last_over_time({query}[15m]))"})
            try:
                body = json.loads(urllib.request.urlopen(url, timeout=10).read())
            except OSError:
                continue
            result = body.get("data", {}).get("result", [])
            if result:
                found[key] = float(result[0]["value"][1])
        if len(found) == len(queries) or time.monotonic() > deadline:
            return found
        time.sleep(2)


def _screenshot_prometheus(port: int, query: str, path: Path) -> None:
    """Prometheus' own graph page for ``query`` in headless Chromium (docs/metrics.md shows the picture)."""
    import urllib.parse

    from playwright.sync_api import sync_playwright

    from tests.agents.test_report_browser import chromium_path

    path.parent.mkdir(parents=True, exist_ok=True)
    # Debian's package serves Prometheus' classic UI (its React UI is not built there)
    url = f"http://127.0.0.1:{port}/classic/graph?" + urllib.parse.urlencode(
        {"g0.expr": query, "g0.tab": "0", "g0.range_input": "5m", "g0.stacked": "0"})
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1300, "height": 850})
        page.goto(url)
        page.wait_for_selector("svg.rickshaw_graph", timeout=30_000)
        page.wait_for_timeout(1500)
        page.screenshot(path=str(path), full_page=True)
        browser.close()


def _stop_processes_using(temp: Path, grace_s: float = 15.0) -> None:
    """Stop the head started above: every process whose command line names its temp dir (GCS, raylet,
    dashboard, log monitor...) and every descendant of those: the raylet's dashboard and runtime-env agents
    retitle themselves (``ray::DashboardAgent``), and one left behind holds the agent's port, so the next
    head's job agent never comes up ("No available agent to submit job")."""
    import signal
    import time

    import psutil

    def pids() -> list[int]:
        found = set()
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    if str(temp).encode() in (proc / "cmdline").read_bytes():
                        found.add(int(proc.name))
                        found.update(c.pid for c in psutil.Process(int(proc.name)).children(recursive=True))
                except (OSError, psutil.Error):
                    pass
        return sorted(found)

    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while pids() and time.monotonic() < deadline:
            time.sleep(0.2)
        if not pids():
            return
