"""The interactive page's server on a free loopback port in a thread, over scripted doubles (tests only)."""
from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from pathlib import Path
from typing import Iterator, Optional

import httpx

from agents.config import ArpoConfig
from agents.images import save_png
from agents.serve.app import create_app
from agents.serve.options import ServeOptions
from tests.agents.doubles import World, fragment_sum, make_roles

WEIGHTS = {"whiskers": 0.05, "green eyes": 0.04, "oil painting": 0.03, "tabby": 0.02}
REPLIES = {"content": ["whiskers, tabby"] * 50, "style": ["oil painting"] * 50, None: ["whiskers, green eyes, oil painting"] * 50}
HEADERS = {"X-ExpectDiff": "1"}


def world() -> World:
    return World(fragment_sum(WEIGHTS))


class Gate:
    """Holds a role's calls until opened (to watch a run mid-way, or stop it there)."""

    def __init__(self, role, method: str):
        self.role, self.method = role, method
        self.opened = asyncio.Event()
        self.waiting = 0
        original = getattr(role, method)

        async def held(*args, **kwargs):
            self.waiting += 1
            await self.opened.wait()
            return await original(*args, **kwargs)

        setattr(role, method, held)


def gated(role: str, method: str):
    """(world, the doubles, a Gate holding ``role.method`` until opened)."""
    w = world()
    roles = make_roles(w, REPLIES)
    return w, roles, Gate(getattr(roles, role), method)


class Server:
    """uvicorn serving ``create_app`` in a thread; ``url`` once started."""

    def __init__(self, cfg: ArpoConfig, roles, options: ServeOptions):
        import uvicorn

        self.app = create_app(cfg, roles, options)
        self.sock = socket.socket()
        self.sock.bind((options.host, 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", timeout_graceful_shutdown=2))
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self.server.serve(sockets=[self.sock]))

    def call(self, coro_fn, timeout: float = 10):
        """Run ``coro_fn()`` on the server's loop (e.g. to open a Gate)."""
        return asyncio.run_coroutine_threadsafe(coro_fn(), self.loop).result(timeout)

    def __enter__(self) -> "Server":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()


def config(tmp: Path, **agent) -> ArpoConfig:
    return ArpoConfig.model_validate({"agent": {"framework": "enhanced", "max_steps": 3, "seeds": [0, 1], **agent},
                                      "job": {"checkpoint": {"kind": "sqlite"}}})


def png_of(w: World) -> bytes:
    return save_png(w.reference)


def upload(client: httpx.Client, data: bytes, name: str = "cat.png", **fields) -> httpx.Response:
    return client.post("/api/runs", files={"file": (name, data, "image/png")}, data={k: str(v) for k, v in fields.items()},
                       headers=HEADERS)


def wait_status(client: httpx.Client, run_id: str, statuses: tuple, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        view = client.get(f"/api/runs/{run_id}").json()
        if view["run"]["status"] in statuses:
            return view
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} still {view['run']['status']} after {timeout}s")
        time.sleep(0.05)


def read_events(client: httpx.Client, url: str, until, timeout: float = 30) -> list[tuple[str, dict]]:
    """Server-sent events of ``url`` until ``until(events)`` is true."""
    events: list[tuple[str, dict]] = []
    deadline = time.monotonic() + timeout
    with client.stream("GET", url, timeout=timeout) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
                if until(events):
                    return events
            if time.monotonic() > deadline:
                break
    raise AssertionError(f"events of {url} never met the condition; got {[(n, d.get('run', {}).get('status')) for n, d in events]}")


@contextlib.contextmanager
def serving(tmp: Path, w: Optional[World] = None, roles=None, cfg: Optional[ArpoConfig] = None, **options) -> Iterator[tuple]:
    w = w or world()
    roles = roles or make_roles(w, REPLIES)
    cfg = cfg or config(tmp)
    opts = ServeOptions(data_dir=tmp / "data", **options)
    with Server(cfg, roles, opts) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        yield server, client, roles, w
