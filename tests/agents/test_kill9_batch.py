"""kill -9 proof of the batch job: SIGKILLed again and again, a rerun still ends with every image recorded once.

The job under test is the real one — ``agents.batch_reverse.main`` with its runner,
writer, checkpointer and report — in a separate process, with the scripted role doubles
of tests/agents/doubles.py in place of Ray (tests/agents/kill9_driver.py; a fork server
there starts each run without paying the imports again). The harness

* kills the job with SIGKILL at random instants (seeded), gated on its progress so the
  kills spread over the whole run, from start-up to the last images;
* and kills it where a crash hurts most, from inside the child (``KILL9_AT``): halfway
  through appending a results.jsonl line, through writing a PNG, and inside the SQLite
  checkpointer's commit (transaction open / WAL cut inside the commit's frames / just
  after it) or any saver's ``aput`` while it runs;
* after every kill checks that nothing the job started survived it and that the log
  holds only whole lines (but perhaps a partial last one);
* then reruns the job to the end and checks what it left: one ``done`` line per good
  image, one error line per bad file (not one per rerun), no corrupt line, every
  per-image folder complete and equal to its line (its detail page too), results.csv /
  report.html whole, the report's rows one per image of the log, and
  no record lost (every whole line seen after any kill is still in the final log).

:func:`run_kill9_harness` takes the checkpointer's ``--set`` keys and environment, so the
same harness runs on Postgres (``job.checkpoint.kind=postgres``).
"""
from __future__ import annotations

import csv
import json
import os
import random
import select
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import psutil
import pytest
from PIL import Image

import agents.batch_reverse as br
from agents.image_id import content_id

REPO = Path(__file__).resolve().parents[2]
#: The harness's seed; KILL9_TEST_SEED overrides it (to explore other schedules).
SEED = int(os.environ.get("KILL9_TEST_SEED", "9"))
GOOD_IMAGES = 48
RANDOM_KILLS = 20
#: A random kill comes this long (at most) after the job started or reached its progress gate,
#: or sooner, when the job has finished OVERSHOOT more images meanwhile (so that the kills,
#: however fast the machine, do not finish the job themselves: the last runs still find work).
#: A job under a random kill also freezes rather than record more than images − 2 done (KILL9_HOLD_DONE):
#: on a loaded machine this test can be descheduled long enough for the job to finish first.
MAX_KILL_DELAY_S = 0.15
OVERSHOOT = 2
#: Random kills are gated on progress from 0 up to this fraction of the images ...
LAST_GATE = 0.9
#: ... and the targeted kills come among the first this fraction of the runs (while work is left).
TARGETED_WITHIN = 0.7
RUN_TIMEOUT_S = 90.0
JOB_ARGS = ("--set", "agent.framework=vanilla", "--set", "agent.max_steps=3", "--set", "job.summary_refresh_s=0",
            "--concurrency", "6")

#: Targeted kills (kill9_driver's KILL9_AT) with the range n is drawn from; "{n}" is filled in.
#: Small n: each targeted run then does little work, and the random kills keep work to land in.
SQLITE_TARGETS = (("append:{n}:first", 1, 3), ("append:{n}:middle", 1, 3), ("append:{n}:last", 1, 3),
                  ("png:{n}", 1, 8), ("png:{n}", 1, 8), ("sqlite:{n}:open", 1, 16), ("sqlite:{n}:torn", 1, 16),
                  ("sqlite:{n}:after", 1, 16), ("ckpt:{n}:inflight", 1, 16), ("ckpt:{n}:after:aput_writes", 1, 16))
POSTGRES_TARGETS = (("append:{n}:first", 1, 3), ("append:{n}:middle", 1, 3), ("append:{n}:last", 1, 3),
                    ("png:{n}", 1, 8), ("png:{n}", 1, 8), ("ckpt:{n}:inflight", 1, 16), ("ckpt:{n}:inflight", 1, 16),
                    ("ckpt:{n}:after", 1, 16), ("ckpt:{n}:after:aput_writes", 1, 16))


# --------------------------------------------------------------------------- the image folder

def make_image_folder(root: Path, good: int, seed: int) -> tuple[set[str], dict[str, str]]:
    """``good`` distinct 32x32 random PNGs (some in a subfolder) and two bad files.

    Returns the good images' ids and ``{bad file name: its id}``."""
    rng = np.random.default_rng(seed)
    (root / "sub").mkdir(parents=True)
    good_ids = set()
    for i in range(good):
        path = root / ("sub" if i % 5 == 0 else "") / f"img_{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)).save(path)
        good_ids.add(content_id(path))
    assert len(good_ids) == good
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + rng.integers(0, 256, 64, dtype=np.uint8).tobytes())
    (root / "sub" / "cut.png").write_bytes((root / "img_01.png").read_bytes()[:90])
    bad = {"broken.jpg": content_id(root / "broken.jpg"), "sub/cut.png": content_id(root / "sub" / "cut.png")}
    return good_ids, bad


# --------------------------------------------------------------------------- the fork server

class ForkServer:
    """``python -m tests.agents.kill9_driver --serve``: one job process at a time."""

    def __init__(self, log: Path, env: dict):
        self.log = log.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.agents.kill9_driver", "--serve"], cwd=REPO, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log)
        self._buffer = b""
        self.running: Optional[int] = None  # the job process now running
        hello = self.message(timeout=60)
        assert hello and hello.get("ready"), f"the fork server did not start: {hello}"
        self.subreaper = hello["subreaper"]

    def message(self, timeout: float) -> Optional[dict]:
        """The next message, or None when none came within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError(f"the fork server died (exit status {self.proc.wait()})")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        message = json.loads(line)
        if "returncode" in message:
            self.running = None
        return message

    def start(self, argv: list[str], env: dict, log: Path) -> int:
        self.proc.stdin.write((json.dumps({"argv": argv, "env": env, "log": str(log)}) + "\n").encode())
        self.proc.stdin.flush()
        started = self.message(timeout=30)
        assert started and "started" in started, started
        self.running = started["started"]
        return self.running

    def close(self) -> None:
        if self.running is not None:  # a check failed while a job ran: end it (the server reaps it)
            try:
                os.kill(self.running, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


# --------------------------------------------------------------------------- reading the log

def log_lines(path: Path) -> tuple[list[dict], bytes]:
    """Whole records of results.jsonl (a complete last line without its newline counts) and the
    unfinished tail a kill may have left. A bad line anywhere else fails."""
    if not path.exists():
        return [], b""
    raw = path.read_bytes()
    *lines, tail = raw.split(b"\n")
    records = []
    for number, line in enumerate(lines, 1):
        assert line.strip(), f"{path}: empty line {number}"
        records.append(json.loads(line))  # a corrupt line in the middle fails here
    if tail:
        try:
            records.append(json.loads(tail))
            tail = b""
        except ValueError:
            pass
    return records, tail


def done_count(path: Path) -> int:
    try:
        records, _ = log_lines(path)
    except (ValueError, OSError):
        return 0
    return len({r["image_id"] for r in records if r.get("status") == "done"})


def tagged_processes(tag: str) -> list[str]:
    """Processes whose environment carries ``KILL9_TAG=tag``: anything exec'd by a job process."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if proc.pid != os.getpid() and proc.environ().get("KILL9_TAG") == tag:
                found.append(f"{proc.pid} {proc.info['cmdline']}")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return found


# --------------------------------------------------------------------------- the harness

@dataclass
class Kill9Figures:
    images: int
    bad_files: int
    kills: Counter = field(default_factory=Counter)  # "random", "append:first", "sqlite:torn", ...
    kill_progress: list = field(default_factory=list)  # fraction of images done when each random kill landed
    runs: int = 0
    records_seen: int = 0  # distinct whole lines seen in the log after some kill
    records_lost: int = 0  # of those, missing from the final log
    stray_tmp_files: int = 0  # temporary files left by killed atomic writes (never referenced)
    seconds: float = 0.0

    @property
    def kills_total(self) -> int:
        return sum(self.kills.values())

    def kinds(self) -> Counter:
        """Kills by kind, modes merged: random, append, png, sqlite, ckpt."""
        merged: Counter = Counter()
        for key, count in self.kills.items():
            merged[key.split(":")[0]] += count
        return merged

    def summary(self) -> str:
        return (f"kill -9 figures: {self.kills_total} kills ({dict(self.kinds())}; by mode {dict(sorted(self.kills.items()))}), "
                f"{self.images} images + {self.bad_files} bad files, {self.runs} runs, records seen after kills "
                f"{self.records_seen}, records lost: {self.records_lost}, stray temp files {self.stray_tmp_files}, "
                f"random kills at {min(self.kill_progress, default=0):.0%}..{max(self.kill_progress, default=0):.0%} done, "
                f"{self.seconds:.1f}s")


def run_kill9_harness(tmp_path: Path, *, extra_set: Sequence[str] = (), env: Optional[dict] = None,
                      targeted: Sequence[tuple[str, int, int]] = SQLITE_TARGETS, random_kills: int = RANDOM_KILLS,
                      good: int = GOOD_IMAGES, seed: int = SEED) -> Kill9Figures:
    """Kill the job ``random_kills`` times at random plus once per ``targeted`` spec, rerun it to
    the end, check everything, and return the figures. ``extra_set``: more ``--set`` keys (the
    checkpointer's); ``env``: more environment for the job (e.g. the Postgres URL variable)."""
    started = time.monotonic()
    rng = random.Random(seed)
    images, out, work = tmp_path / "images", tmp_path / "out", tmp_path / "harness"
    work.mkdir()
    good_ids, bad = make_image_folder(images, good, seed)
    results = out / "results.jsonl"
    argv = ["--dir", str(images), "--out", str(out), *JOB_ARGS]
    for item in extra_set:
        argv += ["--set", item]
    tag = f"kill9-{os.getpid()}-{seed}-{time.time_ns()}"
    base_env = {"KILL9_ORIGINS": str(work / "origins.jsonl"), "KILL9_TAG": tag, **(env or {})}

    total = random_kills + len(targeted)
    # Targeted kills somewhere in the first 70% of the runs; the first run is a random kill at the very start.
    slots = sorted(rng.sample(range(1, int(total * TARGETED_WITHIN)), len(targeted)))
    schedule: list[Optional[str]] = [None] * total
    for slot, (spec, low, high) in zip(slots, targeted):
        schedule[slot] = spec.format(n=rng.randint(low, high))

    figures = Kill9Figures(images=good, bad_files=len(bad))
    seen: dict[str, dict] = {}
    server = ForkServer(work / "server.log", dict(os.environ))  # the tag: only in the jobs' environment
    try:
        for index, spec in enumerate(schedule):
            log = work / f"run_{index:02d}.log"
            ready, note = work / f"ready_{index:02d}", work / f"note_{index:02d}.json"
            run_env = {**base_env, "KILL9_SEED": str(seed * 1000 + index), "KILL9_READY": str(ready),
                       "KILL9_NOTE": str(note), **({"KILL9_AT": spec} if spec else {"KILL9_HOLD_DONE": str(good - 2)})}
            pid = server.start(argv, run_env, log)
            figures.runs += 1
            if spec is None:
                ended = _kill_at_random(server, pid, ready, results, index / total * LAST_GATE * good, rng, figures, log)
            else:
                ended = server.message(timeout=RUN_TIMEOUT_S)
                assert ended is not None, f"run {index} ({spec}) did not end:\n{_tail(log)}"
                assert note.exists(), f"run {index}: the targeted kill {spec} never fired:\n{_tail(log)}"
                what = json.loads(note.read_text())
                figures.kills[f"{what['kind']}:{what.get('mode', '')}".rstrip(":")] += 1
            assert ended["returncode"] == -signal.SIGKILL, f"run {index} ({spec or 'random'}) ended with {ended}:\n{_tail(log)}"
            _check_after_kill(ended, tag, results, seen, index)
            print(f"run {index} ({spec or 'random kill'}): {done_count(results)} of {good} images done", flush=True)
        figures.records_seen = len(seen)

        # Rerun to the end: the two bad files fail, so exit status 1; a second rerun changes nothing.
        for final in ("final", "again"):
            log = work / f"run_{final}.log"
            before = results.read_bytes()
            server.start(argv, {**base_env, "KILL9_SEED": str(seed)}, log)
            figures.runs += 1
            ended = server.message(timeout=RUN_TIMEOUT_S * 2)
            assert ended is not None, f"the {final} run did not end:\n{_tail(log)}"
            assert ended["returncode"] == br.EXIT_SOME_FAILED, f"{final} run: {ended}\n{_tail(log)}"
            assert not ended["leftovers"] and not tagged_processes(tag), ended
            text = log.read_text()
            assert f"already done, of {good + len(bad)} images" in text, _tail(log)
            if final == "again":
                assert f"0 done, {len(bad)} failed, {good} already done" in text, _tail(log)
                assert results.read_bytes() == before, "a rerun of a finished job changed results.jsonl"
    finally:
        server.close()

    final_records = check_outputs(out, good_ids, bad)
    final_lines = {json.dumps(r, sort_keys=True) for r in final_records}
    figures.records_lost = sum(1 for line in seen if line not in final_lines)
    figures.stray_tmp_files = sum(1 for p in out.rglob(".*.tmp"))
    kind = ([item.split("=", 1)[1] for item in extra_set if item.startswith("job.checkpoint.kind=")] or ["sqlite"])[-1]
    if kind == "sqlite":
        with sqlite3.connect(out / "checkpoints.sqlite") as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    else:
        assert not (out / "checkpoints.sqlite").exists(), f"checkpointer {kind!r} asked for, SQLite used"
    figures.seconds = time.monotonic() - started
    return figures


def _kill_at_random(server: ForkServer, pid: int, ready: Path, results: Path, gate: float, rng: random.Random,
                    figures: Kill9Figures, log: Path) -> dict:
    """Wait for the job to start and reach ``gate`` images done, then a random moment more, then SIGKILL it."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not ready.exists() or done_count(results) < gate:
        ended = server.message(timeout=0.01)
        assert ended is None, f"run ended before its random kill: {ended}\n{_tail(log)}"
        assert time.monotonic() < deadline, f"the job never reached {gate:.1f} images done:\n{_tail(log)}"
    # never wait until the last images: a job that finishes them between two polls ends before its kill
    kill_at = time.monotonic() + rng.uniform(0.0, MAX_KILL_DELAY_S)
    enough = min(done_count(results) + OVERSHOOT, figures.images - 2)
    while time.monotonic() < kill_at and done_count(results) < enough:
        ended = server.message(timeout=min(0.01, max(0.0, kill_at - time.monotonic())))
        assert ended is None, f"run ended before its random kill (all work done?): {ended}\n{_tail(log)}"
    try:
        descendants = psutil.Process(pid).children(recursive=True)  # none with doubles; checked anyway
    except psutil.NoSuchProcess:
        descendants = []  # it just ended on its own: the caller's exit status check says how
    figures.kill_progress.append(done_count(results) / figures.images)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    figures.kills["random"] += 1
    ended = server.message(timeout=30)
    assert ended is not None, "a SIGKILLed job was not reaped"
    alive = []
    for proc in descendants:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"{proc.pid} {proc.cmdline()}")
        except psutil.NoSuchProcess:
            pass
    assert not alive, f"processes of the killed job still run: {alive}"
    return ended


def _check_after_kill(ended: dict, tag: str, results: Path, seen: dict, index: int) -> None:
    assert not ended["leftovers"], f"run {index}: processes the job started outlived it: {ended['leftovers']}"
    assert not tagged_processes(tag), f"run {index}: processes the job started outlived it: {tagged_processes(tag)}"
    records, _ = log_lines(results)  # only the last line may be unfinished
    for record in records:
        seen.setdefault(json.dumps(record, sort_keys=True), record)


def _tail(log: Path, chars: int = 3000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else "(no log)"


# --------------------------------------------------------------------------- what the job left

def check_outputs(out: Path, good_ids: set[str], bad: dict[str, str]) -> list[dict]:
    """Everything the finished job must have left in ``out``; returns the log's records."""
    raw = (out / "results.jsonl").read_bytes()
    assert raw.endswith(b"\n")
    records = [json.loads(line) for line in raw.decode("utf-8").splitlines()]  # every line parses
    assert all(isinstance(r, dict) and r.get("image_id") for r in records)
    by_status = Counter((r["image_id"], r["status"]) for r in records)
    for image_id in good_ids:
        assert by_status[(image_id, "done")] == 1, f"{image_id}: {by_status[(image_id, 'done')]} done lines"
    for name, image_id in bad.items():
        lines = [r for r in records if r["image_id"] == image_id]
        assert len(lines) == 1 and lines[0]["status"] == "error" and lines[0]["source"] == name, lines
    assert {r["image_id"] for r in records} == good_ids | set(bad.values())
    latest = {r["image_id"]: r for r in records}
    for image_id in good_ids:
        record = latest[image_id]
        # A finished optimisation always says why it stopped and has its iterations.
        assert record["status"] == "done" and not record.get("error"), record
        assert record["stop_reason"] and record["iterations"] and record["prompt"], (
            f"{record['source']}: a 'done' record of an unfinished optimisation: {record}")
        _check_image_folder(out, record)
    with (out / "results.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(latest) and {row["image_id"]: row["status"] for row in rows} == {
        i: r["status"] for i, r in latest.items()}
    report = (out / "report.html").read_text(encoding="utf-8")
    assert report.rstrip().endswith("</html>")
    # the results browser's rows: every line whole, one image per record of the log
    lines = (out / "report_rows.js").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line[len("ARPO.rows.push("):-len(");")]) for line in lines if not line.startswith("/*")]
    assert {row["id"]: row["st"] for row in rows} == {i: r["status"] for i, r in latest.items()}
    return records


def _check_image_folder(out: Path, record: dict) -> None:
    folder = out / record["output_dir"]
    assert json.loads((folder / "result.json").read_text(encoding="utf-8")) == record
    page = (folder / "index.html").read_text(encoding="utf-8")  # the detail page, whole
    assert page.rstrip().endswith("</html>") and record["image_id"] in page
    assert (folder / "final_prompt.txt").is_file()
    scores = (folder / "scores.csv").read_text(encoding="utf-8").splitlines()
    assert len(scores) == 1 + len(record["iterations"])
    paths = [record["reference"]] + [p for it in record["iterations"] for p in it["images"]]
    assert record["reference"] and all(it["images"] for it in record["iterations"]), record
    for rel in paths:
        assert not Path(rel).name.endswith(".tmp"), rel
        with Image.open(out / rel) as img:
            img.load()  # a whole, decodable PNG


# --------------------------------------------------------------------------- the tests

@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_held_job_freezes_at_its_cap_until_killed(tmp_path):
    """The harness's safety net (KILL9_HOLD_DONE): the job records no more done images than the cap, does not
    end on its own, and dies to the SIGKILL; without the hold the same job finishes."""
    images, out, work = tmp_path / "images", tmp_path / "out", tmp_path / "harness"
    work.mkdir()
    make_image_folder(images, 8, SEED)
    results = out / "results.jsonl"
    argv = ["--dir", str(images), "--out", str(out), *JOB_ARGS]
    env = {"KILL9_ORIGINS": str(work / "origins.jsonl"), "KILL9_TAG": f"hold-{os.getpid()}", "KILL9_HOLD_DONE": "3"}
    server = ForkServer(work / "server.log", dict(os.environ))
    try:
        server.start(argv, env, work / "held.log")
        deadline = time.monotonic() + 60
        while done_count(results) < 3:
            assert server.message(timeout=0.05) is None, f"the held job ended:\n{_tail(work / 'held.log')}"
            assert time.monotonic() < deadline, f"the job never reached 3 done:\n{_tail(work / 'held.log')}"
        assert server.message(timeout=3.0) is None, "the held job ended on its own"
        assert done_count(results) == 3
        os.kill(server.running, signal.SIGKILL)
        ended = server.message(timeout=30)
        assert ended is not None and ended["returncode"] == -signal.SIGKILL
        env.pop("KILL9_HOLD_DONE")
        server.start(argv, env, work / "free.log")
        ended = server.message(timeout=RUN_TIMEOUT_S)
        assert ended is not None and ended["returncode"] == 1, _tail(work / "free.log")  # 1: the two bad files
        assert done_count(results) == 8
    finally:
        server.close()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_kill9_anywhere_then_rerun_loses_nothing_sqlite(tmp_path):
    figures = run_kill9_harness(tmp_path)
    print(figures.summary())
    kinds = figures.kinds()
    assert kinds["random"] == RANDOM_KILLS and kinds["append"] == 3 and kinds["png"] == 2 and kinds["sqlite"] == 3
    assert kinds["ckpt"] == 2 and figures.kills_total == RANDOM_KILLS + len(SQLITE_TARGETS)
    assert min(figures.kill_progress) <= 0.1 and max(figures.kill_progress) >= 0.6  # spread over the run
    assert figures.images == GOOD_IMAGES and figures.records_seen > 0 and figures.records_lost == 0


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_kill9_anywhere_then_rerun_loses_nothing_postgres(tmp_path, postgres_db_url):
    """The same with the Postgres checkpointer (a throwaway server, tests/postgres_server.py)."""
    figures = run_kill9_harness(tmp_path, extra_set=["job.checkpoint.kind=postgres"],
                                env={"ARPO_POSTGRES_URL": postgres_db_url}, targeted=POSTGRES_TARGETS)
    print(figures.summary())
    kinds = figures.kinds()
    assert kinds["random"] == RANDOM_KILLS and kinds["append"] == 3 and kinds["png"] == 2 and kinds["ckpt"] == 4
    assert figures.kills_total == RANDOM_KILLS + len(POSTGRES_TARGETS)
    assert min(figures.kill_progress) <= 0.1 and max(figures.kill_progress) >= 0.6
    assert figures.images == GOOD_IMAGES and figures.records_seen > 0 and figures.records_lost == 0
