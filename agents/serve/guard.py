"""The page's outer wall: an ASGI middleware that refuses a request before its body is read.

Any site a user visits can make the browser send requests to 127.0.0.1 (a no-cors ``fetch`` or a form
posts any body it likes). A route refuses such a request only after FastAPI has read and parsed the
body, so a few 400 MB posts would exhaust the driver's memory before any of them is answered. Here,
in order, before the application sees the request:

1. the Host header must name this server (:meth:`ServeOptions.host_allowed`: DNS rebinding), else 421;
2. a request that changes something (any method but GET, HEAD and OPTIONS) must carry
   ``X-ExpectDiff: 1``, which a cross-site form or a no-cors ``fetch`` cannot send (CSRF), else 403;
3. its body is capped per route: a declared ``Content-Length`` over the cap is answered 413 at once,
   and the bytes actually received are counted as the application reads them (a chunked body has no
   length), so the request is cut off with 413 at the first chunk past the cap.

The server reads no more of a refused body than its socket buffer holds: uvicorn stops reading a
request the application does not consume, and closes the connection after answering.
"""
from __future__ import annotations

import json
from typing import Any, Awaitable, Callable

from starlette.datastructures import Headers

CLIENT_HEADER = "x-expectdiff"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SECURITY_HEADERS = ((b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"))

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


class _BodyTooLarge(Exception):
    """Raised into the application when a body passes its cap; the middleware answers 413 instead."""


async def send_json(send: Send, status: int, payload: dict, extra_headers: tuple = ()) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close"), *SECURITY_HEADERS, *extra_headers]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    """``RequestGuard(app, host_allowed, body_limit)``: see the module docstring.

    ``host_allowed(host_header) -> bool``; ``body_limit(method, path) -> int`` is the most body bytes the
    route takes (0 for routes that take none)."""

    def __init__(self, app: Any, host_allowed: Callable[[str], bool], body_limit: Callable[[str, str], int]):
        self.app, self.host_allowed, self.body_limit = app, host_allowed, body_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        if not self.host_allowed(host):
            return await send_json(send, 421, {"error": f"Host {host[:200]!r} is not this server's address "
                                                        "(start it with --allowed-host NAME to allow another name)"})
        method = scope["method"]
        if method not in SAFE_METHODS and headers.get(CLIENT_HEADER) != "1":
            return await send_json(send, 403, {"error": f"requests that change something must carry the header "
                                                        f"{CLIENT_HEADER.title()}: 1 (the page sends it; cross-site "
                                                        "forms cannot)"})
        limit = self.body_limit(method, scope["path"])
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                return await send_json(send, 400, {"error": f"Content-Length {declared[:40]!r} is not a number"})
            if int(declared) > limit:
                return await send_json(send, 413, _too_large(limit, f"the body is {int(declared)} bytes"))
        await self._capped(scope, receive, send, limit)

    async def _capped(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        received, over, started = 0, False, False

        async def capped_receive() -> dict:
            nonlocal received, over
            if over:
                raise _BodyTooLarge()
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    over = True
                    raise _BodyTooLarge()
            return message

        async def guarded_send(message: dict) -> None:
            nonlocal started
            if over:  # whatever the application made of the cut-off body, the answer is 413
                return
            if message["type"] == "http.response.start":
                started = True
                present = {name.lower() for name, _ in message.get("headers", [])}
                message = {**message, "headers": [*message.get("headers", []),
                                                  *(h for h in SECURITY_HEADERS if h[0] not in present)]}
            await send(message)

        try:
            await self.app(scope, capped_receive, guarded_send)
        except _BodyTooLarge:
            pass
        except Exception:
            if not over:
                raise
        if over and not started:
            await send_json(send, 413, _too_large(limit, f"more than {limit} bytes were sent"))


def _too_large(limit: int, what: str) -> dict:
    return {"error": f"{what}; this route takes at most {limit} bytes", "limit_bytes": limit}
