"""The HTTP routes of the interactive page (FastAPI; live progress as server-sent events).

Why FastAPI in the driver and not Ray Serve: the page needs one process that holds the checkpointer
and the role clients, as the batch job's driver does, and the role actors already batch every
user's requests across runs; Ray Serve would add a proxy and replicas that would each need the
checkpointer, for no gain at the request rates of people clicking. Server-sent events, not
websockets: the server pushes and the browser only posts commands, which plain requests do;
EventSource reconnects by itself, and each event carries the whole view, so a reconnect loses nothing.

Safety: the Host header must name the address the server listens on (loopback by default: this
stops DNS-rebinding pages from reaching it), and every request that changes something must carry
the ``X-ExpectDiff`` header, which a cross-site form or image cannot send (CSRF).
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from pathlib import Path
from typing import Any, Optional

from fastapi import Depends, FastAPI, Form, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel

from agents.html_render import render
from agents.images import configure_pillow_limit
from agents.prompt_edit import EditSpecError, PromptEdit, parse_substitutions
from agents.results import UnsafePathError
from agents.serve.batches import BatchFolders
from agents.serve.events import stream
from agents.serve.options import LOOPBACK_NAMES, ServeOptions
from agents.serve.runs import RunConflict, RunManager
from agents.serve.store import RunStore
from agents.serve.uploads import UploadRefused, upload_limit

log = logging.getLogger("agents.serve")

CLIENT_HEADER = "x-expectdiff"
FORM_OVERHEAD = 1 << 16  # the other form fields and the multipart boundaries around the file
STATIC = {"serve.js": "text/javascript", "serve.css": "text/css"}
TEMPLATES = Path(__file__).resolve().parents[1] / "templates"


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        self.status, self.message = status, message


class EditRequest(BaseModel):
    content: Optional[str] = None
    style: Optional[str] = None
    substitutions: Optional[str] = None


def host_allowed(host_header: str, options: ServeOptions) -> bool:
    """The Host header names a loopback address (when listening on loopback); any host otherwise."""
    if not options.is_loopback():
        return True
    host = host_header.strip().lower()
    if host.startswith("["):  # [::1]:8000
        host = host[1:host.find("]")] if "]" in host else host
    else:
        host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return host in LOOPBACK_NAMES


def create_app(cfg: Any, roles: Any, options: ServeOptions, optimise_fn: Any = None) -> FastAPI:
    """The app; its lifespan opens the checkpointer in ``options.data_dir`` and resumes unfinished runs."""
    store = RunStore(options.data_dir)
    batches = BatchFolders(options.batches)
    state: dict[str, RunManager] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        from agents.checkpointing import open_checkpointer

        configure_pillow_limit(cfg.job.max_image_pixels)
        async with open_checkpointer(cfg.job.checkpoint, store.data_dir) as saver:
            manager = RunManager(cfg, roles, saver, store, options, optimise_fn=optimise_fn)
            state["manager"] = manager
            await manager.resume_unfinished()
            try:
                yield
            finally:
                await manager.close()

    app = FastAPI(title="expectdiff: reverse prompts", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    def manager() -> RunManager:
        return state["manager"]

    def changing(request: Request) -> None:
        if request.headers.get(CLIENT_HEADER) != "1":
            raise ApiError(403, f"requests that change something must carry the header {CLIENT_HEADER.title()}: 1 "
                                "(the page sends it; cross-site forms cannot)")

    @app.middleware("http")
    async def check_host(request: Request, call_next):
        if not host_allowed(request.headers.get("host", ""), options):
            return JSONResponse({"error": f"Host {request.headers.get('host', '')!r} is not this server's address"}, 421)
        if request.method == "POST" and request.url.path == "/api/runs":  # refused before the body is read
            declared, limit = request.headers.get("content-length", ""), upload_limit(cfg.job, options.max_upload_bytes)
            if declared.isdigit() and int(declared) > limit + FORM_OVERHEAD:
                return JSONResponse({"error": f"the upload is {declared} bytes, more than the limit of {limit} bytes"}, 413)
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        return response

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return JSONResponse({"error": exc.message}, exc.status)

    @app.exception_handler(RunConflict)
    async def run_conflict(request: Request, exc: RunConflict):  # the run is not in a state for this command
        return JSONResponse({"error": str(exc)}, 409)

    def run_or_404(run_id: str) -> str:
        try:
            manager().meta(run_id)
        except KeyError:
            raise ApiError(404, f"no run {run_id!r}") from None
        return run_id

    # ------------------------------------------------------------------ page
    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        html = render("serve_page.html", random_weight_roles=manager().random_weight_roles)
        return HTMLResponse(html, headers={"Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
                                                                      "style-src 'self'; script-src 'self'"})

    @app.get("/static/{name}")
    async def static(name: str) -> Response:
        if name not in STATIC:
            raise ApiError(404, f"no static file {name!r}")
        return FileResponse(TEMPLATES / name, media_type=STATIC[name])

    # ------------------------------------------------------------------ API
    @app.get("/api/health")
    async def health() -> dict:
        return {"ok": True, "runs": len(manager().summaries())}

    @app.get("/api/options")
    async def server_options() -> dict:
        agent = cfg.agent
        return {"framework": agent.framework, "max_steps": agent.max_steps, "seeds": list(agent.seeds),
                "max_steps_limit": options.max_steps_limit, "max_seeds": options.max_seeds,
                "max_upload_bytes": upload_limit(cfg.job, options.max_upload_bytes),
                "random_weight_roles": manager().random_weight_roles}

    @app.get("/api/runs")
    async def list_runs() -> list:
        return manager().summaries()

    @app.post("/api/runs", status_code=201, dependencies=[Depends(changing)])
    async def create_run(request: Request, file: UploadFile, framework: Optional[str] = Form(None),
                         max_steps: Optional[str] = Form(None), seeds: Optional[str] = Form(None),
                         init_prompt: Optional[str] = Form(None)) -> dict:
        limit = upload_limit(cfg.job, options.max_upload_bytes)
        try:
            run_request = manager().request(framework, _int_or_none(max_steps, "steps"), _seeds(seeds), init_prompt)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        data = await file.read(limit + 1)
        try:
            meta = await manager().create(data, file.filename or "", run_request)
        except UploadRefused as exc:
            raise ApiError(exc.status, str(exc)) from None
        return meta.summary()

    @app.get("/api/runs/{run_id}")
    async def get_run(run_id: str) -> dict:
        return await manager().view(run_or_404(run_id))

    @app.get("/api/runs/{run_id}/events")
    async def run_events(run_id: str) -> StreamingResponse:
        m = manager()
        channel = m.channel(run_or_404(run_id))

        async def current():
            return [("run", await m.view(run_id))]

        return StreamingResponse(stream(channel, current), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store"})

    @app.get("/api/events")
    async def index_events() -> StreamingResponse:
        m = manager()

        async def current():
            return [("runs", {"runs": m.summaries()})]

        return StreamingResponse(stream(m.index, current), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    @app.post("/api/runs/{run_id}/stop", dependencies=[Depends(changing)])
    async def stop_run(run_id: str) -> dict:
        await manager().stop(run_or_404(run_id))
        return await manager().view(run_id)

    @app.post("/api/runs/{run_id}/resume", dependencies=[Depends(changing)])
    async def resume_run(run_id: str) -> dict:
        await manager().resume(run_or_404(run_id))
        return await manager().view(run_id)

    @app.post("/api/runs/{run_id}/edits", dependencies=[Depends(changing)])
    async def edit_run(run_id: str, body: EditRequest) -> dict:
        run_or_404(run_id)
        try:
            subs = parse_substitutions(body.substitutions) if (body.substitutions or "").strip() else ()
            edit = PromptEdit(content=_blank_none(body.content), style=_blank_none(body.style), substitutions=subs)
        except EditSpecError as exc:
            raise ApiError(400, f"edit: {exc}") from None
        try:
            return await manager().edit(run_id, edit)
        except ValueError as exc:
            raise ApiError(400, f"edit: {exc}") from None

    @app.get("/api/runs/{run_id}/download")
    async def download(run_id: str) -> Response:
        data = await manager().download(run_or_404(run_id))
        name = f"arpo-{run_id}.zip"
        return Response(data, media_type="application/zip", headers={"Content-Disposition": f'attachment; filename="{name}"'})

    @app.get("/api/runs/{run_id}/files/{rel:path}")
    async def run_file(run_id: str, rel: str) -> Response:
        run_or_404(run_id)
        try:
            path = store.file(run_id, rel)
        except UnsafePathError:
            raise ApiError(404, f"no file {rel!r} in run {run_id}") from None
        if path.suffix.lower() not in (".png", ".html", ".json", ".txt") or path.name.startswith(".") or not path.is_file():
            raise ApiError(404, f"no file {rel!r} in run {run_id}")
        return FileResponse(path)

    @app.get("/api/roles")
    async def role_stats() -> dict:
        """Each model role's batching so far (every replica's ``stats``): how the users' requests shared forward
        passes. A role that cannot answer within 10 s is reported as such, not waited for."""
        out = {}
        for f in dataclasses.fields(roles):
            client = getattr(roles, f.name)
            if not hasattr(client, "broadcast"):
                continue
            try:
                replicas = await asyncio.wait_for(client.broadcast("stats"), 10)
            except Exception as exc:  # noqa: BLE001 - a busy or dead role is a line in the panel, not a 500
                out[f.name] = {"summary": f"no answer: {type(exc).__name__}: {exc}"}
                continue
            out[f.name] = {"summary": sharing_summary(replicas), "replicas": replicas}
        return out

    @app.get("/api/batches")
    async def list_batches() -> list:
        return batches.listing()

    @app.get("/batches/{index}/{rel:path}")
    async def batch_file(index: int, rel: str) -> Response:
        path = batches.file(index, rel)
        if path is None:
            raise ApiError(404, f"no file {rel!r} in batch folder {index}")
        return FileResponse(path, headers={"Cache-Control": "no-cache"})

    return app


def sharing_summary(replicas: list) -> str:
    """One line of how a role's callers shared it: batches and their mean size (batched roles), or calls and
    the most in flight at once (chat roles: the engine batches what is in flight)."""
    batches = items = calls = peak = 0

    def walk(obj: Any) -> None:
        nonlocal batches, items, calls, peak
        if isinstance(obj, dict):
            if isinstance(obj.get("batches"), int) and isinstance(obj.get("items"), int):
                batches, items = batches + obj["batches"], items + obj["items"]
                return
            if isinstance(obj.get("calls"), int):
                calls, peak = calls + obj["calls"], max(peak, int(obj.get("max_in_flight") or 0))
                return
            for value in obj.values():
                walk(value)

    for replica in replicas:
        walk(replica)
    parts = []
    if batches:
        parts.append(f"{batches} batches of {items} items (mean {items / batches:.2f})")
    if calls:
        parts.append(f"{calls} calls, at most {peak} at once")
    return "; ".join(parts) or "no calls yet"


def _blank_none(text: Optional[str]) -> Optional[str]:
    return text if text is not None and text.strip() else None


def _int_or_none(text: Optional[str], name: str) -> Optional[int]:
    if text is None or not text.strip():
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {text!r}") from None


def _seeds(text: Optional[str]) -> Optional[list[int]]:
    if text is None or not text.strip():
        return None
    try:
        return [int(s) for s in text.replace(" ", "").split(",") if s]
    except ValueError:
        raise ApiError(400, f"seeds must be comma-separated whole numbers, got {text!r}") from None
