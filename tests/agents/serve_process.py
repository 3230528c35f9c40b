"""``python -m tests.agents.serve_process --data DIR [--batch OUT]``: the page's server in a process of its own,
over the scripted model doubles (tests and benchmarks/serve_hostile.py only: its memory and latency are
measured from outside, as a user's server would be).

Prints ``serving on http://127.0.0.1:PORT/`` once it answers, and serves until SIGTERM / SIGINT.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from agents.serve.options import ServeOptions
from tests.agents.doubles import make_roles
from tests.agents.serve_doubles import REPLIES, Server, config, world


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--batch", action="append", default=[])
    args = p.parse_args(argv)
    data = Path(args.data)
    opts = ServeOptions(data_dir=data, batches=[Path(b) for b in args.batch])
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with Server(config(data), make_roles(world(), REPLIES), opts) as server:
        print(f"serving on {server.url}/", flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
