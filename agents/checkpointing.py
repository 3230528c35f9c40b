"""Open the LangGraph checkpointer that makes optimisations durable and resumable.

SQLite (default): a file in the output folder, opened in WAL mode with a busy timeout,
because several writers may share it (many threads of one driver, or a second driver
on the same folder) and a writer must wait for the lock rather than fail.
Postgres: for several drivers on several machines; the connection URL is read from the
environment variable the config names (it never appears in configs or logs, and its
password is scrubbed from connection errors), and the ``langgraph-checkpoint-postgres``
package is imported only when asked for.

Both savers store values with :class:`StrictJsonSerializer`, never LangGraph's default
``JsonPlusSerializer``: that one rebuilds objects by importing and calling whatever
``module.function`` a stored value names, so anyone able to write the checkpoint database
could run code in the driver when it resumes. The graph state is plain JSON data
(agents/state.py), so nothing legitimate needs more.
"""
from __future__ import annotations

import asyncio
import functools
import json
import os
import re
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator
from urllib.parse import unquote

import ormsgpack

from agents.batch.errors import SetupError
from agents.config import CheckpointConfig

#: How long a SQLite writer waits for the lock before giving up.
SQLITE_BUSY_TIMEOUT_S = 60.0


class UnsafeCheckpointError(RuntimeError):
    """A stored checkpoint value is not plain data: a tampered or foreign checkpoint database."""


class StrictJsonSerializer:
    """LangGraph serializer (``serde=``) for plain JSON data that never imports anything on load.

    Writes ``("json", UTF-8 JSON)``. Besides the graph state LangGraph stores its own
    bookkeeping (the checkpoint dict: ids, timestamps, channel versions as strings,
    versions seen) and, for a failed node, the exception; all of it is plain data except
    the exception, which is stored as its ``repr`` (as LangGraph's own serializer does).
    JSON turns tuples into lists and non-string dict keys into strings; the state has neither.

    Reads ``"json"`` (without revivers), and ``"msgpack"`` / ``"null"`` as the default
    serializer wrote them, so checkpoints made before this serializer still resume — but
    msgpack only without extension types, which are how that serializer names the callable
    that rebuilds an object. Anything else raises :class:`UnsafeCheckpointError`.
    """

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        if isinstance(obj, BaseException):  # LangGraph records a failed node's error; its text is enough
            obj = repr(obj)
        try:
            return "json", json.dumps(obj, ensure_ascii=False).encode()
        except (TypeError, ValueError) as exc:
            raise TypeError(f"cannot checkpoint this {type(obj).__name__}: {exc}; the graph state must be plain "
                            "JSON data (str, int, float, bool, None, lists, dicts; see agents/state.py)") from None

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        type_, payload = data
        if type_ == "json":
            return json.loads(payload)
        if type_ == "null":
            return None
        if type_ == "msgpack":
            return _plain_msgpack(payload)
        raise UnsafeCheckpointError(f"refused a checkpoint value stored as {type_!r}: only plain JSON data is read. "
                                    + _TAMPERED)


_TAMPERED = ("The checkpoint database may have been tampered with; delete this thread's checkpoints "
             "(or restore the database from a trusted copy) and run again.")


def _plain_msgpack(payload: bytes) -> Any:
    refused: list[str] = []

    def refuse(code: int, data: bytes) -> None:  # ormsgpack replaces an exception raised here by a vague one
        refused.append(_ext_name(code, data))

    value = ormsgpack.unpackb(payload, ext_hook=refuse, option=ormsgpack.OPT_NON_STR_KEYS)
    if refused:
        raise UnsafeCheckpointError(f"refused a checkpoint value holding msgpack extension type(s) {', '.join(refused)}: "
                                    "LangGraph's default serializer would import and call what they name, and only "
                                    f"plain data is read. {_TAMPERED}")
    return value


def _ext_name(code: int, data: bytes) -> str:
    """``'0 (os.system)'``: the extension code and, when readable, the callable it names (for the error only)."""
    try:
        head = ormsgpack.unpackb(data, ext_hook=lambda c, d: None)
        if isinstance(head, list) and len(head) >= 2 and all(isinstance(x, str) for x in head[:2]):
            return f"{code} ({head[0]}.{head[1]})"
    except Exception:  # noqa: BLE001 - a name for the message only; the value is refused either way
        pass
    return str(code)


@functools.cache
def _naming_threads(saver_cls: type) -> type:
    """``saver_cls`` whose refusals name the thread (the serializer only sees type and bytes)."""

    def named(config: Any, exc: UnsafeCheckpointError) -> UnsafeCheckpointError:
        thread = ((config or {}).get("configurable") or {}).get("thread_id", "?")
        return UnsafeCheckpointError(f"checkpoint thread {thread!r}: {exc}")

    class Saver(saver_cls):
        def with_allowlist(self, extra_allowlist):
            # LangGraph's msgpack allow-list (LANGGRAPH_STRICT_MSGPACK) has nothing to narrow here: the
            # serializer builds no objects; without this LangGraph would warn that it is not enforced.
            return self

        async def aget_tuple(self, config):
            try:
                return await super().aget_tuple(config)
            except UnsafeCheckpointError as exc:
                raise named(config, exc) from None

        async def alist(self, config, **kwargs):
            try:
                async for item in super().alist(config, **kwargs):
                    yield item
            except UnsafeCheckpointError as exc:
                raise named(config, exc) from None

    Saver.__name__ = Saver.__qualname__ = f"Strict{saver_cls.__name__}"
    return Saver


@asynccontextmanager
async def open_checkpointer(cfg: CheckpointConfig, out_dir: str | os.PathLike) -> AsyncIterator[Any]:
    """``async with open_checkpointer(cfg, out_dir) as saver:`` — a ready (set-up) async saver."""
    if cfg.kind == "sqlite":
        async with open_sqlite_saver(Path(out_dir) / cfg.sqlite_file) as saver:
            yield saver
    else:
        async with open_postgres_saver(cfg) as saver:
            yield saver


class CheckpointUnavailable(SetupError):
    """The checkpoint database cannot be opened; the message names it (never a password) and the cause.
    A setup error: every entry point reports it as such (exit 2) before any model loads."""


def check_checkpointer(cfg: CheckpointConfig, out_dir: str | os.PathLike) -> None:
    """Open the checkpoint database once and close it, within ``cfg.connect_timeout_s`` (plus its set-up):
    start-up runs this before any model loads, so a wrong URL or an unreachable server is reported in
    seconds, not after minutes of loading. Raises :class:`CheckpointUnavailable`."""

    async def probe() -> None:
        async with open_checkpointer(cfg, out_dir):
            pass

    where = (f"the Postgres database of {cfg.postgres_url_env}" if cfg.kind == "postgres"
             else f"the SQLite file {Path(out_dir) / cfg.sqlite_file}")
    try:
        asyncio.run(asyncio.wait_for(probe(), cfg.connect_timeout_s + 30))
    except asyncio.TimeoutError:
        raise CheckpointUnavailable(f"cannot open the checkpoint database ({where}): no answer within "
                                    f"{cfg.connect_timeout_s + 30:g} s") from None
    except (RuntimeError, ImportError, OSError) as exc:
        raise CheckpointUnavailable(f"cannot open the checkpoint database ({where}): {exc}") from None
    except Exception as exc:  # noqa: BLE001 - e.g. sqlite3.OperationalError; the message is what matters
        raise CheckpointUnavailable(f"cannot open the checkpoint database ({where}): {type(exc).__name__}: {exc}") from None


async def _retry_while_locked(step, timeout_s: float, path: Path, conn: Any):
    """Run ``step()`` again while SQLite answers "database is locked", for up to ``timeout_s``.

    The busy timeout does not cover every case: two connections opening the same new file at once both
    hold a shared lock and both need an exclusive one to switch to WAL (or to create the tables), and SQLite
    answers one of them "locked" at once rather than wait into a deadlock. Retrying after the other has
    finished is the documented remedy; any other error, or a lock held past the timeout, is raised."""
    import random
    import sqlite3

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    delay = 0.01
    while True:
        try:
            return await step()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if loop.time() + delay > deadline:
                raise sqlite3.OperationalError(f"{path}: {exc} (still after {timeout_s:g} s)") from exc
            if conn.in_transaction:  # a script stopped half-way must not keep its locks while we wait
                await conn.rollback()
        await asyncio.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 2, 0.5)


@asynccontextmanager
async def open_sqlite_saver(path: str | os.PathLike, busy_timeout_s: float = SQLITE_BUSY_TIMEOUT_S) -> AsyncIterator[Any]:
    import aiosqlite
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = await aiosqlite.connect(str(path), timeout=busy_timeout_s)
    try:
        await conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")

        async def wal_mode() -> str:
            async with conn.execute("PRAGMA journal_mode = WAL") as cur:
                return (await cur.fetchone())[0]

        mode = await _retry_while_locked(wal_mode, busy_timeout_s, path, conn)
        if str(mode).lower() != "wal":
            raise RuntimeError(f"{path}: SQLite refused WAL journal mode (got {mode!r}); is it on a network filesystem?")
        # WAL + NORMAL survives an application crash; a power cut may lose the last node, which is redone.
        await conn.execute("PRAGMA synchronous = NORMAL")
        saver = _naming_threads(AsyncSqliteSaver)(conn, serde=StrictJsonSerializer())
        await _retry_while_locked(saver.setup, busy_timeout_s, path, conn)
        yield saver
    finally:
        await conn.close()


def redact_password(text: str, url: str) -> str:
    """``text`` with each password in the connection string ``url`` replaced by ``***``."""
    # user:PASSWORD@host — greedy to the last '@', so a malformed password holding '@' or '/' is covered whole
    found = re.findall(r"://[^:/?#@]*:(.*)@", url)
    # ?password=... in a URL, or password=... in a key=value connection string
    found += [v.strip("'") for v in re.findall(r"password\s*=\s*('[^']*'|[^\s&]+)", url, flags=re.I)]
    for secret in sorted({s for p in found for s in (p, unquote(p)) if s}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


@asynccontextmanager
async def open_postgres_saver(cfg: CheckpointConfig) -> AsyncIterator[Any]:
    url = os.environ.get(cfg.postgres_url_env, "").strip()
    if not url:
        raise RuntimeError(f"checkpoint kind 'postgres' needs the connection URL in the environment variable "
                           f"{cfg.postgres_url_env}, which is not set")
    try:
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
        from psycopg import AsyncConnection
        from psycopg.rows import dict_row
    except ImportError as exc:
        raise ImportError("checkpoint kind 'postgres' needs the langgraph-checkpoint-postgres package: "
                          "pip install 'expectdiff[postgres]'") from exc
    failure = None
    try:
        # The connection AsyncPostgresSaver.from_conn_string makes, made here so its errors can be scrubbed.
        conn = await asyncio.wait_for(
            AsyncConnection.connect(url, autocommit=True, prepare_threshold=0, row_factory=dict_row,
                                    connect_timeout=max(1, round(cfg.connect_timeout_s))),
            cfg.connect_timeout_s + 1)
    except asyncio.TimeoutError:
        failure = f"no answer within {cfg.connect_timeout_s:g} s (job.checkpoint.connect_timeout_s)"
    except Exception as exc:  # noqa: BLE001 - libpq echoes the URL, password included, in some errors
        failure = f"{type(exc).__name__}: {redact_password(str(exc).strip(), url)}"
    if failure is not None:  # raised outside the except block, so the original error is not chained to it
        raise RuntimeError(f"cannot connect to the Postgres checkpoint database {redact_password(url, url)} "
                           f"(from the environment variable {cfg.postgres_url_env}): {failure}")
    async with conn:
        saver = _naming_threads(AsyncPostgresSaver)(conn=conn, serde=StrictJsonSerializer())
        await saver.setup()
        yield saver
