"""Child process of tests/agents/test_kill9_batch.py: the real batch job, cheap roles, optional self-kill.

    python -m tests.agents.kill9_driver <agents.batch_reverse arguments>

runs ``agents.batch_reverse.main`` (the real CLI, runner, writer, checkpointer and
report) with the scripted role doubles of tests/agents/doubles.py in place of Ray, as
tests/agents/test_batch_cli.py does. The doubles serve a whole folder of distinct
images (:class:`Gallery`) and survive being killed: which prompt made which generated
image is appended to a side file, so a rerun can still tell the VLM and CLIP doubles
what an image written by a killed process shows. Every double call waits a short
random (seeded) time, so kills land in different places.

Environment:
    KILL9_ORIGINS  side file of generated images' origins (outside the output folder)
    KILL9_READY    file created when the job asks for its roles (lock and job.json done)
    KILL9_SEED     seed of the doubles' delays and of the targeted kill's cut point
    KILL9_DELAY_S  mean delay of a double call (default 0.004)
    KILL9_AT       ``kind:n[:mode]``: SIGKILL this process inside the n-th write of that kind
                   (counted from this process's start), after writing a JSON note to KILL9_NOTE:
      append:n[:first|middle|last]  the n-th results.jsonl append writes only part of its
                   line (1 byte / a random part / everything but the newline), then dies
      png:n        the n-th PNG written (agents.browser.results.atomic_write_bytes, any module that
                   imported it) leaves its temporary file partly written, then dies
      sqlite:n:open|torn|after  the n-th commit of the SQLite checkpointer (aiosqlite
                   Connection.commit): dies with the transaction executed but not committed;
                   or commits, cuts the WAL file back into the middle of the frames that commit
                   appended (as a kill between SQLite's write calls leaves it: no commit frame),
                   then dies; or dies right after the commit, before the saver returns
      ckpt:n:inflight|after[:aput|aput_writes]  any checkpointer (SQLite or Postgres): the
                   n-th ``aput`` / ``aput_writes`` (or only the named one) dies while the saver's
                   call is still running (after a random number of event-loop turns) or right
                   after it returned — ``after:aput_writes`` is the moment a node's writes are
                   saved but the step's checkpoint is not yet
    KILL9_NOTE     where a targeted kill writes what it interrupted, just before dying
    KILL9_HOLD_DONE  n: the results.jsonl append that would record more than n images done
                   freezes this process instead (until the test's SIGKILL), so a random kill
                   still finds the job running however long the test was descheduled

``python -m tests.agents.kill9_driver --serve`` is a fork server for the test: it imports
everything once, then for each request (a JSON line on stdin: argv, env, log file) forks
a child that runs the job as above (the job process the test kills), reports its pid,
waits for it, and reports how it ended. It is a child subreaper, so anything the job
started that outlived it would be re-parented to the server: each report lists such
leftovers (and then ends them).
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

import agents.batch_reverse as br
import agents.browser.results
import core.durable_files
from agents.batch.startup import RunningRoles
from agents.images import ImageLoadError, load_rgb
from tests.agents.doubles import World, _key, fragment_sum, make_roles

#: Fragments the LLM double proposes, and how much each brings a prompt closer (all help, so
#: every image runs its full agent.max_steps iterations).
FRAGMENTS = ["red ball", "blue sky", "green hat", "soft light", "oil painting", "wooden table", "tall tree",
             "small dog", "old car", "bright sun", "dark cloud", "stone wall", "paper kite", "glass vase"]
WEIGHTS = {f: 0.01 + 0.002 * i for i, f in enumerate(FRAGMENTS)}

KINDS = ("append", "png", "sqlite", "ckpt")


class Gallery(World):
    """A :class:`World` with many references (every decodable image of the folder) and a durable origin map."""

    def __init__(self, references: list[np.ndarray], origins: Path):
        super().__init__(fragment_sum(WEIGHTS, unknown=-0.01))
        self.reference_keys = {_key(r) for r in references}
        self.origins = origins
        if origins.exists():
            for line in origins.read_bytes().split(b"\n"):
                try:
                    entry = json.loads(line)
                except ValueError:  # an empty or partial last line
                    continue
                self._origin[entry["key"]] = (entry["prompt"], entry["seed"])

    def is_reference(self, image) -> bool:
        return _key(np.asarray(image)) in self.reference_keys

    def check_reference(self, image) -> None:
        assert self.is_reference(image), "a double was given something other than one of the folder's images"

    def origin(self, image: np.ndarray) -> tuple[str, int]:
        if self.is_reference(image):
            return ("<<reference>>", 0)
        return super().origin(image)

    def generate(self, prompt: str, seed: int) -> np.ndarray:
        image = super().generate(prompt, seed)
        # One O_APPEND write before the image is returned: any PNG on disk has its origin recorded.
        line = json.dumps({"key": _key(image), "prompt": prompt, "seed": seed}).encode() + b"\n"
        fd = os.open(self.origins, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
        return image


def gallery_roles(image_dir: Path, origins: Path, rng: random.Random, mean_delay_s: float):
    """The five doubles over every decodable image of ``image_dir``, each call delayed a little."""
    references = []
    for path in sorted(p for p in image_dir.rglob("*") if p.is_file()):
        try:
            references.append(load_rgb(path, 1 << 24))
        except ImageLoadError:
            pass
    world = Gallery(references, origins)
    replies = [f'["{FRAGMENTS[i % len(FRAGMENTS)]}"]' for i in range(2000)]
    roles = make_roles(world, {None: replies, "content": list(replies), "style": list(replies)})
    roles.clip._check_reference = world.check_reference
    captioner = roles.captioner

    async def caption(image) -> str:
        captioner._tick("caption")
        world.check_reference(image)
        return captioner.caption_text

    captioner.caption = caption
    for role, method in (("t2i", "generate"), ("clip", "image_image_scores"), ("clip", "text_image_scores"),
                         ("llm", "chat"), ("vlm", "chat"), ("captioner", "caption"), ("t2i", "count_tokens")):
        _delay(getattr(roles, role), method, rng, mean_delay_s)
    return roles


def _delay(obj: Any, method: str, rng: random.Random, mean_s: float) -> None:
    real = getattr(obj, method)

    async def delayed(*args, **kwargs):
        await asyncio.sleep(rng.uniform(0.0, 2 * mean_s))
        return await real(*args, **kwargs)

    setattr(obj, method, delayed)


# --------------------------------------------------------------------------- targeted kills

def _die(note: dict) -> None:
    """Record what is being killed (one write, before dying), then SIGKILL this process."""
    path = os.environ.get("KILL9_NOTE")
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, json.dumps(note).encode())
        os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)


class _Counter:
    def __init__(self, n: int):
        self.n, self.seen = n, 0

    def hit(self) -> bool:
        self.seen += 1
        return self.seen == self.n


def _patch_everywhere(name: str, original: Callable, replacement: Callable) -> list[str]:
    """Replace ``name`` in every loaded agents module that bound ``original`` (``from agents.browser.results import ...``)."""
    patched = []
    for modname, module in list(sys.modules.items()):
        if modname.startswith("agents") and getattr(module, name, None) is original:
            setattr(module, name, replacement)
            patched.append(modname)
    return patched


def arm_append(n: int, mode: str, rng: random.Random) -> None:
    real = agents.browser.results.append_line_durably
    counter = _Counter(n)

    def append_line_durably(path, record):
        if not counter.hit():
            return real(path, record)
        line = core.durable_files.json_line(record)  # the bytes the real append would write
        cut = {"first": 1, "last": len(line) - 1}.get(mode) or rng.randint(2, len(line) - 2)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(fd, line[:cut])
        os.close(fd)
        _die({"kind": "append", "mode": mode, "n": n, "cut": cut, "of": len(line), "image_id": record.get("image_id"),
              "status": record.get("status")})

    assert _patch_everywhere("append_line_durably", real, append_line_durably)


def hold_done_at(cap: int) -> None:
    """Freeze (block the whole process) before an append that would take the done images past ``cap``."""
    real = agents.browser.results.append_line_durably

    def append_line_durably(path, record):
        if record.get("status") == "done":
            done = _done_ids(Path(path))
            if record.get("image_id") not in done and len(done) >= cap:
                while True:  # the whole process is blocked, so nothing appends meanwhile: wait for the SIGKILL
                    time.sleep(3600)
        return real(path, record)

    assert _patch_everywhere("append_line_durably", real, append_line_durably)


def _done_ids(path: Path) -> set:
    """Image ids with a 'done' record in a results file (a torn last line is skipped)."""
    ids = set()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ids
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("status") == "done":
            ids.add(record.get("image_id"))
    return ids


def arm_png(n: int, rng: random.Random) -> None:
    real = agents.browser.results.atomic_write_bytes
    counter = _Counter(n)

    def atomic_write_bytes(path, data):
        target = Path(path)
        if target.suffix.lower() != ".png" or not counter.hit():
            return real(path, data)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        cut = rng.randint(1, max(1, len(data) - 1))
        os.write(fd, data[:cut])
        _die({"kind": "png", "n": n, "cut": cut, "of": len(data), "target": str(target), "tmp": tmp})

    patched = _patch_everywhere("atomic_write_bytes", real, atomic_write_bytes)
    assert "agents.nodes" in patched and "agents.batch.runner" in patched, patched


def arm_sqlite(n: int, mode: str, out_dir: Path, sqlite_file: str, rng: random.Random) -> None:
    import aiosqlite

    real = aiosqlite.Connection.commit
    counter = _Counter(n)
    db = out_dir / sqlite_file
    wal = db.with_name(db.name + "-wal")
    state = {"armed": False}

    def db_stat():
        try:
            st = db.stat()
            return st.st_size, st.st_mtime_ns
        except FileNotFoundError:
            return None

    def wal_stat():
        """(size, salts of the WAL header): new salts mean SQLite restarted the WAL from its start."""
        try:
            with open(wal, "rb") as fh:
                header = fh.read(32)
                return fh.seek(0, os.SEEK_END), header[16:24]
        except FileNotFoundError:
            return 0, b""

    async def commit(self):
        if not (counter.hit() or state["armed"]):
            return await real(self)
        if mode == "open":
            _die({"kind": "sqlite", "mode": mode, "n": n})
        if mode == "after":
            await real(self)
            _die({"kind": "sqlite", "mode": mode, "n": n})
        # torn: cut the WAL back into the frames this commit wrote, leaving what a kill between
        # SQLite's write calls leaves (the commit's last frame, which marks it committed, missing).
        # Only when no checkpoint copied the frames into the database file during this commit
        # (a cut WAL would then not be a state a crash can leave); else try the next commit.
        (size_before, salt_before), db_before = wal_stat(), db_stat()
        await real(self)
        (size_after, salt_after), db_after = wal_stat(), db_stat()
        cut = None
        if db_after == db_before and salt_before and salt_after:
            if salt_after != salt_before:  # restarted: this commit's frames start right after the header
                cut = 32 + rng.randint(1, 4000)
            elif size_after > size_before:  # appended at the end
                cut = size_before + rng.randint(1, size_after - size_before - 1)
        if cut is not None and cut < size_after:
            os.truncate(wal, cut)
            _die({"kind": "sqlite", "mode": mode, "n": n, "deferred": state["armed"],
                  "restarted": salt_after != salt_before, "wal": [size_before, cut, size_after]})
        state["armed"] = True

    aiosqlite.Connection.commit = commit


def arm_ckpt(n: int, mode: str, only: str, rng: random.Random) -> None:
    """Wrap aput/aput_writes of whatever saver the job opens (patched on the class when it is opened)."""
    import agents.checkpointing as cp

    counter = _Counter(n)

    def wrap(real, name):
        async def method(self, *args, **kwargs):
            if (only and name != only) or not counter.hit():
                return await real(self, *args, **kwargs)
            task = asyncio.ensure_future(real(self, *args, **kwargs))
            turns = 0
            if mode == "inflight":
                for _ in range(rng.randint(1, 4)):
                    if task.done():
                        break
                    await asyncio.sleep(0)
                    turns += 1
            else:
                await task
            _die({"kind": "ckpt", "mode": f"{mode}:{only}" if only else mode, "n": n, "method": name, "turns": turns,
                  "finished": task.done()})
        return method

    real_open = cp.open_checkpointer
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def open_checkpointer(cfg, out_dir):
        async with real_open(cfg, out_dir) as saver:
            cls = type(saver)
            if not getattr(cls, "_kill9_wrapped", False):
                cls.aput = wrap(cls.aput, "aput")
                cls.aput_writes = wrap(cls.aput_writes, "aput_writes")
                cls._kill9_wrapped = True
            yield saver

    cp.open_checkpointer = open_checkpointer


def arm(spec: str, out_dir: Path, sqlite_file: str, rng: random.Random) -> None:
    kind, n, *rest = spec.split(":")
    mode, only = (rest + ["", ""])[:2]
    if kind == "append":
        arm_append(int(n), mode or "middle", rng)
    elif kind == "png":
        arm_png(int(n), rng)
    elif kind == "sqlite":
        arm_sqlite(int(n), mode, out_dir, sqlite_file, rng)
    elif kind == "ckpt":
        arm_ckpt(int(n), mode, only, rng)
    else:
        raise SystemExit(f"KILL9_AT: unknown kind {kind!r} (known: {', '.join(KINDS)})")


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--dir")
    parser.add_argument("--out")
    args, _ = parser.parse_known_args(argv)
    rng = random.Random(int(os.environ.get("KILL9_SEED", "0")))
    roles = gallery_roles(Path(args.dir), Path(os.environ["KILL9_ORIGINS"]), rng,
                          float(os.environ.get("KILL9_DELAY_S", "0.004")))
    import agents.graph  # noqa: F401  (the modules whose imports a targeted kill patches)
    import agents.nodes  # noqa: F401

    spec = os.environ.get("KILL9_AT")
    if spec:
        arm(spec, Path(args.out), "checkpoints.sqlite", rng)
    hold = os.environ.get("KILL9_HOLD_DONE")
    if hold:
        hold_done_at(int(hold))

    def start(cfg, **_):
        ready = os.environ.get("KILL9_READY")
        if ready:
            Path(ready).touch()
        return RunningRoles(roles, False)

    br.start_ray_and_roles = start
    return br.main(argv)


# --------------------------------------------------------------------------- fork server

PR_SET_CHILD_SUBREAPER = 36


def _become_subreaper() -> bool:
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _preload() -> None:
    from PIL import Image

    import agents.api  # noqa: F401
    import agents.checkpointing  # noqa: F401
    import agents.graph  # noqa: F401
    import agents.nodes  # noqa: F401
    import aiosqlite  # noqa: F401
    import langgraph.checkpoint.sqlite.aio  # noqa: F401
    try:
        import langgraph.checkpoint.postgres.aio  # noqa: F401
    except ImportError:
        pass
    Image.init()


def _child(request: dict) -> None:
    """In the forked child: become the job process and never return."""
    rc = 99
    try:
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        os.close(null)
        os.environ.update(request["env"])
        rc = main(request["argv"])
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 98
    except BaseException:  # noqa: BLE001 - reported in the log; the exit status says it
        import traceback

        traceback.print_exc()
        rc = 97
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(rc)


def _leftovers() -> list[dict]:
    """Processes re-parented to this server (or still its children) besides reaped ones: end and report them."""
    import psutil

    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            found.append({"pid": proc.pid, "cmdline": proc.cmdline()})
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    while True:  # reap everything that ended
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
    return found


def serve() -> int:
    def say(message: dict) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    subreaper = _become_subreaper()
    _preload()
    say({"ready": True, "subreaper": subreaper, "pid": os.getpid()})
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)
        say({"started": pid})
        _, status = os.waitpid(pid, 0)
        say({"pid": pid, "returncode": os.waitstatus_to_exitcode(status), "leftovers": _leftovers()})
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        sys.exit(serve())
    sys.exit(main(sys.argv[1:]))
