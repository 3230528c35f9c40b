"""``RunManager``: every upload is one optimisation thread on the shared checkpointer and the shared roles.

Runs start at once up to ``max_running`` (the rest queue); several users' runs share the role actors,
whose batchers put their requests into the same forward passes. After each node the run's view (its
graph state as a ``ReverseResult``, its timeline, its edits) is published on the run's channel.

Bounded: at most ``max_queued`` uploads wait for a slot (one more is refused, HTTP 429), at most
``max_decodes`` uploads are decoded at once, each within ``max_upload_pixels``, and at most
``max_graphs`` compiled graphs are kept (least recently used dropped). A download is a zip written
in a thread to a temporary file and streamed from it (images stored as they are: PNG is compressed).

A stop cancels the run where the checkpointer last saved it (resume continues from there). A server
shutdown cancels the same way but leaves ``run.json`` saying running or queued: the next start resumes
those runs, unless the server's result-changing settings differ from the run's (then it is ``stale``,
shown but not resumed: its images would mix two models).
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import tempfile
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Awaitable, Callable, Optional

from actors.object_refs import ImageRefs
from agents.batch.identity import fingerprint, result_settings
from agents.config import AgentConfig, ArpoConfig
from agents.editing.edit import generate_edit
from agents.browser.edit_strip import read_edit_index
from agents.graph import build_graph, compile_graph, thread_config
from agents.image_id import ID_HEX_DIGITS
from agents.images import save_png
from agents.editing.prompt_edit import PromptEdit
from agents.browser.report import random_weight_roles
from agents.ranked_prompts import MAX_PROMPTS_PER_IMAGE
from agents.result import result_from_state
from agents.browser.results import atomic_write_bytes, atomic_write_text
from agents.training_caption import check_caption_prefix
from agents.serve.events import Channel
from agents.serve.options import ServeOptions
from agents.serve.store import REFERENCE_PNG, RESULT_JSON, RUN_JSON, UNFINISHED, RunMeta, RunRequest, RunStore, new_run_id
from agents.serve.uploads import check_upload

log = logging.getLogger("agents.serve")

DOWNLOADS_DIR = ".downloads"  # zips being sent (hidden: never served as a run file)
STORED_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".zip"})


class RunConflict(RuntimeError):
    """The run is not in a state that allows this (HTTP 409); the message says why."""


class QueueFull(RuntimeError):
    """Every slot is busy and the queue is full (HTTP 429); the message names the limit."""


class RunManager:
    def __init__(self, cfg: ArpoConfig, roles: Any, checkpointer: Any, store: RunStore, options: ServeOptions,
                 optimise_fn: Optional[Callable[..., Awaitable[Any]]] = None):
        if optimise_fn is None:
            from agents.api import optimise as optimise_fn
        self.cfg, self.roles, self.checkpointer, self.store, self.options = cfg, roles, checkpointer, store, options
        self.optimise_fn = optimise_fn
        self.fingerprint = fingerprint(result_settings(cfg))
        self.random_weight_roles = random_weight_roles(cfg)
        self.index = Channel()  # run summaries, for every page's run list
        self._channels: dict[str, Channel] = {}
        self._tasks: dict[str, asyncio.Task] = {}
        self._live: dict[str, RunMeta] = {}  # the meta of runs in flight (their timeline grows in memory)
        self._stopping: set[str] = set()
        self._graphs: OrderedDict[str, Any] = OrderedDict()
        # the images of the runs in flight as object-store references (Ray roles only), released as each run ends
        self._refs = ImageRefs()
        self._edit_locks: dict[str, asyncio.Lock] = {}
        self._slots = asyncio.Semaphore(options.max_running)
        self._decodes = asyncio.Semaphore(options.max_decodes)
        self.max_upload_pixels = min(options.max_upload_pixels, cfg.job.max_image_pixels)
        self.negative_refused: Optional[str] = None  # why the T2I role cannot use a negative prompt (set at start)

    # ------------------------------------------------------------------ requests
    def request(self, framework: Optional[str], max_steps: Optional[int], seeds: Optional[list[int]],
                init_prompt: Optional[str], prompts_per_image: Optional[int] = None,
                caption_prefix: Optional[str] = None, negative: Optional[bool] = None,
                style_only: Optional[bool] = None) -> RunRequest:
        """The user's choices, defaults from the config's agent section; ValueError names a bad one."""
        agent, opts = self.cfg.agent, self.options
        framework = framework or agent.framework
        if framework not in ("vanilla", "enhanced"):
            raise ValueError(f"framework must be vanilla or enhanced, got {framework!r}")
        max_steps = agent.max_steps if max_steps is None else max_steps
        if not 1 <= max_steps <= opts.max_steps_limit:
            raise ValueError(f"steps must be between 1 and {opts.max_steps_limit}, got {max_steps}")
        seeds = list(agent.seeds) if not seeds else seeds
        if len(seeds) > opts.max_seeds:
            raise ValueError(f"at most {opts.max_seeds} seeds, got {len(seeds)}")
        if len(set(seeds)) != len(seeds) or any(not 0 <= s < 2 ** 32 for s in seeds):
            raise ValueError(f"seeds must be distinct integers from 0 to 4294967295, got {seeds}")
        init_prompt = (init_prompt or "").strip() or None
        if init_prompt is not None and len(init_prompt) > 2000:
            raise ValueError(f"the starting prompt has {len(init_prompt)} characters; at most 2000")
        prompts_per_image = agent.prompts_per_image if prompts_per_image is None else prompts_per_image
        if not 1 <= prompts_per_image <= MAX_PROMPTS_PER_IMAGE:
            raise ValueError(f"prompts per image must be between 1 and {MAX_PROMPTS_PER_IMAGE}, got {prompts_per_image}")
        caption_prefix = (caption_prefix or "").strip() or agent.caption_prefix
        try:
            caption_prefix = check_caption_prefix(caption_prefix)
        except ValueError as exc:
            raise ValueError(f"trigger word: {exc}") from None
        negative = agent.negative.enabled if negative is None else negative
        if negative and self.negative_refused:
            raise ValueError(f"a negative prompt cannot be searched on this server's text-to-image model: {self.negative_refused}")
        style_only = agent.style_only if style_only is None else style_only
        if style_only and negative:
            raise ValueError("style only and a negative prompt do not go together: the negative search raises CLIP-I, "
                             "not the style similarity; untick one")
        return RunRequest(framework=framework, max_steps=max_steps, seeds=seeds, init_prompt=init_prompt,
                          prompts_per_image=prompts_per_image, caption_prefix=caption_prefix, negative=negative,
                          style_only=style_only)

    def agent_config(self, request: RunRequest) -> AgentConfig:
        data = self.cfg.agent.model_dump()
        data.update(framework=request.framework, max_steps=request.max_steps, seeds=request.seeds, init_prompt=None,
                    prompts_per_image=request.prompts_per_image, caption_prefix=request.caption_prefix,
                    negative={**self.cfg.agent.negative.model_dump(), "enabled": request.negative},
                    style_only=request.style_only)
        return AgentConfig.model_validate(data)

    def _graph(self, agent_cfg: AgentConfig) -> Any:
        key = agent_cfg.model_dump_json(exclude={"prompts_per_image"})  # the graph does not use it
        if key in self._graphs:
            self._graphs.move_to_end(key)
        else:
            graph = build_graph(self.roles, agent_cfg, self.cfg.t2i.max_prompt_tokens,
                                max_image_pixels=self.cfg.job.max_image_pixels, base_dir=self.store.data_dir,
                                negative_prompt=self.cfg.t2i.negative_prompt, refs=self._refs)
            self._graphs[key] = compile_graph(graph, self.checkpointer)
            while len(self._graphs) > self.options.max_graphs:  # a run in flight keeps its own reference
                self._graphs.popitem(last=False)
        return self._graphs[key]

    # ------------------------------------------------------------------ lifecycle
    async def create(self, data: bytes, filename: str, request: RunRequest) -> RunMeta:
        """Check and store the upload, then start its run; UploadRefused for a bad file, QueueFull when the
        queue is full (checked first: a refused upload is not decoded)."""
        self._check_queue()
        async with self._decodes:
            name, pixels = await asyncio.to_thread(check_upload, data, filename, self.cfg.job,
                                                   self.options.max_upload_bytes, self.max_upload_pixels)
            png = await asyncio.to_thread(save_png, pixels)
        del pixels
        self._check_queue()  # others may have queued while this one was decoded
        run_id = new_run_id()
        folder = self.store.run_dir(run_id)
        folder.mkdir(parents=True)
        await asyncio.to_thread(atomic_write_bytes, folder / REFERENCE_PNG, png)
        meta = RunMeta(run_id=run_id, filename=name, image_id=hashlib.sha256(png).hexdigest()[:ID_HEX_DIGITS],
                       created_at=self.store.now(), request=request, settings_fingerprint=self.fingerprint)
        await asyncio.to_thread(self.store.save, meta.model_copy(deep=True))
        self.start(meta)
        return meta

    async def create_set(self, files: list[tuple[bytes, str]], request: RunRequest) -> RunMeta:
        """Several images as one set (agents.batch.sets): each checked and stored as member_<id>.png, the 2×2 grid
        the captioner and the VLM see as the reference; UploadRefused names the file that failed."""
        from agents.batch.sets import GRID_MEMBERS, MEMBER_FILE, set_grid, set_id

        self._check_queue()
        members: list[tuple[str, str, bytes, Any]] = []
        async with self._decodes:
            for data, filename in files:
                name, pixels = await asyncio.to_thread(check_upload, data, filename, self.cfg.job,
                                                       self.options.max_upload_bytes, self.max_upload_pixels)
                png = await asyncio.to_thread(save_png, pixels)
                shown = pixels if len(members) < GRID_MEMBERS else None
                members.append((name, hashlib.sha256(png).hexdigest()[:ID_HEX_DIGITS], png, shown))
            shown = [m[3] for m in members if m[3] is not None]
            grid_png = await asyncio.to_thread(lambda: save_png(set_grid(shown, self.cfg.job.reference_max_side)))
        self._check_queue()
        run_id = new_run_id()
        folder = self.store.run_dir(run_id)
        folder.mkdir(parents=True)
        for _, image_id, png, _ in members:
            await asyncio.to_thread(atomic_write_bytes, folder / MEMBER_FILE.format(image_id), png)
        await asyncio.to_thread(atomic_write_bytes, folder / REFERENCE_PNG, grid_png)
        names = [m[0] for m in members]
        label = f"set of {len(names)}: " + ", ".join(names[:3]) + (", …" if len(names) > 3 else "")
        meta = RunMeta(run_id=run_id, filename=label, image_id=set_id([m[1] for m in members]),
                       created_at=self.store.now(), request=request, settings_fingerprint=self.fingerprint,
                       members=[{"filename": name, "image_id": image_id} for name, image_id, _, _ in members])
        await asyncio.to_thread(self.store.save, meta.model_copy(deep=True))
        self.start(meta)
        return meta

    def _check_queue(self) -> None:
        waiting = sum(m.status == "queued" for m in self._live.values())
        running = sum(m.status == "running" for m in self._live.values())
        if running >= self.options.max_running and waiting >= self.options.max_queued:
            raise QueueFull(f"{running} runs are running and {waiting} are waiting, the most this server queues "
                            f"(--max-queued {self.options.max_queued}); try again when one has finished")

    def start(self, meta: RunMeta) -> None:
        task = self._tasks.get(meta.run_id)
        if task is not None and not task.done():
            return
        meta.status, meta.error = "queued", None
        self._live[meta.run_id] = meta
        self._tasks[meta.run_id] = asyncio.create_task(self._run(meta), name=f"arpo-run-{meta.run_id}")

    async def resume_unfinished(self) -> list[str]:
        """At server start: runs left queued or running by the last server continue (same settings only)."""
        resumed = []
        for meta in self.store.all():
            if meta.status not in UNFINISHED:
                continue
            if meta.settings_fingerprint != self.fingerprint:
                meta.status = "stale"
                meta.error = ("started under other model or agent settings than this server's; not resumed "
                              "(restart the server with the config it started with to continue it)")
                await asyncio.to_thread(self.store.save, meta.model_copy(deep=True))
                continue
            meta.timeline.append({"node": "server restarted", "t": round(self.store.now() - meta.created_at, 3)})
            self.start(meta)
            resumed.append(meta.run_id)
        if resumed:
            log.info("resumed %d run(s) left unfinished by the last server: %s", len(resumed), ", ".join(resumed))
        return resumed

    async def stop(self, run_id: str) -> None:
        task, live = self._tasks.get(run_id), self._live.get(run_id)
        if task is None or task.done() or live is None or live.status not in ("queued", "running"):
            raise RunConflict(f"run {run_id} is not running")  # (a run whose end is being saved has ended)
        self._stopping.add(run_id)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def resume(self, run_id: str) -> None:
        meta = self.meta(run_id)
        if meta.run_id in self._tasks and not self._tasks[run_id].done():
            raise RunConflict(f"run {run_id} is already {meta.status}")
        if meta.status == "done":
            raise RunConflict(f"run {run_id} is finished")
        if meta.status == "stale" or meta.settings_fingerprint != self.fingerprint:
            raise RunConflict(f"run {run_id} was started under other model or agent settings than this server's")
        self.start(meta)

    async def close(self) -> None:
        """Server shutdown: cancel every run where it was last saved; run.json keeps it resumable."""
        tasks = [t for t in self._tasks.values() if not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, meta: RunMeta) -> None:
        run_id, folder = meta.run_id, self.store.run_dir(meta.run_id)
        dirty = asyncio.Event()
        publisher = asyncio.create_task(self._publisher(meta, dirty))
        dirty.set()
        try:
            async with self._slots:
                meta.status = "running"
                dirty.set()
                agent_cfg = self.agent_config(meta.request)

                def on_node(name: str) -> None:
                    meta.timeline.append({"node": name, "t": round(self.store.now() - meta.created_at, 3)})
                    dirty.set()

                set_members = {}
                if meta.members:  # a set: CLIP scores are means over its members (agents.nodes)
                    from agents.batch.sets import MEMBER_FILE

                    set_members["members"] = [(m["image_id"], folder / MEMBER_FILE.format(m["image_id"]))
                                              for m in meta.members]
                result = await self.optimise_fn(
                    meta.image_id, folder / REFERENCE_PNG, folder, self.roles, agent_cfg, self.cfg.t2i.max_prompt_tokens,
                    graph=self._graph(agent_cfg), init_prompt=meta.request.init_prompt, on_node=on_node,
                    thread_id=run_id, base_dir=self.store.data_dir, **set_members)
            result.source = meta.filename
            await asyncio.to_thread(atomic_write_text, folder / RESULT_JSON, result.model_dump_json(indent=1))
            meta.status, meta.error = ("done", None) if result.status == "done" else ("error", result.error)
        except asyncio.CancelledError:
            if run_id not in self._stopping:  # server shutdown: stays queued/running, resumed at the next start
                await self._flush(meta, publisher)
                raise
            meta.status = "stopped"
        except Exception as exc:  # noqa: BLE001 - one run's failure is its status, never the server's
            log.exception("run %s failed", run_id)
            meta.status, meta.error = "error", f"{type(exc).__name__}: {exc}"
        finally:
            self._refs.release(meta.image_id)
        self._stopping.discard(run_id)
        await self._flush(meta, publisher)
        self._live.pop(run_id, None)

    async def _flush(self, meta: RunMeta, publisher: asyncio.Task) -> None:
        publisher.cancel()
        await asyncio.gather(publisher, return_exceptions=True)
        await asyncio.to_thread(self.store.save, meta.model_copy(deep=True))
        await self._publish(meta.run_id)

    async def _publisher(self, meta: RunMeta, dirty: asyncio.Event) -> None:
        """Saves run.json and publishes the view after every change, coalescing bursts, in order."""
        while True:
            await dirty.wait()
            dirty.clear()
            try:
                # Cancelling this task (``_flush``) cannot stop a save already running in its thread: left
                # behind, that older copy (still "running") could land after _flush's final save and
                # overwrite it on disk and in the store's memory, and once the run leaves ``_live`` it would
                # read "running" forever. So a cancel waits here for the save's thread to finish first.
                save = asyncio.ensure_future(asyncio.to_thread(self.store.save, meta.model_copy(deep=True)))
                try:
                    await asyncio.shield(save)
                except asyncio.CancelledError:
                    await asyncio.gather(save, return_exceptions=True)
                    raise
                await self._publish(meta.run_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a view that cannot be built now is rebuilt at the next node
                log.warning("run %s: could not publish its progress: %s: %s", meta.run_id, type(exc).__name__, exc)

    async def _publish(self, run_id: str) -> None:
        channel = self._channels.get(run_id)
        if channel is not None and channel.subscribers:
            channel.publish("run", await self.view(run_id))
        self.index.publish("summary", self.meta(run_id).summary())

    # ------------------------------------------------------------------ reading
    def meta(self, run_id: str) -> RunMeta:
        """The run's record (KeyError for an unknown run)."""
        return self._live.get(run_id) or self.store.load(run_id)

    def channel(self, run_id: str) -> Channel:
        self.meta(run_id)  # KeyError for an unknown run
        return self._channels.setdefault(run_id, Channel())

    def summaries(self) -> list[dict]:
        return [self._live.get(m.run_id, m).summary() for m in self.store.all()]

    def run_count(self) -> int:
        return self.store.count()

    @staticmethod
    def file_url(run_id: str, rel_to_run: str) -> str:
        """The page's URL of a file inside the run's folder."""
        return f"/api/runs/{run_id}/files/{rel_to_run}"

    def url(self, run_id: str, rel_to_data: str) -> Optional[str]:
        """The URL of a path as the graph state stores it (relative to the data folder); None outside the run."""
        prefix = f"runs/{run_id}/"
        return self.file_url(run_id, rel_to_data[len(prefix):]) if rel_to_data.startswith(prefix) else None

    async def state_result(self, run_id: str) -> Optional[dict]:
        """The run's graph state as a ReverseResult dict (paths relative to the data folder); None before init."""
        meta = self.meta(run_id)
        agent_cfg = self.agent_config(meta.request)
        snapshot = await self._graph(agent_cfg).aget_state(thread_config(run_id, agent_cfg))
        values = snapshot.values or {}
        if not values.get("image_id"):
            return None
        result = result_from_state(values, meta.filename, prompts_per_image=agent_cfg.prompts_per_image,
                                   caption_prefix=agent_cfg.caption_prefix).model_dump(mode="json")
        result["next"] = list(snapshot.next)
        return result

    async def view(self, run_id: str) -> dict:
        meta = self.meta(run_id)
        result = await self.state_result(run_id)
        for it in (result or {}).get("iterations", []):
            it["image_urls"] = [self.url(run_id, p) for p in it["image_paths"]]
        edits = []
        for entry in await asyncio.to_thread(read_edit_index, self.store.run_dir(run_id)):
            edits.append({**entry, "image_urls": [self.file_url(run_id, p) for p in entry.get("images") or []]})
        return {"run": meta.model_dump(mode="json"), "result": result, "edits": edits,
                "reference_url": self.file_url(run_id, REFERENCE_PNG),
                "random_weight_roles": self.random_weight_roles}

    # ------------------------------------------------------------------ edits and download
    async def edit(self, run_id: str, edit: PromptEdit) -> dict:
        """Render ``edit`` of the run's best prompt so far with the run's seeds (agents.editing.edit.generate_edit)."""
        meta = self.meta(run_id)
        record = await self.state_result(run_id)
        if record is None or record.get("prompt") is None:
            raise RunConflict(f"run {run_id} has no generated prompt yet to edit")
        lock = self._edit_locks.setdefault(run_id, asyncio.Lock())
        async with lock:  # edits.json is read, extended and replaced
            outcome = await generate_edit(record, self.store.run_dir(run_id), edit, self.roles.t2i, meta.request.seeds)
        await self._publish(run_id)
        entry = outcome.to_dict(self.store.run_dir(run_id))
        return {**entry, "image_urls": [self.file_url(run_id, p) for p in entry["images"]]}

    def clear_download_spool(self) -> None:
        """At start: zips a killed server was sending are never read again (each download writes its own)."""
        spool = self.store.data_dir / DOWNLOADS_DIR
        if spool.is_dir() and not spool.is_symlink():
            for path in spool.glob("*.zip"):
                path.unlink(missing_ok=True)

    async def download(self, run_id: str) -> Path:
        """A zip of the run (result.json as its state is now, run.json, the reference, every image and edit),
        written in a thread to a temporary file under the data folder; the caller deletes it once sent."""
        result = await self.state_result(run_id)
        meta = self.meta(run_id).model_copy(deep=True)
        return await asyncio.to_thread(self._zip, run_id, result, meta)

    def _zip(self, run_id: str, result: Optional[dict], meta: RunMeta) -> Path:
        folder = self.store.run_dir(run_id)
        spool = self.store.data_dir / DOWNLOADS_DIR
        spool.mkdir(exist_ok=True)
        fd, name = tempfile.mkstemp(dir=spool, prefix=f"{run_id}-", suffix=".zip")
        try:
            with os.fdopen(fd, "wb") as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED) as zf:
                zf.writestr(RESULT_JSON, _json(result if result is not None else {"status": meta.status}))
                zf.writestr(RUN_JSON, meta.model_dump_json(indent=1))
                for path in sorted(folder.rglob("*")):
                    rel = path.relative_to(folder).as_posix()
                    if (path.is_file() and not path.is_symlink() and rel not in (RESULT_JSON, RUN_JSON)
                            and not any(part.startswith(".") for part in Path(rel).parts)):
                        stored = path.suffix.lower() in STORED_SUFFIXES  # already compressed
                        zf.write(path, rel, compress_type=zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED)
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise
        return Path(name)


def _json(obj: Any) -> str:
    return json.dumps(obj, indent=1, ensure_ascii=False)
