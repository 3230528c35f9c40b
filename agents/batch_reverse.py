"""The ARPO batch job: reverse prompts for every image in a folder.

Usage::

    python -m agents.batch_reverse --dir images/ [--out DIR] [--config FILE]
                                   [--set key=value ...] [--concurrency N] [--dry-run]

Without a cluster address (``ray.address`` in the config, or ``RAY_ADDRESS`` as set by
``ray job submit -- python -m agents.batch_reverse ...``) it starts a local, loopback-only
Ray; otherwise it joins the cluster. One actor (or pool) per model role serves all
images; up to ``--concurrency`` optimisations run at once on one asyncio loop, sharing
one compiled graph and one checkpointer.

Images are found recursively (jpg, jpeg, png, webp, bmp, gif, tif, tiff in any case;
hidden files and other files ignored), identified by content (identical files are one
work item, both sources noted) and normalised once to ``images/<name>/reference.png``
in the output folder. A file that cannot be read becomes an error record naming the
file and the cause; one image's failure never stops the batch.

Each finished image is written at once: its folder (reference, iteration images,
result.json, final_prompt.txt, scores.csv) and a line in results.jsonl; results.csv and
report.html are rewritten from the log (atomically, at most every
``job.summary_refresh_s`` seconds, and always at the end).

Rerunning with the same ``--out`` resumes: images recorded as done are skipped, images
recorded as failed are retried, and images that were running continue from the
checkpointer's last saved step.

Exit status:
    0    every image finished
    1    the batch ran to the end but some images failed (see results.jsonl / report.html)
    2    setup error: bad arguments or config, missing image folder or no images in it,
         output folder busy, Ray or a model role failed to start
    3    fatal error during the run: results could not be written (e.g. disk full);
         what was written before is intact, rerun to resume
    130  interrupted (Ctrl-C / SIGTERM): nothing new was started, running optimisations
         were stopped where the checkpointer last saved them, everything finished is on disk
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import logging
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Awaitable, Callable, Optional, TextIO

from agents.config import ArpoConfig
from agents.images import IMAGE_EXTENSIONS, FoundImage, ImageLoadError, configure_pillow_limit, discover_images, load_rgb, save_png
from agents.progress import Progress
from agents.report import ReportHeader, random_weight_roles, write_report
from agents.results import (REFERENCE_FILE, RESULTS_CSV, RESULTS_JSONL, OutputFolderBusy, ResultsLog,
                            atomic_write_bytes, exclusive_output, image_output_dir, write_csv, write_image_outputs)
from core.config import ConfigError, load_config

log = logging.getLogger("agents.batch_reverse")

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_SETUP_ERROR = 2
EXIT_FATAL = 3
EXIT_INTERRUPTED = 130

DEFAULT_OUT = "outputs/arpo"

EPILOG = """exit status:
  0    every image finished
  1    the batch ran to the end but some images failed (see results.jsonl / report.html)
  2    setup error: bad arguments or config, missing image folder or no images in it,
       output folder busy, Ray or a model role failed to start
  3    fatal error during the run: results could not be written (e.g. disk full)
  130  interrupted (Ctrl-C / SIGTERM); rerun the same command to resume
"""


class SetupError(RuntimeError):
    """Something the job needs before the first image is missing or broken (exit status 2)."""


# --------------------------------------------------------------------------- work items

@dataclass
class WorkItem:
    """One distinct image (by content) and where its outputs go."""

    image_id: str
    source: FoundImage
    folder: Path  # per-image output folder (absolute, inside out_dir/images)
    duplicates: list[str] = field(default_factory=list)  # other relative paths with the same content
    read_error: Optional[str] = None  # the file could not even be read to identify it


def plan_work(image_dir: Path, out_dir: Path) -> list[WorkItem]:
    """Discover images under ``image_dir`` (never inside ``out_dir``) and group them by content id."""
    from agents.image_id import content_id

    items: dict[str, WorkItem] = {}
    for found in discover_images(image_dir, exclude=out_dir):
        read_error = None
        try:
            image_id = content_id(found.path)
        except OSError as exc:  # unreadable file: keep it as an error record with a path-derived id
            image_id = "unreadable-" + hashlib.sha256(found.rel.encode("utf-8")).hexdigest()[:16]
            read_error = f"{found.rel}: cannot read file: {exc.strerror or exc}"
        if image_id in items:
            items[image_id].duplicates.append(found.rel)
            continue
        items[image_id] = WorkItem(image_id=image_id, source=found, folder=image_output_dir(out_dir, found.rel, image_id),
                                   read_error=read_error)
    return list(items.values())


# --------------------------------------------------------------------------- records

def _relative(path: Any, base: Path, out_dir: Path) -> str:
    """A path from the agent's result as a '/'-separated path relative to ``out_dir``."""
    p = Path(str(path))
    if not p.is_absolute():
        p = base / p
    try:
        return p.resolve().relative_to(out_dir.resolve()).as_posix()
    except ValueError:  # outside the output folder: keep it absolute rather than invent a link
        return p.resolve().as_posix()


def result_record(result: Any, item: WorkItem, out_dir: Path) -> dict:
    """The JSONL/result.json record of one image: the agent's ReverseResult plus where things are.

    Added keys: ``source`` (relative to the image folder), ``duplicate_sources``,
    ``output_dir`` and ``reference`` (relative to the output folder); every iteration
    gets ``images``, its image paths relative to the output folder, for the report.
    """
    record = result.model_dump(mode="json") if hasattr(result, "model_dump") else dict(result)
    record["image_id"] = item.image_id
    record["source"] = item.source.rel
    record["duplicate_sources"] = list(item.duplicates)
    record["output_dir"] = _relative(item.folder, out_dir, out_dir)
    reference = item.folder / REFERENCE_FILE
    record["reference"] = _relative(reference, out_dir, out_dir) if reference.is_file() else None
    for it in record.get("iterations") or []:
        it["images"] = [_relative(p, item.folder, out_dir) for p in _iteration_image_paths(it)]
    return record


def _iteration_image_paths(iteration: dict) -> list:
    for key in ("image_paths", "images"):
        value = iteration.get(key)
        if value:
            return list(value) if isinstance(value, (list, tuple)) else [value]
    return []


def error_record(item: WorkItem, error: str, out_dir: Path) -> dict:
    from agents.result import ReverseResult

    result = ReverseResult(image_id=item.image_id, source=item.source.rel, status="error", error=error)
    return result_record(result, item, out_dir)


# --------------------------------------------------------------------------- writer

class BatchWriter:
    """Writes each finished image, and keeps results.csv / report.html in step with the log.

    The CSV and report are rebuilt from every record, so they are rewritten at most every
    ``refresh_s`` seconds (a deferred rewrite catches the last change) and by ``flush``.
    """

    def __init__(self, out_dir: Path, results: ResultsLog, header: ReportHeader, refresh_s: float):
        self.out_dir = out_dir
        self.results = results
        self.header = header
        self.refresh_s = refresh_s
        self._last_refresh = float("-inf")
        self._pending: Optional[asyncio.TimerHandle] = None

    def record(self, item: WorkItem, record: dict) -> None:
        item.folder.mkdir(parents=True, exist_ok=True)
        write_image_outputs(item.folder, record)
        self.results.append(record)  # last: a line in the log means the folder is complete
        self._refresh_soon()

    def _refresh_soon(self) -> None:
        loop = asyncio.get_running_loop()
        wait = self._last_refresh + self.refresh_s - loop.time()
        if wait <= 0:
            self.flush()
        elif self._pending is None:
            self._pending = loop.call_later(wait, self.flush)

    def flush(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        try:
            self._last_refresh = asyncio.get_running_loop().time()
        except RuntimeError:
            pass
        records = self.results.records()
        write_csv(self.out_dir / RESULTS_CSV, records)
        write_report(self.out_dir, records, self.header)


# --------------------------------------------------------------------------- the run

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


def prepare_reference(item: WorkItem, max_pixels: int) -> Path:
    """Decode the source once and store it as a clean RGB PNG in the image's folder."""
    target = item.folder / REFERENCE_FILE
    if target.is_file():  # written atomically by an earlier run: complete
        return target
    pixels = load_rgb(item.source.path, max_pixels)
    atomic_write_bytes(target, save_png(pixels))
    return target


async def run_batch(cfg: ArpoConfig, image_dir: str | Path, out_dir: str | Path, roles: Any,
                    concurrency: Optional[int] = None, *, profile: str = "<defaults>",
                    stop: Optional[asyncio.Event] = None, progress_stream: Optional[TextIO] = None,
                    optimise_fn: Optional[OptimiseFn] = None, graph: Any = None) -> BatchOutcome:
    """Optimise every image under ``image_dir`` into ``out_dir`` with ``roles``; never raises for one image.

    ``stop`` (set by the signal handlers) stops launching work and cancels what runs;
    cancelling this coroutine does the same and re-raises. ``optimise_fn`` and ``graph``
    default to :func:`agents.api.optimise` and one graph compiled here with the
    checkpointer; tests may pass doubles. Raises :class:`SetupError` before any image
    starts when the folder has no images or the output folder is busy.
    """
    image_dir, out_dir = Path(image_dir).resolve(), Path(out_dir).resolve()
    if not image_dir.is_dir():
        raise SetupError(f"{image_dir}: no such image folder")
    concurrency = concurrency or cfg.job.concurrency
    stop = stop or asyncio.Event()
    started_at = time.monotonic()
    with contextlib.ExitStack() as cleanup:
        try:
            cleanup.enter_context(exclusive_output(out_dir))
        except (OutputFolderBusy, OSError) as exc:
            raise SetupError(str(exc)) from None
        items = plan_work(image_dir, out_dir)
        if not items:
            raise SetupError(f"{image_dir}: no image files found (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
        results = ResultsLog(out_dir / RESULTS_JSONL)
        finished = results.finished_ids()
        todo = [it for it in items if it.image_id not in finished]
        header = ReportHeader(profile=profile, random_weight_roles=random_weight_roles(cfg), total=len(items))
        if header.random_weight_roles:
            log.warning("random-weight models serve %s: outputs measure plumbing and speed only", ", ".join(header.random_weight_roles))
        writer = BatchWriter(out_dir, results, header, cfg.job.summary_refresh_s)
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
        async with _shared_graph(cfg, roles, out_dir, graph) as shared:
            await _run_items(todo, cfg, out_dir, roles, concurrency, stop, writer, progress, outcome, optimise_fn, shared)
    return outcome


class _shared_graph:
    """The one compiled graph (with its checkpointer) all images share; a given graph is used as is."""

    def __init__(self, cfg: ArpoConfig, roles: Any, out_dir: Path, graph: Any):
        self.cfg, self.roles, self.out_dir, self.graph = cfg, roles, out_dir, graph
        self._checkpointer_cm = None

    async def __aenter__(self):
        if self.graph is not None:
            return self.graph
        from agents.checkpointing import open_checkpointer
        from agents.graph import build_graph, compile_graph

        try:
            self._checkpointer_cm = open_checkpointer(self.cfg.job.checkpoint, self.out_dir)
            checkpointer = await self._checkpointer_cm.__aenter__()
            graph = build_graph(self.roles, self.cfg.agent, self.cfg.t2i.max_prompt_tokens,
                                max_image_pixels=self.cfg.job.max_image_pixels)
            return compile_graph(graph, checkpointer)
        except Exception as exc:
            raise SetupError(f"cannot set up the agent graph / checkpointer: {type(exc).__name__}: {exc}") from exc

    async def __aexit__(self, *exc_info):
        if self._checkpointer_cm is not None:
            await self._checkpointer_cm.__aexit__(*exc_info)
        return False


async def _run_items(todo: list[WorkItem], cfg: ArpoConfig, out_dir: Path, roles: Any, concurrency: int,
                     stop: asyncio.Event, writer: BatchWriter, progress: Progress, outcome: BatchOutcome,
                     optimise_fn: OptimiseFn, graph: Any) -> None:
    queue: asyncio.Queue[WorkItem] = asyncio.Queue()
    for item in todo:
        queue.put_nowait(item)

    def finish(item: WorkItem, record: dict) -> None:
        writer.record(item, record)
        ok = record.get("status") == "done"
        if ok:
            outcome.done += 1
        else:
            outcome.failed += 1
            log.warning("failed: %s", record.get("error"))
        # Iterations are counted live (on_node), so the rate is this run's work only, not
        # iterations a resumed image did in an earlier run.
        progress.finished(ok)
        writer.header.running = progress.running

    async def one(item: WorkItem) -> None:
        progress.started()
        writer.header.running = progress.running
        if item.read_error:
            finish(item, error_record(item, item.read_error, out_dir))
            return
        try:
            reference = await asyncio.to_thread(prepare_reference, item, cfg.job.max_image_pixels)
        except ImageLoadError as exc:
            finish(item, error_record(item, f"{item.source.rel}: {exc.cause}", out_dir))
            return
        try:
            def on_node(name: str) -> None:
                if name == "generate":  # one generate per iteration
                    progress.iteration()

            result = await optimise_fn(item.image_id, reference, item.folder, roles, cfg.agent,
                                       cfg.t2i.max_prompt_tokens, graph=graph, on_node=on_node)
        except Exception as exc:  # one image's failure is its record, never the batch's end
            log.debug("optimisation of %s failed:\n%s", item.source.rel, traceback.format_exc())
            finish(item, error_record(item, f"{item.source.rel}: optimisation failed: {type(exc).__name__}: {exc}", out_dir))
            return
        finish(item, result_record(result, item, out_dir))

    async def worker() -> None:
        while not stop.is_set():
            try:
                item = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            await one(item)

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


# --------------------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m agents.batch_reverse",
        description="Reverse prompts (ARPO) for every image in a folder, on Ray.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", required=True, help="Folder of reference images (searched recursively).")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"Output folder; rerun with the same one to resume (default {DEFAULT_OUT}).")
    parser.add_argument("--config", help="YAML config file (agents.config.ArpoConfig); default: built-in defaults.")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="Override a config key, e.g. --set agent.max_steps=5 (repeatable).")
    parser.add_argument("--concurrency", type=_positive_int, help="Optimisations at once (default: job.concurrency from the config).")
    parser.add_argument("--dry-run", action="store_true", help="List what would run (and what is already finished), then exit without starting Ray.")
    parser.add_argument("-v", "--verbose", action="store_true", help="Debug logging.")
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def dry_run(image_dir: Path, out_dir: Path, stream: TextIO) -> int:
    if not image_dir.is_dir():
        raise SetupError(f"{image_dir}: no such image folder")
    items = plan_work(image_dir.resolve(), out_dir.resolve())
    if not items:
        raise SetupError(f"{image_dir}: no image files found")
    results_path = out_dir / RESULTS_JSONL
    previous = {r["image_id"]: r.get("status") for r in ResultsLog(results_path, repair=False).records()} if results_path.exists() else {}
    counts = {"run": 0, "retry": 0, "skip": 0}
    for item in items:
        status = previous.get(item.image_id)
        action = "skip" if status == "done" else "retry" if status == "error" else "run"
        counts[action] += 1
        also = f"  (same content: {', '.join(item.duplicates)})" if item.duplicates else ""
        stream.write(f"{action:5} {item.image_id}  {item.source.rel}{also}\n")
    stream.write(f"{len(items)} images: {counts['run']} to run, {counts['retry']} to retry, {counts['skip']} already done\n")
    return EXIT_OK


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: 0 for --help, 2 for bad arguments
        return int(exc.code or 0)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    image_dir, out_dir = Path(args.dir), Path(args.out)
    try:
        cfg = load_config(ArpoConfig, args.config, args.set)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return EXIT_SETUP_ERROR
    try:
        if args.dry_run:
            return dry_run(image_dir, out_dir, sys.stdout)
        if not image_dir.is_dir():
            raise SetupError(f"{image_dir}: no such image folder")
        roles, started_local_ray = _start_ray_and_roles(cfg)
    except SetupError as exc:
        print(f"setup error: {exc}", file=sys.stderr)
        return EXIT_SETUP_ERROR
    try:
        outcome = asyncio.run(_main_async(cfg, image_dir, out_dir, roles, args.concurrency, args.config or "<defaults>"))
    except SetupError as exc:
        print(f"setup error: {exc}", file=sys.stderr)
        return EXIT_SETUP_ERROR
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        log.debug("fatal error:\n%s", traceback.format_exc())
        print(f"fatal error: {type(exc).__name__}: {exc}; results written so far are intact, rerun to resume", file=sys.stderr)
        return EXIT_FATAL
    finally:
        if started_local_ray:
            import ray

            ray.shutdown()
    print(f"{outcome.done} done, {outcome.failed} failed, {outcome.skipped} already done, of {outcome.total} images"
          f" in {outcome.elapsed_s:.1f}s; results: {out_dir / RESULTS_JSONL}, report: {out_dir / 'report.html'}",
          file=sys.stderr)
    return outcome.exit_code


def _start_ray_and_roles(cfg: ArpoConfig):
    try:
        from core.ray_config import init_ray

        started = init_ray(cfg.ray)
        if started:
            log.info("started a local Ray on 127.0.0.1 (no cluster address given)")
        else:
            import ray

            log.info("joined the Ray cluster (%d CPUs, %d GPUs)", ray.cluster_resources().get("CPU", 0),
                     ray.cluster_resources().get("GPU", 0))
    except Exception as exc:
        raise SetupError(f"cannot connect to or start Ray: {type(exc).__name__}: {exc}") from exc
    try:
        from actors.ray_actors import start_roles, wait_ready

        roles = start_roles(cfg)
        # Every actor loads its model now: a missing or broken model is a setup error
        # here, not one error record per image later.
        asyncio.run(wait_ready(*(getattr(roles, f.name) for f in fields(roles))))
        return roles, started
    except Exception as exc:
        if started:
            import ray

            ray.shutdown()
        raise SetupError(f"cannot start the model roles: {type(exc).__name__}: {exc}") from exc


async def _main_async(cfg: ArpoConfig, image_dir: Path, out_dir: Path, roles: Any, concurrency: Optional[int], profile: str) -> BatchOutcome:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if not stop.is_set():
            print(f"\n{signal.Signals(signum).name}: stopping; finished images are saved, rerun to resume "
                  "(press Ctrl-C again to abort at once)", file=sys.stderr)
            stop.set()
            loop.remove_signal_handler(signal.SIGINT)  # the next Ctrl-C raises KeyboardInterrupt

    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, on_signal, signum)
        except (NotImplementedError, RuntimeError):  # not the main thread / not supported
            pass
    return await run_batch(cfg, image_dir, out_dir, roles, concurrency, profile=profile, stop=stop)


if __name__ == "__main__":
    sys.exit(main())
