"""The checkpointer factory: SQLite in WAL mode with a busy timeout, Postgres by config; both
read checkpoints strictly (a tampered database cannot run code) and keep secrets out of errors."""
import asyncio
import datetime
import json
import pickle
import sqlite3
import sys
import traceback
from pathlib import Path

import ormsgpack
import pytest
from pydantic import ValidationError

from agents.api import optimise
from agents.checkpointing import SQLITE_BUSY_TIMEOUT_S, StrictJsonSerializer, UnsafeCheckpointError, open_checkpointer
from agents.config import AgentConfig, CheckpointConfig
from agents.graph import NODE_NAMES, build_graph, compile_graph, thread_config
from agents.image_id import content_id
from agents.state import initial_state
from tests.agents import test_resume as resume
from tests.agents.doubles import World, call_counts, fragment_sum, make_roles, write_reference
from tests.postgres_server import import_or_skip


async def test_sqlite_file_in_the_output_folder_in_wal_mode(tmp_path):
    out = tmp_path / "out" / "nested"
    async with open_checkpointer(CheckpointConfig(sqlite_file="ck.sqlite"), out) as saver:
        async with saver.conn.execute("PRAGMA journal_mode") as cur:
            assert (await cur.fetchone())[0].lower() == "wal"
        async with saver.conn.execute("PRAGMA busy_timeout") as cur:
            assert (await cur.fetchone())[0] == int(SQLITE_BUSY_TIMEOUT_S * 1000)
    assert (out / "ck.sqlite").is_file()


async def test_two_drivers_write_the_same_file_at_once(tmp_path):
    """Two connections (as two driver processes would have) run different images concurrently."""
    cfg = AgentConfig(framework="vanilla", max_steps=2)

    async def driver(i):
        w = World(fragment_sum({"blue eyes": .05, "bow tie": .04}))
        w.reference[0, 0] = i
        d = tmp_path / f"in{i}"
        d.mkdir()
        ref = write_reference(w, d)
        roles = make_roles(w, {None: ["[blue eyes]", "[bow tie]"]})
        async with open_checkpointer(CheckpointConfig(), tmp_path) as saver:
            graph = compile_graph(build_graph(roles, cfg, 77), saver)
            return await optimise(content_id(ref), ref, tmp_path / str(i), roles, cfg, 77, graph=graph)

    results = await asyncio.gather(driver(1), driver(2))
    assert [r.status for r in results] == ["done", "done"]
    assert [r.stop_reason for r in results] == ["max_steps", "max_steps"]


async def test_many_connections_opening_one_new_file_at_once_all_open(tmp_path):
    """Opening a new file from several connections at once races for the exclusive lock that switching to
    WAL and creating the tables need; SQLite answers the loser "database is locked" without waiting (the
    busy timeout does not cover it), which once failed CI. Every opener must get through."""

    async def opener(path):
        async with open_checkpointer(CheckpointConfig(sqlite_file=path.name), path.parent) as saver:
            async with saver.conn.execute("PRAGMA journal_mode") as cur:
                return (await cur.fetchone())[0].lower()

    for round_ in range(25):
        path = tmp_path / f"round{round_}.sqlite"
        assert await asyncio.gather(*(opener(path) for _ in range(6))) == ["wal"] * 6


async def test_postgres_needs_the_url_variable(monkeypatch, tmp_path):
    monkeypatch.delenv("ARPO_TEST_PG_URL", raising=False)
    cfg = CheckpointConfig(kind="postgres", postgres_url_env="ARPO_TEST_PG_URL")
    with pytest.raises(RuntimeError, match="ARPO_TEST_PG_URL.*not set"):
        async with open_checkpointer(cfg, tmp_path):
            pass


async def test_postgres_without_the_package_says_what_to_install(monkeypatch, tmp_path):
    secret = "postgresql://user:hunter2@db.example/arpo"
    monkeypatch.setenv("ARPO_TEST_PG_URL", secret)
    monkeypatch.setitem(sys.modules, "langgraph.checkpoint.postgres.aio", None)  # import fails
    cfg = CheckpointConfig(kind="postgres", postgres_url_env="ARPO_TEST_PG_URL")
    with pytest.raises(ImportError, match=r"langgraph-checkpoint-postgres.*expectdiff\[postgres\]") as info:
        async with open_checkpointer(cfg, tmp_path):
            pass
    assert "hunter2" not in str(info.value)


# --------------------------------------------------------------------------- sqlite_file stays in the output folder

@pytest.mark.parametrize("value, cause", [
    ("/tmp/ck.sqlite", "absolute"),
    ("~/ck.sqlite", "home-relative"),
    ("C:\\ck.sqlite", "absolute"),
    ("../ck.sqlite", "'..' component"),
    ("runs/../../ck.sqlite", "'..' component"),
    ("runs\\..\\..\\ck.sqlite", "'..' component"),
    ("", "is empty"),
    ("   ", "is empty"),
    ("runs/", "names a folder"),
    (".", "names a folder"),
])
def test_sqlite_file_must_stay_inside_the_output_folder(value, cause):
    with pytest.raises(ValidationError) as info:
        CheckpointConfig(sqlite_file=value)
    (error,) = info.value.errors()
    assert error["loc"] == ("sqlite_file",)
    assert cause in error["msg"] and "relative to the output folder" in error["msg"]


async def test_sqlite_file_may_be_in_a_subfolder_of_the_output_folder(tmp_path):
    async with open_checkpointer(CheckpointConfig(sqlite_file="state/ck.sqlite"), tmp_path / "out"):
        pass
    assert (tmp_path / "out" / "state" / "ck.sqlite").is_file()


# --------------------------------------------------------------------------- the strict serializer

def test_serializer_round_trips_plain_state_and_stores_errors_as_text():
    serde = StrictJsonSerializer()
    state = {"image_id": "abc", "content": ["blue eyes"], "added": [{"text": "bow tie", "part": "style"}],
             "best_clip_i": 0.5, "iteration": 3, "stop_reason": None, "done": True, "prompt": "café ☕"}
    kind, data = serde.dumps_typed(state)
    assert kind == "json"
    assert serde.loads_typed((kind, data)) == state
    # a failed node's error (LangGraph's ERROR write) is kept as its repr, as LangGraph's own serializer does
    assert serde.loads_typed(serde.dumps_typed(ValueError("bad node"))) == "ValueError('bad node')"
    with pytest.raises(TypeError, match="plain JSON data"):
        serde.dumps_typed({"when": datetime.date(2026, 1, 1)})


def test_serializer_reads_checkpoints_the_default_serializer_wrote_without_extension_types():
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

    old = JsonPlusSerializer()
    value = {"history": [{"iteration": 0, "clip_i": 0.25, "content": ["a cat"]}], "channel_versions": {"x": "00.1"}}
    assert StrictJsonSerializer().loads_typed(old.dumps_typed(value)) == value
    assert StrictJsonSerializer().loads_typed(old.dumps_typed(None)) is None


def test_serializer_refuses_what_it_would_have_to_build_or_unpickle(tmp_path):
    flag = tmp_path / "ran"
    serde = StrictJsonSerializer()
    with pytest.raises(UnsafeCheckpointError, match=r"extension type.*_planted.*tampered"):
        serde.loads_typed(("msgpack", _crafted_msgpack(flag)))
    with pytest.raises(UnsafeCheckpointError, match="stored as 'pickle'"):
        serde.loads_typed(("pickle", pickle.dumps(_Planted(str(flag)))))
    assert not flag.exists()


# --------------------------------------------------------------------------- both backends, real graphs

PG_ENV = "ARPO_TEST_PG_URL"


def _planted(path):
    """What a tampered checkpoint asks the decoder to call: proof that code ran."""
    Path(path).write_text("code from the checkpoint database ran")
    return "planted"


class _Planted:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (_planted, (self.path,))


def _crafted(flag: Path) -> ormsgpack.Ext:
    """What LangGraph's default serializer decodes by importing this module and calling ``_planted(flag)``
    (extension type 0: module, callable, its one argument)."""
    return ormsgpack.Ext(0, ormsgpack.packb([__name__, "_planted", str(flag)]))


def _crafted_msgpack(flag: Path) -> bytes:
    return ormsgpack.packb(_crafted(flag))


def _tamper_sqlite(out: Path, thread: str, flag: Path) -> None:
    """Replace a value in the thread's newest checkpoint by a crafted one, as someone with write access could."""
    db = sqlite3.connect(out / "checkpoints.sqlite")
    with db:
        rowid, kind, blob = db.execute("SELECT rowid, type, checkpoint FROM checkpoints WHERE thread_id = ? "
                                       "ORDER BY checkpoint_id DESC LIMIT 1", (thread,)).fetchone()
        checkpoint = json.loads(blob) if kind == "json" else ormsgpack.unpackb(blob, option=ormsgpack.OPT_NON_STR_KEYS)
        checkpoint["channel_values"]["content"] = _crafted(flag)
        db.execute("UPDATE checkpoints SET type = 'msgpack', checkpoint = ? WHERE rowid = ?",
                   (ormsgpack.packb(checkpoint, option=ormsgpack.OPT_NON_STR_KEYS), rowid))
    db.close()


def _tamper_postgres(url: str, thread: str, flag: Path) -> None:
    psycopg = import_or_skip("psycopg")
    with psycopg.connect(url, autocommit=True) as conn:  # list-valued channels are rows of checkpoint_blobs
        n = conn.execute("UPDATE checkpoint_blobs SET type = 'msgpack', blob = %s WHERE thread_id = %s AND channel = 'content'",
                         (_crafted_msgpack(flag), thread)).rowcount
    assert n > 0


@pytest.fixture
def postgres_ckpt(postgres_db_url, monkeypatch):
    """Checkpoint config of kind postgres, its URL (a fresh database on a throwaway server) in $ARPO_TEST_PG_URL."""
    import_or_skip("langgraph.checkpoint.postgres.aio")
    monkeypatch.setenv(PG_ENV, postgres_db_url)
    return CheckpointConfig(kind="postgres", postgres_url_env=PG_ENV)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request):
    """(checkpoint config, tamper(out, thread, flag)) for each kind."""
    if request.param == "sqlite":
        return CheckpointConfig(), _tamper_sqlite
    ckpt = request.getfixturevalue("postgres_ckpt")
    url = request.getfixturevalue("postgres_db_url")
    return ckpt, lambda out, thread, flag: _tamper_postgres(url, thread, flag)


async def _interrupted(ckpt, out, ref, roles, before="describe"):
    """Start the image's thread and stop it before ``before``, as a killed driver would leave it."""
    async with open_checkpointer(ckpt, out) as saver:
        graph = compile_graph(build_graph(roles, resume.CFG, 77), saver)
        conf = thread_config(content_id(ref), resume.CFG)
        await graph.ainvoke(initial_state(content_id(ref), str(ref), str(out / "work")), conf,
                            interrupt_before=[before], durability="sync")
        assert (await graph.aget_state(conf)).next == (before,)


async def test_postgres_runs_an_image_to_the_end_and_resumes_an_interrupted_one(tmp_path, postgres_ckpt):
    """The same for SQLite: tests/agents/test_resume.py."""
    ckpt = postgres_ckpt
    w = resume.world()
    ref = write_reference(w, tmp_path)
    straight_roles = make_roles(w, resume.script())
    async with open_checkpointer(ckpt, tmp_path) as saver:
        graph = compile_graph(build_graph(straight_roles, resume.CFG, 77), saver)
        straight = await optimise(content_id(ref), ref, tmp_path / "work", straight_roles, resume.CFG, 77,
                                  graph=graph, thread_id="uninterrupted")
    assert straight.status == "done" and len(straight.iterations) == 3

    roles = make_roles(w, resume.script())
    await _interrupted(ckpt, tmp_path, ref, roles)
    async with open_checkpointer(ckpt, tmp_path) as saver:  # a new "process" resumes the thread
        graph = compile_graph(build_graph(roles, resume.CFG, 77), saver)
        resumed = await optimise(content_id(ref), ref, tmp_path / "work", roles, resume.CFG, 77, graph=graph)
        history = [s async for s in graph.aget_state_history(thread_config(content_id(ref), resume.CFG))]
    assert resume.summary(resumed) == resume.summary(straight)
    assert call_counts(roles) == call_counts(straight_roles)  # nothing before the interruption ran twice
    assert not history[0].next and len(history[0].values["history"]) == len(resumed.iterations)
    # every checkpoint of the thread, from its input on, was stored and reads back
    assert [s.next for s in reversed(history)] == [("__start__",), *[(n,) for n in NODE_NAMES],
                                                   *[(n,) for n in NODE_NAMES[1:]] * 2, ()]


async def test_a_tampered_checkpoint_is_refused_and_runs_nothing(tmp_path, backend):
    ckpt, tamper = backend
    w = resume.world()
    ref = write_reference(w, tmp_path)
    roles = make_roles(w, resume.script())
    await _interrupted(ckpt, tmp_path, ref, roles)
    flag = tmp_path / "planted.txt"
    tamper(tmp_path, content_id(ref), flag)

    try:
        async with open_checkpointer(ckpt, tmp_path) as saver:  # the resume
            graph = compile_graph(build_graph(roles, resume.CFG, 77), saver)
            with pytest.raises(UnsafeCheckpointError) as info:
                await optimise(content_id(ref), ref, tmp_path / "work", roles, resume.CFG, 77, graph=graph)
            with pytest.raises(UnsafeCheckpointError, match=content_id(ref)):
                [s async for s in graph.aget_state_history(thread_config(content_id(ref), resume.CFG))]
    finally:  # checked even when no error was raised: the worse failure
        assert not flag.exists(), "decoding the checkpoint ran code named in it"
    message = str(info.value)
    assert f"checkpoint thread {content_id(ref)!r}" in message
    assert f"{__name__}._planted" in message and "tampered" in message


# --------------------------------------------------------------------------- no password in connection errors

@pytest.mark.parametrize("url, secret", [
    # libpq quotes the whole URL in this error
    ("postgresql://arpo:Hunter2-secret@[::1/arpo", "Hunter2-secret"),
    # ... and the password's text in this one
    ("postgresql://arpo:Hunter2%ZZsecret@/arpo?host=/nonexistent", "Hunter2%ZZsecret"),
    ("postgresql://arpo@/arpo?host=/nonexistent&password=Hunter2-secret&bogus=1", "Hunter2-secret"),
])
async def test_a_malformed_postgres_url_is_reported_without_its_password(monkeypatch, tmp_path, url, secret):
    import_or_skip("langgraph.checkpoint.postgres.aio")
    monkeypatch.setenv(PG_ENV, url)
    with pytest.raises(Exception) as info:
        async with open_checkpointer(CheckpointConfig(kind="postgres", postgres_url_env=PG_ENV), tmp_path):
            pass
    error = info.value
    texts = ["".join(traceback.format_exception(error))]
    while error is not None:  # every exception chained to it, shown or not
        texts += [str(error), repr(error), repr(error.args)]
        error = error.__cause__ or error.__context__
    for text in texts:
        assert secret not in text and "Hunter2" not in text
    assert PG_ENV in str(info.value) and "postgresql://arpo" in str(info.value) and "***" in str(info.value)
