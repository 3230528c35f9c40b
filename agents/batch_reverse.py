"""The ARPO batch job: reverse prompts for every image in a folder, or for given files (a thin shell over agents.batch).

Usage::

    python -m agents.batch_reverse (--dir images/ | --image a.png [--image b.jpg ...])
                                   [--out DIR] [--config FILE] [--set key=value ...]
                                   [--concurrency N] [--dry-run] [--settings-changed refuse|fresh]
                                   [--prompts-per-image K] [--caption-prefix TEXT] [--negative]
                                   [--style-only] [--group-by image|folder] [--captions-txt] [--captions-beside-images] [--verbose]

(installed as the command ``expectdiff-reverse`` too).

The console shows one progress bar and warnings and errors; the driver's log, Ray's and
every model role's output go to ``OUT/logs/`` (agents.batch.console); ``--verbose`` puts
everything back on the console. Each finished image's best prompt is also a training
caption in ``OUT/captions.jsonl`` (agents.batch.captions).

Without a cluster address (``ray.address`` in the config, or ``RAY_ADDRESS`` as set by
``ray job submit -- python -m agents.batch_reverse ...``) it starts a local, loopback-only
Ray; otherwise it joins the cluster. One actor (or pool) per model role serves all
images; up to ``--concurrency`` optimisations run at once on one asyncio loop, sharing
one compiled graph and one checkpointer (agents.batch.runner).

Start-up fails fast, in this order, before any model loads: the config, the folders
(``--out`` may not be ``--dir`` or contain it; no ``--image`` file may lie inside
``--out``), the output folder's lock (one job per folder), the settings check against the
folder's earlier runs (agents.batch.identity), the checkpoint database (within
``job.checkpoint.connect_timeout_s``), the image plan (an empty folder is refused here; Ctrl-C
interrupts it), the cluster's capacity for every role; then the roles must load within
``job.startup_timeout_s``.

Exit status:
    0    every image finished
    1    the batch ran to the end but some images failed (see results.jsonl / report.html)
    2    setup error: bad arguments or config, missing image folder or no images in it, a
         missing --image file or one inside --out, --out overlapping --dir, output folder busy,
         settings changed, the checkpoint database unreachable, the cluster cannot hold the
         roles, a model role failed to load or was not ready in time
    3    fatal error during the run: results could not be written (e.g. disk full);
         what was written before is intact, rerun to resume
    130  interrupted (Ctrl-C / SIGTERM): nothing new was started, running optimisations
         were stopped where the checkpointer last saved them, everything finished is on disk
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Optional, TextIO

from pydantic import ValidationError

from agents.batch.captions import CAPTIONS_JSONL, CaptionOptions
from agents.batch.console import JobLogging, log_dir
from agents.batch.errors import EXIT_FATAL, EXIT_INTERRUPTED, EXIT_OK, EXIT_SETUP_ERROR, EXIT_SOME_FAILED, SetupError
from agents.batch.identity import fingerprint, result_settings
from agents.batch.plan import ImageSource
from agents.batch.records import needs_rerank
from agents.batch.runner import BatchOutcome, plan_items, prepare_output, run_batch
from agents.batch.sets import plan_job
from agents.batch.startup import start_ray_and_roles, stop_ray_and_roles
from agents.config import AgentConfig, ArpoConfig
from agents.browser.results import RESULTS_JSONL, ResultsLog
from core.cli import parse_or_status, prog_name
from core.config import SET_HELP, ConfigError, load_config

__all__ = ["EXIT_FATAL", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_SETUP_ERROR", "EXIT_SOME_FAILED", "SetupError", "main"]

log = logging.getLogger("agents.batch_reverse")

DEFAULT_OUT = "outputs/arpo"

EPILOG = """exit status:
  0    every image finished
  1    the batch ran to the end but some images failed (see results.jsonl / report.html)
  2    setup error: bad arguments or config, missing image folder or no images in it, a missing --image
       file or one inside --out, --out overlapping --dir, output folder busy, settings changed (see
       --settings-changed), the checkpoint database unreachable (job.checkpoint.connect_timeout_s), the
       cluster cannot hold the roles, a model role failed to load or was not ready within
       job.startup_timeout_s
  3    fatal error during the run: results could not be written (e.g. disk full)
  130  interrupted (Ctrl-C / SIGTERM); rerun the same command to resume
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog_name("agents.batch_reverse"),
        description="Reverse prompts (ARPO) for every image in a folder, or for a few given files, on Ray.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    images = parser.add_mutually_exclusive_group(required=True)
    images.add_argument("--dir", help="Folder of reference images (searched recursively).")
    images.add_argument("--image", action="append", metavar="FILE",
                        help="A reference image file, instead of --dir (repeatable: --image a.png --image b.jpg). "
                             "Its display name is the file's name, or the shortest tail of its path that tells "
                             "same-named files apart; it may not lie inside --out.")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"Output folder; rerun with the same one to resume (default {DEFAULT_OUT}).")
    parser.add_argument("--config", help="YAML config file (agents.config.ArpoConfig); default: built-in defaults.")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
    parser.add_argument("--concurrency", type=_positive_int, help="Optimisations at once (default: job.concurrency from the config).")
    parser.add_argument("--settings-changed", choices=("refuse", "fresh"), default="refuse",
                        help="When settings that change results differ from the output folder's earlier runs: "
                             "refuse (default; the changes are listed) or start every image afresh under the new settings.")
    parser.add_argument("--dry-run", action="store_true", help="List what would run (and what is already finished), then exit without starting Ray.")
    parser.add_argument("--prompts-per-image", type=_positive_int, metavar="K",
                        help="List the K best distinct prompts per image, ranked by CLIP-I of their generated images "
                             "(agent.prompts_per_image; no extra model call). A rerun with another K re-ranks the "
                             "finished images from their recorded iterations.")
    parser.add_argument("--caption-prefix", metavar="TEXT",
                        help="A trigger word for training captions (agent.caption_prefix): captions become "
                             "'TEXT, <prompt>' and the token budget counts TEXT once; the T2I model never sees it.")
    parser.add_argument("--negative", action="store_true", default=None,
                        help="After the optimisation, recover a negative prompt for the best prompt (agent.negative.enabled): "
                             "candidate negative fragments from the VLM and LLM, kept greedily while CLIP-I rises; refused "
                             "at start-up by a target where a negative prompt does not act (FLUX.1).")
    parser.add_argument("--style-only", action="store_true", default=None,
                        help="Recover the style alone (agent.style_only): style fragments only, chosen to raise a style "
                             "similarity that ignores where things are (per-channel statistics of CLIP's first layer) "
                             "instead of CLIP-I. With --group-by folder: the shared style of each set.")
    parser.add_argument("--group-by", choices=("image", "folder"),
                        help="image (default): one prompt per distinct image. folder: each subfolder of --dir is one "
                             "set, and gets one prompt for all its images (job.group_by; mean CLIP scores over the "
                             "members, outputs under OUT/sets/; images directly in --dir are not run).")
    parser.add_argument("--captions-txt", action="store_true",
                        help=f"Also write each image's caption (best prompt) as a .txt in a mirror tree under OUT/captions/ "
                             f"(OUT/{CAPTIONS_JSONL} is always written).")
    parser.add_argument("--captions-beside-images", action="store_true",
                        help="Also write each image's caption as <stem>.txt next to the image, inside the image folder "
                             "(replacing a .txt of that name); off unless asked.")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="Everything on the console: debug logging, Ray's messages and the model roles' output "
                             "(by default they go to OUT/logs/ and the console shows the progress bar, warnings and errors).")
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def with_agent_flags(cfg: ArpoConfig, args: argparse.Namespace) -> ArpoConfig:
    """``cfg`` with the agent settings given as flags (they win over --config and --set); ConfigError names a bad one."""
    flags = {"prompts_per_image": ("--prompts-per-image", args.prompts_per_image),
             "caption_prefix": ("--caption-prefix", args.caption_prefix)}
    updates = {key: value for key, (_, value) in flags.items() if value is not None}
    if args.negative:
        flags["negative"] = ("--negative", True)
        updates["negative"] = {**cfg.agent.negative.model_dump(), "enabled": True}
    if getattr(args, "style_only", None):
        flags["style_only"] = ("--style-only", True)
        updates["style_only"] = True
    if not updates:
        return cfg
    try:
        agent = AgentConfig.model_validate({**cfg.agent.model_dump(), **updates})
    except ValidationError as exc:
        first = exc.errors()[0]
        key = str(first["loc"][0]) if first["loc"] else ""
        flag = flags[key][0] if key in flags else "agent"
        raise ConfigError(flag, f"agent.{key}", first["msg"]) from None
    return cfg.model_copy(update={"agent": agent})


def dry_run(cfg: ArpoConfig, image_dir: "Path | ImageSource", out_dir: Path, stream: TextIO) -> int:
    source = ImageSource.of(image_dir)
    source.check(out_dir)
    items = plan_job(source, out_dir, cfg.job.max_file_bytes, cfg.job.group_by)
    if not items:
        raise SetupError(f"{source.describe()}: no image files found")
    unit = "sets" if cfg.job.group_by == "folder" else "images"
    results_path = out_dir / RESULTS_JSONL
    previous = ResultsLog(results_path, repair=False) if results_path.exists() else None
    current = fingerprint(result_settings(cfg))
    counts = {"run": 0, "retry": 0, "redo": 0, "skip": 0, "rerank": 0}
    for item in items:
        summary = previous.summary(item.image_id) if previous is not None else None
        status = summary.status if summary is not None else None
        if status == "done":
            action = "skip" if summary.fingerprint == current else "redo"
            if action == "skip" and needs_rerank(previous.get(item.image_id), cfg.agent.prompts_per_image):
                action = "rerank"  # agents.batch.runner.rerank_finished: from the recorded iterations
        else:
            action = "retry" if status == "error" else "run"
        counts[action] += 1
        also = f"  (same content: {', '.join(item.duplicates)})" if item.duplicates else ""
        if item.kind == "set":
            also = f"  (set of {len(item.members)} image(s)" + (f", {len(item.member_errors)} unusable" if item.member_errors else "") + ")"
        stream.write(f"{action:5} {item.image_id}  {item.source.rel}{also}\n")
    stream.write(f"{len(items)} {unit}: {counts['run']} to run, {counts['retry']} to retry, {counts['skip']} already done"
                 + (f", {counts['redo']} done under other settings" if counts["redo"] else "")
                 + (f", {counts['rerank']} done to re-rank for --prompts-per-image (no model call)" if counts["rerank"] else "")
                 + "\n")
    return EXIT_OK


def main(argv: Optional[list[str]] = None) -> int:
    """The command line; returns the exit status (usable as a console-script entry point)."""
    parser = build_parser()
    args = parse_or_status(lambda: parser.parse_args(argv))
    if isinstance(args, int):
        return args
    with JobLogging(verbose=args.verbose) as logs:
        return _main(args, logs, sys.argv[1:] if argv is None else list(argv))


def _main(args: argparse.Namespace, logs: JobLogging, argv: list[str]) -> int:
    source = ImageSource(folder=Path(args.dir)) if args.dir is not None else ImageSource(files=tuple(map(Path, args.image)))
    out_dir = Path(args.out)
    try:
        cfg = with_agent_flags(load_config(ArpoConfig, args.config, args.set), args)
        if args.group_by is not None:
            cfg = cfg.model_copy(update={"job": cfg.job.model_copy(update={"group_by": args.group_by})})
        if cfg.job.group_by == "folder" and args.image:
            raise ConfigError("--group-by", "job.group_by", "folder groups the subfolders of --dir; with --image "
                                                            "there is no folder to group")
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return EXIT_SETUP_ERROR
    with contextlib.ExitStack() as held:
        try:
            if args.dry_run:
                return dry_run(cfg, source, out_dir, sys.stdout)
            lock, identity = prepare_output(source, out_dir, cfg, args.settings_changed)
            held.enter_context(lock)
            job_log = logs.open_job_log(out_dir)
            log.info("job started: %s", " ".join(argv))
            items = model_free_checks(cfg, source, out_dir)
        except (SetupError, KeyboardInterrupt) as exc:
            return _not_started(exc)
        if logs.quiet:
            print(f"starting Ray and the model roles; logs: {job_log.parent}{os.sep}", file=sys.stderr)
        return _run_with_roles(cfg, source, out_dir, identity, args, logs, items)


def _not_started(exc: BaseException) -> int:
    """The exit status of a job that stopped before its first image: a setup error (2) or Ctrl-C (130), said."""
    if isinstance(exc, KeyboardInterrupt):
        print("interrupted while starting", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"setup error: {exc}", file=sys.stderr)
    return EXIT_SETUP_ERROR


def model_free_checks(cfg: ArpoConfig, source: ImageSource, out_dir: Path) -> list:
    """The checks left that need no model, run before any loads (under the output folder's lock): every model
    path the profile names exists, the checkpoint database answers, and the image plan (read in this thread, so Ctrl-C interrupts it) is
    not empty. Returns the plan; raises :class:`SetupError`."""
    from agents.checkpointing import check_checkpointer
    from agents.local_models import missing_models_problem

    problem = missing_models_problem(cfg)
    if problem:
        raise SetupError(problem)
    check_checkpointer(cfg.job.checkpoint, out_dir.resolve())
    return plan_items(source, out_dir.resolve(), cfg)


def _run_with_roles(cfg: ArpoConfig, source: ImageSource, out_dir: Path, identity, args, logs: JobLogging,
                    items: list) -> int:
    try:
        import ray  # noqa: F401 - its logger exists once imported: route it before Ray starts

        logs.adopt_ray_logger()
        if logs.quiet:
            running = start_ray_and_roles(cfg, log_dir=log_dir(out_dir))
        else:
            running = start_ray_and_roles(cfg)
    except (SetupError, KeyboardInterrupt) as exc:
        return _not_started(exc)
    try:
        outcome = asyncio.run(_main_async(cfg, source, out_dir, running.roles, args.concurrency,
                                          args.config or "<defaults>", identity,
                                          CaptionOptions(args.captions_txt, args.captions_beside_images), items))
    except SetupError as exc:
        print(f"setup error: {exc}", file=sys.stderr)
        return EXIT_SETUP_ERROR
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        log.info("fatal error:\n%s", traceback.format_exc())
        print(f"fatal error: {type(exc).__name__}: {exc}; results written so far are intact, rerun to resume", file=sys.stderr)
        return EXIT_FATAL
    finally:
        stop_ray_and_roles(running)
    summary = (f"{outcome.done} done, {outcome.failed} failed, {outcome.skipped} already done, of {outcome.total} images"
               f" in {outcome.elapsed_s:.1f}s; results: {out_dir / RESULTS_JSONL}, report: {out_dir / 'report.html'}, "
               f"captions: {out_dir / CAPTIONS_JSONL}")
    log.info("%s", summary)
    print(summary, file=sys.stderr)
    return outcome.exit_code


async def _main_async(cfg: ArpoConfig, source: ImageSource, out_dir: Path, roles, concurrency: Optional[int], profile: str,
                      identity, captions: CaptionOptions = CaptionOptions(), items: Optional[list] = None) -> BatchOutcome:
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
    return await run_batch(cfg, source, out_dir, roles, concurrency, profile=profile, stop=stop, identity=identity,
                           captions=captions, items=items)


if __name__ == "__main__":
    sys.exit(main())
