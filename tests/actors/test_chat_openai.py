"""OpenAI-compatible backend against a scripted HTTP server on 127.0.0.1 (request shape, auth, retries, key hygiene)."""
import base64
import io
import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from actors.chat.base import ChatBackendError
from actors.chat.openai_backend import OpenAIChatBackend
from actors.chat.server import LLMServer, VLMServer
from actors.config import LLMConfig, VLMConfig

KEY = "sk-test-0123456789-secret"
KEY_ENV = "EXPECTDIFF_TEST_OPENAI_KEY"


class StubServer:
    """Answers POST /v1/chat/completions from a script of (status, body, headers); records every request."""

    def __init__(self):
        self.script: list[tuple[int, object, dict]] = []
        self.requests: list[dict] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                status, payload, headers = stub.script.pop(0) if stub.script else (200, completion("ok"), {})
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def completion(text: str) -> dict:
    return {"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 3}}


@pytest.fixture
def stub():
    s = StubServer()
    yield s
    s.close()


@pytest.fixture
def key_env(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)


def cfg_for(base_url: str, cls=LLMConfig, **openai):
    return cls(backend="openai", model="served-model", sampling={"max_new_tokens": 20, "temperature": 0.3, "top_p": 0.9, "seed": 4},
               openai={"base_url": base_url, "api_key_env": KEY_ENV, "max_retries": 3, "timeout_s": 5, **openai})


def server_for(cfg, vision=False):
    backend = OpenAIChatBackend(cfg, vision, backoff_base_s=0.01)
    return (VLMServer if vision else LLMServer)(cfg, backend=backend)


async def test_text_request_shape_and_auth(stub, key_env):
    server = server_for(cfg_for(stub.base_url))
    stub.script.append((200, completion("a red cat"), {}))
    answer = await server.chat([{"role": "system", "content": "brief"}, {"role": "user", "content": "describe"}], {"seed": 9})
    assert answer == "a red cat"
    (req,) = stub.requests
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["Authorization"] == f"Bearer {KEY}"
    assert req["body"] == {"model": "served-model", "max_tokens": 20, "temperature": 0.3, "top_p": 0.9, "seed": 9,
                           "messages": [{"role": "system", "content": "brief"}, {"role": "user", "content": "describe"}]}
    stats = await server.stats()
    assert stats["backend"] == "openai" and stats["prompt_tokens"] == 7 and stats["completion_tokens"] == 3
    await server.aclose()


async def test_image_parts_are_png_data_urls(stub, key_env):
    server = server_for(cfg_for(stub.base_url, VLMConfig), vision=True)
    a = np.random.RandomState(0).randint(0, 256, (9, 7, 3), dtype=np.uint8)
    b = np.zeros((4, 5, 3), np.uint8)
    await server.chat([{"role": "user", "content": [{"type": "image", "image": a}, {"type": "image", "image": b},
                                                     {"type": "text", "text": "compare"}]}])
    content = stub.requests[0]["body"]["messages"][0]["content"]
    assert [p["type"] for p in content] == ["image_url", "image_url", "text"] and content[2]["text"] == "compare"
    for part, img in zip(content[:2], (a, b)):
        head, data = part["image_url"]["url"].split(",", 1)
        assert head == "data:image/png;base64"
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(base64.b64decode(data)))), img)
    await server.aclose()


async def test_retries_on_500_and_429_then_succeeds(stub, key_env, caplog):
    server = server_for(cfg_for(stub.base_url))
    stub.script += [(500, {"error": "boom"}, {}), (429, {"error": "slow down"}, {"Retry-After": "0"}), (200, completion("finally"), {})]
    with caplog.at_level(logging.DEBUG):
        assert await server.chat([{"role": "user", "content": "hi"}]) == "finally"
    assert len(stub.requests) == 3
    assert (await server.stats())["retries"] == 2
    assert "HTTP 500" in caplog.text and "HTTP 429" in caplog.text
    assert KEY not in caplog.text
    await server.aclose()


async def test_gives_up_after_max_retries_naming_url_and_status_without_key(stub, key_env, caplog):
    server = server_for(cfg_for(stub.base_url, max_retries=2))
    # A hostile server echoing the key back must not get it into our error or logs.
    stub.script += [(503, {"error": f"unavailable for {KEY}"}, {})] * 3
    with caplog.at_level(logging.DEBUG), pytest.raises(ChatBackendError) as err:
        await server.chat([{"role": "user", "content": "hi"}])
    msg = str(err.value)
    assert f"{stub.base_url}/chat/completions" in msg and "HTTP 503" in msg and "after 3 attempt(s)" in msg
    assert KEY not in msg and KEY not in repr(err.value) and KEY not in caplog.text
    assert len(stub.requests) == 3
    assert (await server.stats())["failures"] == 1
    await server.aclose()


async def test_client_errors_are_not_retried(stub, key_env):
    server = server_for(cfg_for(stub.base_url))
    stub.script.append((401, {"error": "bad key"}, {}))
    with pytest.raises(ChatBackendError, match=r"chat/completions failed: HTTP 401"):
        await server.chat([{"role": "user", "content": "hi"}])
    assert len(stub.requests) == 1
    await server.aclose()


async def test_malformed_completion_is_a_clear_error(stub, key_env):
    server = server_for(cfg_for(stub.base_url))
    stub.script.append((200, {"choices": []}, {}))
    with pytest.raises(ChatBackendError, match=r"expected choices\[0\].message.content"):
        await server.chat([{"role": "user", "content": "hi"}])
    await server.aclose()


async def test_connection_errors_are_retried_then_reported(key_env, caplog):
    with socket.socket() as s:  # a loopback port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    server = server_for(cfg_for(url, max_retries=1))
    with caplog.at_level(logging.DEBUG), pytest.raises(ChatBackendError) as err:
        await server.chat([{"role": "user", "content": "hi"}])
    assert f"{url}/chat/completions failed after 2 attempt(s): ConnectError" in str(err.value)
    assert KEY not in caplog.text
    await server.aclose()


def test_key_comes_from_the_named_env_var_and_stays_out_of_repr(stub, key_env, monkeypatch):
    backend = OpenAIChatBackend(cfg_for(stub.base_url), vision=False)
    assert KEY not in repr(backend) and "key=set" in repr(backend)
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(ValueError, match=f"api_key_env names '{KEY_ENV}'.*not set"):
        OpenAIChatBackend(cfg_for(stub.base_url), vision=False)


async def test_no_key_sends_no_auth_header(stub):
    cfg = cfg_for(stub.base_url, api_key_env=None)
    server = server_for(cfg)
    await server.chat([{"role": "user", "content": "hi"}])
    assert "Authorization" not in stub.requests[0]["headers"]
    await server.aclose()
