"""Run a planned batch: up to ``concurrency`` optimisations at once on one event loop, each written as it finishes.

Rerunning with the same output folder resumes: images recorded as done (under the same
settings) are skipped, images recorded as failed are retried, and images that were
running continue from the checkpointer's last saved step — in their own job's threads
(agents.batch.identity), with every path in the state relative to the output folder.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Optional, TextIO

from actors.chat.messages import shrink_to
from actors.object_refs import ImageRefs
from agents.batch.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_FAILED, SetupError
from agents.batch.identity import JobIdentity, OnChange, open_job
from agents.batch.captions import CaptionOptions, Captions
from agents.batch.plan import ImageSource, WorkItem
from agents.batch.sets import plan_job, prepare_set
from agents.batch.records import error_record, needs_rerank, reranked_record, result_record
from agents.batch.writer import BatchWriter
from agents.config import ArpoConfig
from agents.images import IMAGE_EXTENSIONS, ImageLoadError, configure_pillow_limit, load_rgb, save_png
from agents.progress import Progress
from agents.prompt_limit import check_negative_support, with_prompt_limit
from agents.browser.report import ReportHeader, random_weight_roles
from agents.browser.results import REFERENCE_FILE, RESULTS_JSONL, OutputFolderBusy, ResultsLog, atomic_write_bytes, exclusive_output
from core.job_submit import missing_relative_input_problem, relative_output_problem
from core.metrics import record as metric

log = logging.getLogger("agents.batch")


@dataclass
class BatchOutcome:
    total: int  # distinct images found
    skipped: int  # already done in an earlier run
    done: int  # finished in this run
    failed: int  # error records written in this run
    interrupted: bool = False
    elapsed_s: float = 0.0

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_SOME_FAILED if self.failed else EXIT_OK


OptimiseFn = Callable[..., Awaitable[Any]]


def prepare_reference(item: WorkItem, max_pixels: int, max_side: int) -> Path:
    """Decode the source once and store it as a clean RGB PNG, longer side at most ``max_side``."""
    target = item.folder / REFERENCE_FILE
    if target.is_file():  # written atomically by an earlier run: complete
        return target
    pixels = shrink_to(load_rgb(item.source.path, max_pixels), max_side)
    atomic_write_bytes(target, save_png(pixels))
    return target


def prepare_output(image_dir: "Path | ImageSource", out_dir: Path, cfg: ArpoConfig,
                   on_change: OnChange) -> tuple[contextlib.ExitStack, JobIdentity]:
    """Everything that needs no model, in the order that fails fastest: folder checks (or the
    given files' checks), the output folder's lock, the job identity and settings check.
    Returns the held lock (an ExitStack to close) and the identity; raises :class:`SetupError`."""
    problem = relative_output_problem("--out", out_dir)
    source = ImageSource.of(image_dir)
    if problem is None and source.folder is not None:
        problem = missing_relative_input_problem("--dir", source.folder)
    if problem:
        raise SetupError(problem)
    source.check(Path(out_dir))
    stack = contextlib.ExitStack()
    try:
        stack.enter_context(exclusive_output(out_dir))
        identity = open_job(out_dir, cfg, on_change)
        remove_stale_temp_files(out_dir)
    except (OutputFolderBusy, OSError) as exc:
        stack.close()
        raise SetupError(str(exc)) from None
    except BaseException:
        stack.close()
        raise
    return stack, identity


def remove_stale_temp_files(out_dir: Path) -> int:
    """Delete the temporary files of atomic writes a killed run left behind (``.<name>.<random>.tmp``).

    Only under the output folder's lock: no other writer can be mid-write. No record
    ever points at one (the rename is what publishes a file), so nothing is lost.
    """
    removed = 0
    for path in out_dir.rglob(".*.tmp"):
        if path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
            removed += 1
    if removed:
        log.info("removed %d temporary file(s) left by an interrupted run", removed)
    return removed


def plan_items(source: ImageSource, out_dir: Path, cfg: ArpoConfig) -> list[WorkItem]:
    """The work items (SetupError when there are none). Reads every file's content id: seconds for a large
    folder, so a caller on an event loop runs it in a thread."""
    items = plan_job(source, out_dir, cfg.job.max_file_bytes, cfg.job.group_by)
    if not items:
        raise SetupError(f"{source.describe()}: no image files found (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
    return items


async def run_batch(cfg: ArpoConfig, image_dir: "str | Path | ImageSource", out_dir: str | Path, roles: Any,
                    concurrency: Optional[int] = None, *, profile: str = "<defaults>",
                    stop: Optional[asyncio.Event] = None, progress_stream: Optional[TextIO] = None,
                    optimise_fn: Optional[OptimiseFn] = None, graph: Any = None,
                    on_change: OnChange = "refuse", identity: Optional[JobIdentity] = None,
                    captions: CaptionOptions = CaptionOptions(), items: Optional[list[WorkItem]] = None) -> BatchOutcome:
    """Optimise every image under ``image_dir`` (a folder, or an :class:`ImageSource` of given
    files) into ``out_dir`` with ``roles``; never raises for one image.

    ``stop`` (set by the signal handlers) stops launching work and cancels what runs;
    cancelling this coroutine does the same and re-raises. ``optimise_fn`` and ``graph``
    default to :func:`agents.api.optimise` and one graph compiled here with the
    checkpointer; tests may pass doubles. ``identity``: given by a caller that already
    ran :func:`prepare_output` and holds the output folder's lock; otherwise this takes
    them. Raises :class:`SetupError` before any image starts when the folders are
    unusable, the output folder is busy, the settings changed (``on_change``) or there
    are no images. Each done image is captioned for training as it finishes (``captions``,
    agents.batch.captions); at start-up the captions are reconciled with the results log.
    ``items``: the plan, when the caller made it already (:func:`plan_items`, before the models
    loaded); otherwise it is made here, in a thread.
    """
    source, out_dir = ImageSource.of(image_dir), Path(out_dir).resolve()
    concurrency = concurrency or cfg.job.concurrency
    stop = stop or asyncio.Event()
    started_at = time.monotonic()
    with contextlib.ExitStack() as cleanup:
        if identity is None:
            lock, identity = prepare_output(source, out_dir, cfg, on_change)
            cleanup.enter_context(lock)
        if items is None:
            items = await asyncio.to_thread(plan_items, source, out_dir, cfg)
        # After the identity (which records the setting as configured): the graph needs the number.
        # (No roles: a caller's own graph and optimise_fn, which bring their limit with them.)
        if roles is not None:
            cfg = await with_prompt_limit(cfg, roles.t2i)
            try:
                await check_negative_support(cfg, roles.t2i)
            except ValueError as exc:
                raise SetupError(str(exc)) from None
        results = await asyncio.to_thread(ResultsLog, out_dir / RESULTS_JSONL)
        captioner = Captions(out_dir, source, items, captions)
        # e.g. a run killed between an image's record and its caption; reads every caption: off the loop
        await asyncio.to_thread(captioner.reconcile, results)
        finished = results.finished_ids(identity.fingerprint)
        todo = [it for it in items if it.image_id not in finished]
        header = ReportHeader(profile=profile, random_weight_roles=random_weight_roles(cfg), total=len(items))
        if header.random_weight_roles:
            log.warning("random-weight models serve %s: outputs measure plumbing and speed only", ", ".join(header.random_weight_roles))
        writer = BatchWriter(out_dir, results, header, cfg.job.summary_refresh_s)
        cleanup.callback(captioner.close)
        rerank_finished(items, finished, results, writer, captioner, cfg)
        progress = Progress(total=len(todo), skipped=len(items) - len(todo), stream=progress_stream)
        outcome = BatchOutcome(total=len(items), skipped=len(items) - len(todo), done=0, failed=0)
        configure_pillow_limit(cfg.job.max_image_pixels)
        if optimise_fn is None:
            from agents.api import optimise as optimise_fn

        def summarise() -> None:  # also when this coroutine is cancelled: the summaries match the log
            outcome.interrupted = outcome.done + outcome.failed < len(todo)
            header.interrupted, header.running = outcome.interrupted, 0
            writer.flush()
            progress.close("interrupted: rerun to resume" if outcome.interrupted else "")
            outcome.elapsed_s = time.monotonic() - started_at

        cleanup.callback(summarise)
        graph_cm = _shared_graph(cfg, roles, out_dir, graph, concurrency)
        async with graph_cm as shared:
            run = _ItemRunner(cfg, out_dir, roles, identity, writer, progress, outcome, optimise_fn, shared, captioner,
                              refs=graph_cm.refs)
            await _run_all(todo, run, concurrency, stop, progress)
    return outcome


def rerank_finished(items: list[WorkItem], finished: set[str], results: ResultsLog, writer: BatchWriter,
                    captioner: Captions, cfg: ArpoConfig) -> int:
    """Re-rank the finished images whose records list prompts for another agent.prompts_per_image (a
    setting outside the fingerprint): their recorded iterations hold every prompt and score, so this calls
    no model; each gets a new record (result.json, its page, its captions). Returns how many."""
    k = cfg.agent.prompts_per_image
    count = 0
    for item in items:
        record = results.get(item.image_id) if item.image_id in finished else None
        if record is None or not needs_rerank(record, k):
            continue
        new = reranked_record(record, k, cfg.agent.caption_prefix)
        writer.record(item, new)
        captioner.write(item, new)
        count += 1
    if count:
        log.info("re-ranked %d finished image(s) for agent.prompts_per_image=%d from their recorded iterations", count, k)
    return count


class _shared_graph:
    """The one compiled graph (with its checkpointer) all images share; a given graph is used as is."""

    def __init__(self, cfg: ArpoConfig, roles: Any, out_dir: Path, graph: Any, concurrency: int):
        self.cfg, self.roles, self.out_dir, self.graph = cfg, roles, out_dir, graph
        self._checkpointer_cm = None
        # the images in flight as object-store references (Ray roles only); each image's are released when it
        # ends, so the bound (room for every image in flight) only guards against a path that forgets to
        self.refs = ImageRefs(max_owners=max(64, 2 * concurrency))

    async def __aenter__(self):
        if self.graph is not None:
            return self.graph
        from agents.checkpointing import open_checkpointer
        from agents.graph import build_graph, compile_graph

        try:
            self._checkpointer_cm = open_checkpointer(self.cfg.job.checkpoint, self.out_dir)
            checkpointer = await self._checkpointer_cm.__aenter__()
            graph = build_graph(self.roles, self.cfg.agent, self.cfg.t2i.max_prompt_tokens,
                                max_image_pixels=self.cfg.job.max_image_pixels, base_dir=self.out_dir,
                                negative_prompt=self.cfg.t2i.negative_prompt, refs=self.refs)
            return compile_graph(graph, checkpointer)
        except Exception as exc:
            raise SetupError(f"cannot set up the agent graph / checkpointer: {type(exc).__name__}: {exc}") from exc

    async def __aexit__(self, *exc_info):
        if self._checkpointer_cm is not None:
            await self._checkpointer_cm.__aexit__(*exc_info)
        return False


@dataclass
class _ItemRunner:
    """Runs one work item to its record; an image's failure is its record, never the batch's end."""

    cfg: ArpoConfig
    out_dir: Path
    roles: Any
    identity: JobIdentity
    writer: BatchWriter
    progress: Progress
    outcome: BatchOutcome
    optimise_fn: OptimiseFn
    graph: Any
    captions: Optional[Captions] = None
    refs: Optional[ImageRefs] = None  # the graph's object-store references of the images in flight

    async def __call__(self, item: WorkItem) -> None:
        try:
            await self._run(item)
        finally:  # done, failed or cancelled: its images leave the object store (a rerun reads the files)
            if self.refs is not None:
                self.refs.release(item.image_id)

    def finish(self, item: WorkItem, record: dict) -> None:
        self.writer.record(item, record)
        ok = record.get("status") == "done"
        if ok:
            if self.captions is not None:  # after the record: a kill in between is mended at the next start
                self.captions.write(item, record)
            self.outcome.done += 1
        else:
            self.outcome.failed += 1
        # Iterations are counted live (on_node), so the rate is this run's work only.
        self.progress.finished(ok)
        self.writer.header.running = self.progress.running
        job = {"job_id": self.identity.job_id}
        metric("images_total", 1, {**job, "status": "done" if ok else "failed"})
        metric("images_in_flight", self.progress.running, job)
        if not ok:  # after counting it: the bar redrawn below the warning shows this failure
            log.warning("failed: %s", record.get("error"))

    def fail(self, item: WorkItem, error: str) -> None:
        self.finish(item, error_record(item, error, self.out_dir, self.identity.fingerprint))

    async def _run(self, item: WorkItem) -> None:
        self.progress.started()
        self.writer.header.running = self.progress.running
        metric("images_in_flight", self.progress.running, {"job_id": self.identity.job_id})
        if item.read_error:
            return self.fail(item, item.read_error)
        members = {}
        try:
            if item.kind == "set":
                prepared = await asyncio.to_thread(prepare_set, item, self.cfg.job.max_image_pixels,
                                                   self.cfg.job.reference_max_side)
                reference, members = prepared.reference, {"members": prepared.members}
            else:
                reference = await asyncio.to_thread(prepare_reference, item, self.cfg.job.max_image_pixels,
                                                    self.cfg.job.reference_max_side)
        except ImageLoadError as exc:
            return self.fail(item, f"{item.source.rel}: {exc.cause}")

        def on_node(name: str) -> None:
            if name == "generate":  # one generate per iteration
                self.progress.iteration()
                metric("iterations_total", 1, {"job_id": self.identity.job_id})

        try:
            result = await self.optimise_fn(item.image_id, reference, item.folder, self.roles, self.cfg.agent,
                                            self.cfg.t2i.max_prompt_tokens, graph=self.graph, on_node=on_node,
                                            thread_id=self.identity.thread_id(item.image_id), base_dir=self.out_dir,
                                            **members)
        except Exception as exc:
            log.debug("optimisation of %s failed:\n%s", item.source.rel, traceback.format_exc())
            return self.fail(item, f"{item.source.rel}: optimisation failed: {type(exc).__name__}: {exc}")
        record = result_record(result, item, self.out_dir, self.identity.fingerprint)
        self.finish(item, record)
        if record.get("status") == "done" and not self.cfg.job.checkpoint.keep_finished_threads:
            await self.release_thread(item)

    async def release_thread(self, item: WorkItem) -> None:
        """Delete a recorded image's checkpoints: its fsynced log line is what a rerun reads (it is
        skipped), so they are never read again, and the store stays the size of what is in flight.
        A kill between the line and this leaves that one thread behind, unread; a failure here
        is only logged: the image's result is already safe."""
        checkpointer = getattr(self.graph, "checkpointer", None)
        if checkpointer is None or not hasattr(checkpointer, "adelete_thread"):
            return  # a test double's graph
        thread_id = self.identity.thread_id(item.image_id)
        try:
            await checkpointer.adelete_thread(thread_id)
        except Exception as exc:  # noqa: BLE001 - see above
            log.warning("%s: could not delete its finished checkpoints (thread %s): %s: %s",
                        item.source.rel, thread_id, type(exc).__name__, exc)


async def _run_all(todo: list[WorkItem], run: _ItemRunner, concurrency: int, stop: asyncio.Event, progress: Progress) -> None:
    queue: asyncio.Queue[WorkItem] = asyncio.Queue()
    for item in todo:
        queue.put_nowait(item)

    async def worker() -> None:
        while not stop.is_set():
            try:
                item = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            await run(item)

    workers = [asyncio.create_task(worker(), name=f"arpo-worker-{i}") for i in range(min(concurrency, len(todo)))]
    if not workers:
        return
    all_done = asyncio.gather(*workers)
    stop_wait = asyncio.ensure_future(stop.wait())
    ticker = asyncio.ensure_future(_tick(progress))
    fatal: Optional[BaseException] = None
    try:
        await asyncio.wait({all_done, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        if all_done.done():
            fatal = all_done.exception()  # a writer failure (e.g. disk full), not an image's error
    finally:
        # On stop (or when this coroutine is cancelled) in-flight optimisations are
        # cancelled: their graph state stays at the last checkpoint and a rerun resumes it.
        for task in (*workers, stop_wait, ticker):
            task.cancel()
        await asyncio.gather(all_done, stop_wait, ticker, return_exceptions=True)
    if fatal is not None:
        raise fatal


async def _tick(progress: Progress, every_s: float = 1.0) -> None:
    while True:
        await asyncio.sleep(every_s)
        progress.tick()
