"""``python -m agents.serve --config FILE [--host 127.0.0.1] [--port 8000] [--data DIR] [--batch OUT ...]``

Starts the model roles the way the batch job does (a local loopback Ray, or the cluster under
``RAY_ADDRESS`` / ``ray.address``; ``job.shared_roles`` shares them with batch jobs), then serves the
interactive page until Ctrl-C. Runs live under ``--data`` and survive a restart: the next start with
the same config resumes the runs that were going.

Everything that needs no model is checked first, in this order, so a mistake is reported in seconds:
the config and options, the port (taken now), the data folder and its lock (one server per folder),
the checkpoint database (within ``job.checkpoint.connect_timeout_s``); then the models load.
Exit status: 0 after a clean stop, 2 for a setup error (any of those checks, or a role that failed
to load), 130 when interrupted while starting.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import socket
import sys
from pathlib import Path
from typing import Iterator, Optional

from pydantic import ValidationError

from agents.batch.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_SETUP_ERROR, SetupError
from agents.config import ArpoConfig
from agents.serve.options import ServeOptions
from core.cli import parse_or_status, prog_name
from core.config import SET_HELP, ConfigError, load_config

log = logging.getLogger("agents.serve")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog_name("agents.serve"), description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML config (agents.config.ArpoConfig), as for the batch job; default: built-in defaults.")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
    p.add_argument("--host", default="127.0.0.1", help="Address to listen on (default 127.0.0.1; any other is reachable "
                                                       "from the network: the page has no login).")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0 picks a free one).")
    p.add_argument("--data", default="outputs/serve", help="Folder for uploads, runs and the checkpoint database (default %(default)s).")
    p.add_argument("--batch", action="append", default=[], metavar="OUT",
                   help="A batch job's output folder the page may open in the results browser (repeatable; read-only).")
    p.add_argument("--max-running", type=int, default=4, help="Optimisations at once; later uploads queue (default %(default)s).")
    p.add_argument("--max-queued", type=int, default=64, help="Uploads waiting for a slot at most; more are refused "
                                                                "with 429 (default %(default)s).")
    p.add_argument("--max-upload-pixels", type=int, default=4096 * 4096,
                   help="Most pixels an upload may have, read from its header before decoding (default %(default)s).")
    p.add_argument("--max-set-images", type=int, default=16,
                   help="The most images one upload may hold as a set, one prompt for them all (default %(default)s).")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="Another name the page may be reached by (repeatable; e.g. behind a reverse proxy). The Host "
                        "header of every request must name this server: the bound address, or one of these.")
    p.add_argument("-v", "--verbose", action="store_true", help="Debug logging.")
    return p


def bind(options: ServeOptions) -> socket.socket:
    """The listening socket, taken before any model loads (a busy port fails fast)."""
    family = socket.AF_INET6 if ":" in options.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((options.host, options.port))
    except OSError as exc:
        sock.close()
        raise SetupError(f"cannot listen on {options.host}:{options.port}: {exc.strerror or exc}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_or_status(lambda: build_parser().parse_args(argv))
    if isinstance(args, int):
        return args
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(ArpoConfig, args.config, args.set)
        options = ServeOptions(host=args.host, port=args.port, data_dir=Path(args.data), batches=[Path(b) for b in args.batch],
                               max_running=args.max_running, max_queued=args.max_queued,
                               max_upload_pixels=args.max_upload_pixels, max_set_images=args.max_set_images,
                               allowed_hosts=args.allowed_host)
    except (ConfigError, ValidationError) as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return EXIT_SETUP_ERROR
    from agents.local_models import missing_models_problem

    problem = missing_models_problem(cfg)
    if problem:  # before the port is bound and any role starts
        print(f"setup error: {problem}", file=sys.stderr)
        return EXIT_SETUP_ERROR
    if not options.is_loopback():
        log.warning("listening on %s: anyone who can reach this address can upload images and use the models "
                    "(the page has no login)", options.host)
    try:
        sock = bind(options)
    except SetupError as exc:
        print(f"setup error: {exc}", file=sys.stderr)
        return EXIT_SETUP_ERROR
    with contextlib.ExitStack() as held:
        held.callback(sock.close)
        try:
            held.enter_context(data_folder(options, cfg))
        except SetupError as exc:
            print(f"setup error: {exc}", file=sys.stderr)
            return EXIT_SETUP_ERROR
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED
        return _serve_with_roles(cfg, options, sock)


@contextlib.contextmanager
def data_folder(options: ServeOptions, cfg: ArpoConfig) -> Iterator[None]:
    """The data folder, held for this server alone, with its checkpoint database reachable (SetupError else)."""
    from agents.checkpointing import check_checkpointer
    from agents.browser.results import OutputFolderBusy, exclusive_output

    with contextlib.ExitStack() as held:
        try:  # only the checks: an error while serving is not the data folder's
            held.enter_context(exclusive_output(options.data_dir))
            check_checkpointer(cfg.job.checkpoint, options.data_dir.resolve())  # a SetupError when unreachable
        except OutputFolderBusy:
            raise SetupError(f"{options.data_dir}: another server (or batch job) is using this data folder") from None
        except OSError as exc:
            raise SetupError(f"{options.data_dir}: cannot use it as the data folder: {exc}") from None
        yield


def _serve_with_roles(cfg: ArpoConfig, options: ServeOptions, sock: socket.socket) -> int:
    from agents.batch.startup import start_ray_and_roles, stop_ray_and_roles

    try:
        running = start_ray_and_roles(cfg, log_dir=options.data_dir / "logs")
    except SetupError as exc:
        print(f"setup error: {exc}", file=sys.stderr)
        return EXIT_SETUP_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    try:
        asyncio.run(serve(cfg, running.roles, options, sock))
    except KeyboardInterrupt:
        pass
    except SetupError as exc:
        print(f"setup error: {exc}", file=sys.stderr)
        return EXIT_SETUP_ERROR
    finally:
        stop_ray_and_roles(running)
    return EXIT_OK


async def serve(cfg: ArpoConfig, roles, options: ServeOptions, sock: socket.socket) -> None:
    import uvicorn

    from agents.serve.app import create_app

    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host

    def ready() -> None:  # after the app's start-up (checkpointer open, runs resumed): the page answers now
        print(f"serving on http://{shown}:{port}/ (data: {options.data_dir}); Ctrl-C stops, runs resume at the next "
              "start", file=sys.stderr, flush=True)

    app = create_app(cfg, roles, options, on_ready=ready)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=5))
    try:
        await server.serve(sockets=[sock])
    except SystemExit as exc:  # uvicorn exits 3 when the app's start-up fails, having logged why
        raise SetupError(f"the page's start-up failed (exit {exc.code}; its error is above)") from None


if __name__ == "__main__":
    sys.exit(main())
