"""The HTTP routes of the interactive page (FastAPI; live progress as server-sent events).

Why FastAPI in the driver and not Ray Serve: the page needs one process that holds the checkpointer
and the role clients, as the batch job's driver does, and the role actors already batch every
user's requests across runs; Ray Serve would add a proxy and replicas that would each need the
checkpointer, for no gain at the request rates of people clicking. Server-sent events, not
websockets: the server pushes and the browser only posts commands, which plain requests do;
EventSource reconnects by itself, and each event carries the whole view, so a reconnect loses nothing.

Safety: agents/serve/guard.py refuses, before a body is read, a request whose Host does not name this
server (DNS rebinding), one that changes something without the ``X-ExpectDiff`` header (CSRF: a
cross-site form or no-cors fetch cannot send it) and a body over its route's cap (413). Nothing slow
runs on the event loop: decoding, PNG encoding, file reads and zip writing run in threads, run
summaries are kept in memory and batch summaries are read incrementally. Files served from run and
batch folders must stay inside them after symlinks are resolved, name no hidden file and have a
suffix the page uses; HTML among them is served with a Content-Security-Policy.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from pathlib import Path
from typing import Any, Callable, Optional

from fastapi import FastAPI, Form, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel
from starlette.background import BackgroundTask

from agents.browser.html_render import render
from agents.images import configure_pillow_limit
from agents.editing.prompt_edit import MAX_PART_CHARS, EditSpecError, PromptEdit, parse_substitutions
from agents.prompt_limit import check_negative_support, with_prompt_limit
from agents.ranked_prompts import MAX_PROMPTS_PER_IMAGE
from agents.serve.batches import BatchFolders
from agents.serve.events import stream
from agents.serve.files import FILE_CSP, served_file
from agents.serve.guard import RequestGuard
from agents.serve.options import ServeOptions
from agents.serve.runs import QueueFull, RunConflict, RunManager
from agents.serve.store import RunStore
from agents.serve.uploads import UploadRefused, upload_limit

log = logging.getLogger("agents.serve")

FORM_OVERHEAD = 1 << 16  # the other form fields and the multipart boundaries around the file
EDIT_BODY_BYTES = 1 << 16  # an edit request: three short texts as JSON
SMALL_BODY_BYTES = 1 << 10  # routes that take no body (stop, resume)
RUN_FILE_SUFFIXES = frozenset({".png", ".html", ".json", ".txt"})
STATIC = {"serve.js": "text/javascript", "serve.css": "text/css"}
TEMPLATES = Path(__file__).resolve().parents[1] / "templates"


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        self.status, self.message = status, message


class EditRequest(BaseModel):
    content: Optional[str] = None
    style: Optional[str] = None
    substitutions: Optional[str] = None

    def check_sizes(self) -> None:
        """Each text within its limit (the substitutions' limits are the parser's); the refusal names it."""
        for name in ("content", "style"):
            value = getattr(self, name)
            if value is not None and len(value) > MAX_PART_CHARS:
                raise EditSpecError(f"the new {name} has {len(value)} characters; at most {MAX_PART_CHARS}")


def create_app(cfg: Any, roles: Any, options: ServeOptions, optimise_fn: Any = None,
               on_ready: Optional[Callable[[], None]] = None) -> FastAPI:
    """The app; its lifespan opens the checkpointer in ``options.data_dir``, resumes unfinished runs, then
    calls ``on_ready``."""
    store = RunStore(options.data_dir)
    batches = BatchFolders(options.batches)
    state: dict[str, RunManager] = {}
    upload_bytes = upload_limit(cfg.job, options.max_upload_bytes)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        from agents.checkpointing import open_checkpointer

        configure_pillow_limit(cfg.job.max_image_pixels)
        await asyncio.to_thread(store.load_all)
        async with open_checkpointer(cfg.job.checkpoint, store.data_dir) as saver:
            run_cfg = await with_prompt_limit(cfg, roles.t2i)
            await check_negative_support(run_cfg, roles.t2i)
            manager = RunManager(run_cfg, roles, saver, store, options, optimise_fn=optimise_fn)
            manager.negative_refused = (await roles.t2i.prompt_budget()).get("negative_prompt_refused")
            state["manager"] = app.state.manager = manager
            await asyncio.to_thread(manager.clear_download_spool)
            await manager.resume_unfinished()
            if on_ready is not None:
                on_ready()
            try:
                yield
            finally:
                await manager.close()

    app = FastAPI(title="expectdiff: reverse prompts", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    def body_limit(method: str, path: str) -> int:
        if method == "POST" and path == "/api/runs":
            return upload_bytes + FORM_OVERHEAD
        if method == "POST" and path.endswith("/edits"):
            return EDIT_BODY_BYTES
        return SMALL_BODY_BYTES

    app.add_middleware(RequestGuard, host_allowed=options.host_allowed, body_limit=body_limit)

    def manager() -> RunManager:
        return state["manager"]

    @app.exception_handler(ApiError)
    async def api_error(request, exc: ApiError):
        return JSONResponse({"error": exc.message}, exc.status)

    @app.exception_handler(RunConflict)
    async def run_conflict(request, exc: RunConflict):  # the run is not in a state for this command
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
        return {"ok": True, "runs": manager().run_count()}

    @app.get("/api/options")
    async def server_options() -> dict:
        agent = cfg.agent
        return {"framework": agent.framework, "max_steps": agent.max_steps, "seeds": list(agent.seeds),
                "prompts_per_image": agent.prompts_per_image, "max_prompts_per_image": MAX_PROMPTS_PER_IMAGE,
                "caption_prefix": agent.caption_prefix, "negative": agent.negative.enabled, "style_only": agent.style_only,
                "negative_refused": manager().negative_refused,
                "max_steps_limit": options.max_steps_limit, "max_seeds": options.max_seeds,
                "max_upload_bytes": upload_bytes, "max_upload_pixels": manager().max_upload_pixels,
                "max_set_images": options.max_set_images,
                "random_weight_roles": manager().random_weight_roles}

    @app.get("/api/runs")
    async def list_runs() -> list:
        return manager().summaries()

    @app.post("/api/runs", status_code=201)
    async def create_run(file: list[UploadFile], framework: Optional[str] = Form(None),
                         max_steps: Optional[str] = Form(None), seeds: Optional[str] = Form(None),
                         init_prompt: Optional[str] = Form(None), prompts_per_image: Optional[str] = Form(None),
                         caption_prefix: Optional[str] = Form(None), negative: Optional[str] = Form(None),
                         style_only: Optional[str] = Form(None)) -> dict:
        try:
            run_request = manager().request(framework, _int_or_none(max_steps, "steps"), _seeds(seeds), init_prompt,
                                            _int_or_none(prompts_per_image, "prompts per image"), caption_prefix,
                                            _flag_or_none(negative, "negative"), _flag_or_none(style_only, "style only"))
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        if len(file) > options.max_set_images:
            raise ApiError(400, f"{len(file)} images in one upload; a set holds at most {options.max_set_images} "
                                "(--max-set-images)")
        uploads = [(await f.read(upload_bytes + 1), f.filename or "") for f in file]
        try:
            if len(uploads) == 1:
                meta = await manager().create(*uploads[0], run_request)
            else:  # several images: one prompt for the set
                meta = await manager().create_set(uploads, run_request)
        except UploadRefused as exc:
            raise ApiError(exc.status, str(exc)) from None
        except QueueFull as exc:
            raise ApiError(429, str(exc)) from None
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

    @app.post("/api/runs/{run_id}/stop")
    async def stop_run(run_id: str) -> dict:
        await manager().stop(run_or_404(run_id))
        return await manager().view(run_id)

    @app.post("/api/runs/{run_id}/resume")
    async def resume_run(run_id: str) -> dict:
        await manager().resume(run_or_404(run_id))
        return await manager().view(run_id)

    @app.post("/api/runs/{run_id}/edits")
    async def edit_run(run_id: str, body: EditRequest) -> dict:
        run_or_404(run_id)
        try:
            body.check_sizes()
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
        path = await manager().download(run_or_404(run_id))
        return FileResponse(path, media_type="application/zip", filename=f"arpo-{run_id}.zip",
                            background=BackgroundTask(path.unlink, missing_ok=True))

    @app.get("/api/runs/{run_id}/files/{rel:path}")
    async def run_file(run_id: str, rel: str) -> Response:
        run_or_404(run_id)
        path = await asyncio.to_thread(served_file, store.run_dir(run_id), rel, RUN_FILE_SUFFIXES)
        if path is None:
            raise ApiError(404, f"no file {_shown(rel)} in run {run_id}")
        return _file_response(path)

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
        return await asyncio.to_thread(batches.listing)

    @app.get("/batches/{index}/{rel:path}")
    async def batch_file(index: int, rel: str) -> Response:
        path = await asyncio.to_thread(batches.file, index, rel)
        if path is None:
            raise ApiError(404, f"no file {_shown(rel)} in batch folder {index}")
        return _file_response(path, {"Cache-Control": "no-cache"})

    return app


def _file_response(path: Path, headers: Optional[dict] = None) -> FileResponse:
    """A file from a run or batch folder; HTML gets a CSP (a page found there runs no inline or foreign script)."""
    headers = dict(headers or {})
    if path.suffix.lower() in (".html", ".htm"):
        headers["Content-Security-Policy"] = FILE_CSP
    return FileResponse(path, headers=headers)


def _shown(rel: str) -> str:
    """A requested path as the refusal quotes it (control characters escaped, length capped)."""
    return repr(rel[:200])


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


def _flag_or_none(text: Optional[str], name: str) -> Optional[bool]:
    if text is None or not text.strip():
        return None
    value = text.strip().lower()
    if value in ("1", "true", "on", "yes"):
        return True
    if value in ("0", "false", "off", "no"):
        return False
    raise ValueError(f"{name} must be true or false, got {text!r}")


def _seeds(text: Optional[str]) -> Optional[list[int]]:
    if text is None or not text.strip():
        return None
    try:
        return [int(s) for s in text.replace(" ", "").split(",") if s]
    except ValueError:
        raise ApiError(400, f"seeds must be comma-separated whole numbers, got {text!r}") from None
