"""The hot path of `record_incident`: one durable, chained insert with as few round trips as possible.

SQLAlchemy's async layer costs a thread hop (aiosqlite) or ~0.5 ms (asyncpg) per statement, which would
put a five-statement chained insert far below the targets. So this path speaks to the driver directly,
reusing the column types' own bind processors so rows are stored exactly as the ORM would store them:

- SQLite: a dedicated writer thread with its own sqlite3 connection runs the whole transaction
  (BEGIN IMMEDIATE .. COMMIT) in one hop;
- PostgreSQL: the asyncpg connection under a pooled SQLAlchemy connection, five round trips
  (BEGIN, advisory lock, existing row + chain head, insert + head upsert, COMMIT).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.chain import GENESIS, iso, record_hash
from storage.models import Incident

_TABLE = Incident.__table__
_INSERT_COLUMNS = [c.name for c in _TABLE.c if c.name != "id"]


class _Plan:
    """Bind processors for one dialect, so values are stored exactly as SQLAlchemy would store them."""

    def __init__(self, dialect: Dialect) -> None:
        self.processors: dict[str, Callable[[Any], Any] | None] = {
            name: _TABLE.c[name].type.bind_processor(dialect) for name in _INSERT_COLUMNS
        }

    def params(self, values: dict[str, Any]) -> list[Any]:
        out = []
        for name in _INSERT_COLUMNS:
            value = values[name]
            proc = self.processors[name]
            out.append(proc(value) if proc is not None and value is not None else value)
        return out


def _hash_fields(values: dict[str, Any]) -> dict[str, Any]:
    return {k: iso(v) if isinstance(v, datetime) else v for k, v in values.items()}


def _complete(values: dict[str, Any], last_seq: int, prev: str) -> None:
    values["seq"] = last_seq + 1
    values["recorded_at"] = datetime.now(UTC)
    values["prev_hash"] = prev
    values["record_hash"] = record_hash("incident", _hash_fields(values), prev)


# ---- SQLite: a writer thread ----

_SQLITE_SELECT = (
    "SELECT (SELECT id FROM incidents WHERE chat_id = ? AND message_id = ? AND edit_key = ?), "
    "(SELECT last_seq FROM chain_heads WHERE chat_id = ?), "
    "(SELECT last_hash FROM chain_heads WHERE chat_id = ?)"
)
_SQLITE_INSERT = (
    f"INSERT INTO incidents ({', '.join(_INSERT_COLUMNS)}) VALUES ({', '.join('?' for _ in _INSERT_COLUMNS)})"
)
_SQLITE_HEAD = (
    "INSERT INTO chain_heads (chat_id, last_seq, last_hash, updated_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (chat_id) DO UPDATE SET last_seq = excluded.last_seq, last_hash = excluded.last_hash, "
    "updated_at = excluded.updated_at"
)


class SqliteWriter:
    """One sqlite3 connection in one thread, set up like the engine's (WAL, FULL, busy timeout, FKs)."""

    def __init__(self, path: str, dialect: Dialect) -> None:
        self.path = path
        self.plan = _Plan(dialect)
        self.time_proc = _TABLE.c.recorded_at.type.bind_processor(dialect)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qinglang-sqlite-writer")
        self.conn: sqlite3.Connection | None = None
        self.lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        if self.conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            for pragma in (
                "PRAGMA journal_mode=WAL",
                "PRAGMA synchronous=FULL",
                "PRAGMA busy_timeout=30000",
                "PRAGMA foreign_keys=ON",
            ):
                conn.execute(pragma)
            self.conn = conn
        return self.conn

    def _record(self, values: dict[str, Any]) -> tuple[int, bool]:
        conn = self._connect()
        chat_id = values["chat_id"]
        conn.execute("BEGIN IMMEDIATE")
        try:
            existing, last_seq, prev = conn.execute(
                _SQLITE_SELECT, (chat_id, values["message_id"], values["edit_key"], chat_id, chat_id)
            ).fetchone()
            if existing is not None:
                conn.execute("ROLLBACK")
                return existing, False
            _complete(values, last_seq or 0, prev or GENESIS)
            new_id = conn.execute(_SQLITE_INSERT, self.plan.params(values)).lastrowid
            now = self.time_proc(values["recorded_at"]) if self.time_proc else values["recorded_at"]
            conn.execute(_SQLITE_HEAD, (chat_id, values["seq"], values["record_hash"], now))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        assert new_id is not None
        return new_id, True

    async def record(self, values: dict[str, Any]) -> tuple[int, bool]:
        return await asyncio.get_running_loop().run_in_executor(self.executor, self._record, values)

    def close(self) -> None:
        def shut() -> None:
            if self.conn is not None:
                self.conn.close()
                self.conn = None

        with contextlib.suppress(RuntimeError):  # executor already shut down
            self.executor.submit(shut).result(timeout=30)
        self.executor.shutdown(wait=True)


_writers: weakref.WeakKeyDictionary[Any, SqliteWriter] = weakref.WeakKeyDictionary()


def sqlite_writer(engine: AsyncEngine) -> SqliteWriter | None:
    """The writer thread of a file-backed SQLite engine (None for in-memory databases)."""
    writer = _writers.get(engine.sync_engine)
    if writer is None:
        database = make_url(str(engine.url)).database
        if not database or database == ":memory:" or database.startswith("file:"):
            return None
        writer = SqliteWriter(database, engine.dialect)
        _writers[engine.sync_engine] = writer
        weakref.finalize(engine.sync_engine, writer.close)
    return writer


def close_writer(engine: AsyncEngine) -> None:
    writer = _writers.pop(engine.sync_engine, None)
    if writer is not None:
        writer.close()


# ---- PostgreSQL: asyncpg under a pooled connection ----

_PG_SELECT = (
    "SELECT (SELECT id FROM incidents WHERE chat_id = $1 AND message_id = $2 AND edit_key = $3), "
    "h.last_seq, h.last_hash FROM (SELECT 1) AS one LEFT JOIN chain_heads AS h ON h.chat_id = $1"
)
_n = len(_INSERT_COLUMNS)
_PG_INSERT = (
    f"WITH ins AS (INSERT INTO incidents ({', '.join(_INSERT_COLUMNS)}) "
    f"VALUES ({', '.join(f'${i + 1}' for i in range(_n))}) RETURNING id), "
    f"head AS (INSERT INTO chain_heads (chat_id, last_seq, last_hash, updated_at) "
    f"VALUES (${_n + 1}, ${_n + 2}, ${_n + 3}, ${_n + 4}) ON CONFLICT (chat_id) DO UPDATE SET "
    "last_seq = EXCLUDED.last_seq, last_hash = EXCLUDED.last_hash, updated_at = EXCLUDED.updated_at) "
    "SELECT id FROM ins"
)
_pg_plans: dict[int, _Plan] = {}


async def record_postgres(engine: AsyncEngine, values: dict[str, Any]) -> tuple[int, bool]:
    plan = _pg_plans.get(id(engine.dialect))
    if plan is None:
        plan = _pg_plans[id(engine.dialect)] = _Plan(engine.dialect)
    chat_id = values["chat_id"]
    async with engine.connect() as sa_conn:
        fairy = await sa_conn.get_raw_connection()
        conn = fairy.driver_connection
        assert conn is not None
        try:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", chat_id)
                existing, last_seq, prev = await conn.fetchrow(
                    _PG_SELECT, chat_id, values["message_id"], values["edit_key"]
                )
                if existing is not None:
                    return existing, False
                _complete(values, last_seq or 0, prev or GENESIS)
                new_id = await conn.fetchval(
                    _PG_INSERT,
                    *plan.params(values),
                    chat_id,
                    values["seq"],
                    values["record_hash"],
                    values["recorded_at"],
                )
        except (OSError, ConnectionError) as exc:
            fairy.invalidate(exc)
            raise
        except Exception as exc:
            if type(exc).__name__ in ("ConnectionDoesNotExistError", "InterfaceError"):
                fairy.invalidate(exc)
            raise
    return new_id, True
