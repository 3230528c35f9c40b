"""The memory planner on a machine that cannot reach the model hub, with HF_HUB_OFFLINE unset (what a
cluster without egress is): it falls back to the built-in table after one short question, says why, and
takes only a real "no such file" answer from a reachable hub to mean the file is missing."""
import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import actors.hub_probe as hub_probe
from actors.memory.plan import make_plan
from actors.memory.sections import role_sections
from core.config import read_yaml

GiB = 1 << 30
REPO = Path(__file__).resolve().parents[2]
# configs/one_gpu_24gb.yaml: Qwen2-VL-7B-AWQ and SD1.5, both in the built-in table.
SECTIONS = read_yaml(REPO / "configs/one_gpu_24gb.yaml")


class FakeHub:
    """A loopback server that plays one kind of hub: ``blackhole`` (accepts, never answers), ``proxy403``
    (a proxy's refusal page: 403 without the hub's error code), ``missing`` (the hub's 404 EntryNotFound)."""

    def __init__(self, mode: str):
        self.mode, self.requests, self.connections = mode, 0, 0
        if mode == "blackhole":
            self.sock = socket.socket()
            self.sock.bind(("127.0.0.1", 0))
            self.sock.listen(64)
            self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
            self.held = []
            threading.Thread(target=self._hold, daemon=True).start()
            return
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_HEAD(self):
                hub.requests += 1
                if hub.mode == "missing":
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                else:
                    self.send_response(403, "Forbidden by proxy policy")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _hold(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            self.held.append(conn)  # never read, never answered

    def close(self):
        if self.mode == "blackhole":
            self.sock.close()
        else:
            self.server.shutdown()


def closed_port_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def hub_at(monkeypatch, tmp_path):
    """Point huggingface_hub at ``url`` with HF_HUB_OFFLINE unset and an empty cache."""
    import huggingface_hub.constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    cache = tmp_path / "hf_cache"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub_probe, "HUB_TIMEOUT_S", 1.0)
    hub_probe.forget_unreachable()
    yield lambda url: monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", url)
    hub_probe.forget_unreachable()


@pytest.mark.parametrize("kind", ["refused", "dns", "blackhole", "proxy403"])
def test_an_unreachable_hub_falls_back_to_the_built_in_table_and_says_why(hub_at, kind):
    fake = FakeHub(kind) if kind in ("blackhole", "proxy403") else None
    hub_at(fake.url if fake else closed_port_url() if kind == "refused" else "https://no-such-host.invalid")
    try:
        plan = make_plan(role_sections(SECTIONS), 24 * GiB)
    finally:
        if fake:
            fake.close()
    sources = {n.group.name: n.source for n in plan.needs if n.where == "gpu" and n.group.name != "clip"}
    assert set(sources) == {"t2i", "llm+vlm+captioner"}  # clip's sizes come from open_clip, not the hub
    for source in sources.values():
        assert source.startswith("built-in table; the hub could not be asked: "), source
    assert not plan.unknown and not plan.problems()
    text = plan.format()
    assert "(from the built-in table; the hub could not be asked: " in text
    if kind == "proxy403":
        assert "HTTP 403" in sources["t2i"] and "proxy" in sources["t2i"]
        assert fake.requests == 1  # the endpoint is remembered as unreachable: one question for the whole plan
    if kind == "blackhole":
        assert "within 1 s" in sources["t2i"]
        assert fake.connections == 1


def test_only_the_hubs_own_no_such_file_answer_means_missing(hub_at):
    fake = FakeHub("missing")
    hub_at(fake.url)
    try:
        plan = make_plan(role_sections(SECTIONS), 24 * GiB)
    finally:
        fake.close()
    assert fake.requests >= 1
    llm = next(n for n in plan.needs if n.group.name.startswith("llm"))
    assert "has no config.json" in llm.unknown, llm.unknown


def test_ask_hub_keeps_missing_apart_from_unreachable(hub_at):
    fake = FakeHub("missing")
    try:
        assert hub_probe.ask_hub("a/b", "config.json", hub=fake.url).verdict == "missing"
    finally:
        fake.close()
    answer = hub_probe.ask_hub("a/b", "config.json", hub=closed_port_url())
    assert answer.verdict == "unreachable" and "ConnectError" in answer.detail


def test_the_documented_plan_command_answers_from_the_table_without_a_hub(tmp_path):
    """README's one-GPU command, as a user types it: HF_HUB_OFFLINE unset, the hub unreachable."""
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.update(HF_ENDPOINT=closed_port_url(), HF_HOME=str(tmp_path / "hf"))
    done = subprocess.run([sys.executable, "-m", "actors.plan", "--config", "configs/one_gpu_24gb.yaml",
                           "--gpu-memory", "24GiB"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "size unknown" not in done.stdout
    assert done.stdout.count("(from the built-in table; the hub could not be asked: ConnectError") == 2
    assert "Fits." in done.stdout
