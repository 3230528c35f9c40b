"""The checkpointer factory: SQLite in WAL mode with a busy timeout, Postgres by config."""
import asyncio
import sys

import pytest

from agents.api import optimise
from agents.checkpointing import SQLITE_BUSY_TIMEOUT_S, open_checkpointer
from agents.config import AgentConfig, CheckpointConfig
from agents.graph import build_graph, compile_graph
from agents.image_id import content_id
from tests.agents.doubles import World, fragment_sum, make_roles, write_reference


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
