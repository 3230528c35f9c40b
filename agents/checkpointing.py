"""Open the LangGraph checkpointer that makes optimisations durable and resumable.

SQLite (default): a file in the output folder, opened in WAL mode with a busy timeout,
because several writers may share it (many threads of one driver, or a second driver
on the same folder) and a writer must wait for the lock rather than fail.
Postgres: for several drivers on several machines; the connection URL is read from the
environment variable the config names (it never appears in configs or logs), and the
``langgraph-checkpoint-postgres`` package is imported only when asked for.
"""
from __future__ import annotations

import os
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

from agents.config import CheckpointConfig

#: How long a SQLite writer waits for the lock before giving up.
SQLITE_BUSY_TIMEOUT_S = 60.0


@asynccontextmanager
async def open_checkpointer(cfg: CheckpointConfig, out_dir: str | os.PathLike) -> AsyncIterator[Any]:
    """``async with open_checkpointer(cfg, out_dir) as saver:`` — a ready (set-up) async saver."""
    if cfg.kind == "sqlite":
        async with open_sqlite_saver(Path(out_dir) / cfg.sqlite_file) as saver:
            yield saver
    else:
        async with open_postgres_saver(cfg) as saver:
            yield saver


@asynccontextmanager
async def open_sqlite_saver(path: str | os.PathLike, busy_timeout_s: float = SQLITE_BUSY_TIMEOUT_S) -> AsyncIterator[Any]:
    import aiosqlite
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = await aiosqlite.connect(str(path), timeout=busy_timeout_s)
    try:
        await conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        async with conn.execute("PRAGMA journal_mode = WAL") as cur:
            mode = (await cur.fetchone())[0]
        if str(mode).lower() != "wal":
            raise RuntimeError(f"{path}: SQLite refused WAL journal mode (got {mode!r}); is it on a network filesystem?")
        # WAL + NORMAL survives an application crash; a power cut may lose the last node, which is redone.
        await conn.execute("PRAGMA synchronous = NORMAL")
        saver = AsyncSqliteSaver(conn)
        await saver.setup()
        yield saver
    finally:
        await conn.close()


@asynccontextmanager
async def open_postgres_saver(cfg: CheckpointConfig) -> AsyncIterator[Any]:
    url = os.environ.get(cfg.postgres_url_env, "").strip()
    if not url:
        raise RuntimeError(f"checkpoint kind 'postgres' needs the connection URL in the environment variable "
                           f"{cfg.postgres_url_env}, which is not set")
    try:
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    except ImportError as exc:
        raise ImportError("checkpoint kind 'postgres' needs the langgraph-checkpoint-postgres package: "
                          "pip install 'expectdiff[postgres]'") from exc
    async with AsyncPostgresSaver.from_conn_string(url) as saver:
        await saver.setup()
        yield saver
