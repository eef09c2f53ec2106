"""The hot path of `record_incident`: one durable, chained insert with as few round trips as possible.

SQLAlchemy's async layer costs a thread hop (aiosqlite) or ~0.5 ms (asyncpg) per statement, which would
put a five-statement chained insert far below the targets. So this path speaks to the driver directly,
reusing the column types' own bind processors so rows are stored exactly as the ORM would store them:

- SQLite: a dedicated writer thread with its own sqlite3 connection runs the whole transaction
  (BEGIN IMMEDIATE .. COMMIT) in one hop;
- PostgreSQL: the asyncpg connection under a pooled SQLAlchemy connection, one statement and one round
  trip per incident in the common case (see below).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import weakref
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.chain import GENESIS, record_hash
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


def _complete(values: dict[str, Any], last_seq: int, prev: str) -> None:
    values["seq"] = last_seq + 1
    values["recorded_at"] = datetime.now(UTC)
    values["prev_hash"] = prev
    # The values as they are: record_hash writes a datetime as iso() does (no text round trip first).
    values["record_hash"] = record_hash("incident", values, prev)


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


SQLITE_BUSY_MS = 30_000  # the engine's busy timeout (storage/engine.py): how long a writer waits for a lock


class SqliteWriter:
    """One sqlite3 connection in one thread, set up like the engine's (WAL, FULL, busy timeout, FKs).

    A call may ask for a shorter wait for another writer's lock (`lock_timeout`, seconds): the bot's
    evidence path would rather spool after a second than stall for the full busy timeout.
    """

    def __init__(self, path: str, dialect: Dialect) -> None:
        self.path = path
        self.plan = _Plan(dialect)
        self.time_proc = _TABLE.c.recorded_at.type.bind_processor(dialect)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qinglang-sqlite-writer")
        self.conn: sqlite3.Connection | None = None
        self.lock = threading.Lock()
        self.busy_ms = SQLITE_BUSY_MS

    def _connect(self) -> sqlite3.Connection:
        if self.conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            for pragma in (
                "PRAGMA journal_mode=WAL",
                "PRAGMA synchronous=FULL",
                f"PRAGMA busy_timeout={SQLITE_BUSY_MS}",
                "PRAGMA foreign_keys=ON",
            ):
                conn.execute(pragma)
            self.conn = conn
            self.busy_ms = SQLITE_BUSY_MS
        return self.conn

    def _connect_waiting(self, lock_timeout: float | None) -> sqlite3.Connection:
        """The connection, with its busy timeout set for this call (None: the engine's 30 s)."""
        conn = self._connect()
        ms = SQLITE_BUSY_MS if lock_timeout is None else max(0, round(lock_timeout * 1000))
        if ms != self.busy_ms:
            conn.execute(f"PRAGMA busy_timeout={ms}")
            self.busy_ms = ms
        return conn

    def _probe(self, lock_timeout: float | None) -> None:
        conn = self._connect_waiting(lock_timeout)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")

    async def probe(self, lock_timeout: float | None) -> None:
        """Raise sqlite3.OperationalError ("database is locked") if the write lock is not free within
        `lock_timeout` seconds."""
        await asyncio.get_running_loop().run_in_executor(self.executor, self._probe, lock_timeout)

    @staticmethod
    def _insert(
        conn: sqlite3.Connection, values: dict[str, Any], plan: _Plan, time_proc: Any
    ) -> tuple[int, bool]:
        chat_id = values["chat_id"]
        existing, last_seq, prev = conn.execute(
            _SQLITE_SELECT, (chat_id, values["message_id"], values["edit_key"], chat_id, chat_id)
        ).fetchone()
        if existing is not None:
            return existing, False
        _complete(values, last_seq or 0, prev or GENESIS)
        new_id = conn.execute(_SQLITE_INSERT, plan.params(values)).lastrowid
        now = time_proc(values["recorded_at"]) if time_proc else values["recorded_at"]
        conn.execute(_SQLITE_HEAD, (chat_id, values["seq"], values["record_hash"], now))
        assert new_id is not None
        return new_id, True

    def _record_many(
        self, many: list[dict[str, Any]], lock_timeout: float | None = None
    ) -> list[tuple[int, bool]]:
        conn = self._connect_waiting(lock_timeout)
        conn.execute("BEGIN IMMEDIATE")
        try:
            out = [self._insert(conn, values, self.plan, self.time_proc) for values in many]
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return out

    def _record(self, values: dict[str, Any], lock_timeout: float | None = None) -> tuple[int, bool]:
        return self._record_many([values], lock_timeout)[0]

    async def record(self, values: dict[str, Any], lock_timeout: float | None = None) -> tuple[int, bool]:
        return await asyncio.get_running_loop().run_in_executor(
            self.executor, self._record, values, lock_timeout
        )

    async def record_many(
        self, many: list[dict[str, Any]], lock_timeout: float | None = None
    ) -> list[tuple[int, bool]]:
        """Several incidents in one transaction: one commit (one fsync) for all of them."""
        return await asyncio.get_running_loop().run_in_executor(
            self.executor, self._record_many, many, lock_timeout
        )

    def close(self) -> None:
        def shut() -> None:
            if self.conn is not None:
                self.conn.close()
                self.conn = None

        with contextlib.suppress(RuntimeError):  # executor already shut down
            self.executor.submit(shut).result(timeout=30)
        self.executor.shutdown(wait=True)

    def abandon(self) -> None:
        """Garbage-collection clean-up of an engine that was never closed: stop the thread, never block.

        A finalizer can run inside another executor's `submit`, which holds concurrent.futures' global
        shutdown lock; submitting from here would deadlock, so the connection is left to its own finalizer.
        """
        self.executor.shutdown(wait=False)


_writers: weakref.WeakKeyDictionary[Any, SqliteWriter] = weakref.WeakKeyDictionary()


def sqlite_writer(engine: AsyncEngine) -> SqliteWriter | None:
    """The writer thread of a file-backed SQLite engine (None for in-memory databases and for any
    other database: a PostgreSQL URL's database name is no file to open)."""
    if engine.dialect.name != "sqlite":
        return None
    writer = _writers.get(engine.sync_engine)
    if writer is None:
        database = make_url(str(engine.url)).database
        if not database or database == ":memory:" or database.startswith("file:"):
            return None
        writer = SqliteWriter(database, engine.dialect)
        _writers[engine.sync_engine] = writer
        weakref.finalize(engine.sync_engine, writer.abandon)
    return writer


def close_writer(engine: AsyncEngine) -> None:
    writer = _writers.pop(engine.sync_engine, None)
    if writer is not None:
        writer.close()


# ---- PostgreSQL: asyncpg under a pooled connection ----
#
# One statement, one round trip, in an implicit transaction (so its reply comes after the durable
# commit): take the chat's advisory lock (the same lock `append_event` and purges hold), skip if the
# message is already recorded, advance the chain head only if it is still where we think it is, and
# insert the incident only if the head moved. The head we start from is the one this engine wrote last
# (or read once); if another writer moved it, nothing is written and we read the head again and retry.
# Why this is safe: every append to a chain moves its head under the advisory lock, and an UPDATE in
# READ COMMITTED rechecks its WHERE against the newest committed row, so a stale head never forks.

_n = len(_INSERT_COLUMNS)


def _pg_casts() -> list[str]:
    from sqlalchemy.dialects import postgresql

    dialect = postgresql.dialect()
    out = []
    for name in _INSERT_COLUMNS:
        col_type = _TABLE.c[name].type
        out.append(getattr(col_type, "impl", col_type).compile(dialect=dialect))
    return out


_PG_VALUES = ", ".join(f"${i + 1}::{cast}" for i, cast in enumerate(_pg_casts()))
# $1.. = incident columns (chat_id, message_id, edit_key among them); then the head's old and new values
_P_CHAT = _INSERT_COLUMNS.index("chat_id") + 1
_P_MSG = _INSERT_COLUMNS.index("message_id") + 1
_P_KEY = _INSERT_COLUMNS.index("edit_key") + 1
_P_SEQ = _INSERT_COLUMNS.index("seq") + 1
_P_HASH = _INSERT_COLUMNS.index("record_hash") + 1
_P_TIME = _INSERT_COLUMNS.index("recorded_at") + 1
_P_OLD_SEQ, _P_OLD_HASH = _n + 1, _n + 2
# The chain head as of the statement's start, returned when the head was not where the writer thought:
# the retry starts from it instead of reading it in a round trip of its own.
_PG_HEAD_NOW = (
    "(SELECT last_seq FROM chain_heads WHERE chat_id = {chat}), "
    "(SELECT last_hash FROM chain_heads WHERE chat_id = {chat})"
)
_PG_COMMON = (
    f"WITH lk AS (SELECT pg_advisory_xact_lock(${_P_CHAT}::bigint) AS locked), "
    f"old AS (SELECT id FROM incidents WHERE chat_id = ${_P_CHAT}::bigint "
    f"AND message_id = ${_P_MSG}::bigint AND edit_key = ${_P_KEY}::bigint), "
)
_PG_TAIL = (
    f"ins AS (INSERT INTO incidents ({', '.join(_INSERT_COLUMNS)}) SELECT {_PG_VALUES} FROM h RETURNING id) "
    "SELECT (SELECT id FROM ins), (SELECT id FROM old), " + _PG_HEAD_NOW.format(chat=f"${_P_CHAT}::bigint")
)
# the chat's chain already has a head: move it from (old seq, old hash)
_PG_APPEND = (
    _PG_COMMON
    + f"h AS (UPDATE chain_heads SET last_seq = ${_P_SEQ}::bigint, last_hash = ${_P_HASH}::varchar, "
    f"updated_at = ${_P_TIME}::timestamptz FROM lk WHERE chat_id = ${_P_CHAT}::bigint "
    f"AND last_seq = ${_P_OLD_SEQ}::bigint AND last_hash = ${_P_OLD_HASH}::varchar "
    "AND NOT EXISTS (SELECT 1 FROM old) RETURNING 1), " + _PG_TAIL
)
# the first record of a chat: create the head (a concurrent first record makes this insert nothing)
_PG_FIRST = (
    _PG_COMMON + f"h AS (INSERT INTO chain_heads (chat_id, last_seq, last_hash, updated_at) "
    f"SELECT ${_P_CHAT}::bigint, ${_P_SEQ}::bigint, ${_P_HASH}::varchar, ${_P_TIME}::timestamptz FROM lk "
    "WHERE NOT EXISTS (SELECT 1 FROM old) AND $" + str(_P_OLD_SEQ) + "::bigint = 0 "
    "AND $" + str(_P_OLD_HASH) + "::varchar IS NOT NULL "
    "ON CONFLICT (chat_id) DO NOTHING RETURNING 1), " + _PG_TAIL
)
_PG_HEAD = "SELECT last_seq, last_hash FROM chain_heads WHERE chat_id = $1"
_PG_ATTEMPTS = 1000  # each failed attempt means another writer appended; give up only if something is wrong


def _moved_head(tried: tuple[int, str], seq: int | None, digest: str | None) -> tuple[int, str] | None:
    """Where to retry from after a statement found the head moved: the head it saw, unless that is the
    one it tried (its snapshot predates the commit it waited for) or none (read it again)."""
    if seq is None or digest is None or (seq, digest) == tried:
        return None
    return (seq, digest)


class _PgState:
    """Per engine: bind processors, the last chain head seen per chat (a hint, always rechecked) and the
    chat and message of recent incidents (immutable once recorded), so appends need not look them up."""

    def __init__(self, dialect: Dialect) -> None:
        self.plan = _Plan(dialect)
        self.heads: dict[int, tuple[int, str]] = {}
        self.incidents: dict[int, tuple[int, int]] = {}

    def remember(self, chat_id: int, seq: int, digest: str) -> None:
        if len(self.heads) > 100_000:  # a hint cache: bounded, refilled on demand
            self.heads.clear()
        self.heads[chat_id] = (seq, digest)

    def remember_incident(self, incident_id: int, chat_id: int, message_id: int) -> None:
        if len(self.incidents) > 100_000:
            self.incidents.clear()
        self.incidents[incident_id] = (chat_id, message_id)


_pg_states: weakref.WeakKeyDictionary[Any, _PgState] = weakref.WeakKeyDictionary()


def _pg_state(engine: AsyncEngine) -> _PgState:
    """This engine's cached statements, chain heads and known incidents (made on first use)."""
    state = _pg_states.get(engine.sync_engine)
    if state is None:
        state = _pg_states[engine.sync_engine] = _PgState(engine.dialect)
    return state


@contextlib.asynccontextmanager
async def _asyncpg_connection(engine: AsyncEngine) -> AsyncIterator[Any]:
    """A pooled connection's asyncpg connection; one found broken is dropped from the pool."""
    async with engine.connect() as sa_conn:
        fairy = await sa_conn.get_raw_connection()
        conn = fairy.driver_connection
        assert conn is not None
        try:
            yield conn
        except (OSError, ConnectionError) as exc:
            fairy.invalidate(exc)
            raise
        except Exception as exc:
            if type(exc).__name__ in ("ConnectionDoesNotExistError", "InterfaceError"):
                fairy.invalidate(exc)
            raise


async def record_postgres(engine: AsyncEngine, values: dict[str, Any]) -> tuple[int, bool]:
    state = _pg_state(engine)
    chat_id = values["chat_id"]
    async with _asyncpg_connection(engine) as conn:
        head = state.heads.get(chat_id)
        for _ in range(_PG_ATTEMPTS):
            if head is None:
                row = await conn.fetchrow(_PG_HEAD, chat_id)
                head = (row[0], row[1]) if row is not None else (0, GENESIS)
            last_seq, prev = head
            _complete(values, last_seq, prev)
            new_id, existing, now_seq, now_hash = await conn.fetchrow(
                _PG_FIRST if last_seq == 0 else _PG_APPEND, *state.plan.params(values), last_seq, prev
            )
            if new_id is not None:
                state.remember(chat_id, values["seq"], values["record_hash"])
                state.remember_incident(new_id, chat_id, values["message_id"])
                return new_id, True
            if existing is not None:
                state.remember_incident(existing, chat_id, values["message_id"])
                return existing, False
            head = _moved_head(head, now_seq, now_hash)  # another writer moved it
            state.heads.pop(chat_id, None)
        raise RuntimeError(f"chat {chat_id}: could not append to the chain after {_PG_ATTEMPTS} attempts")


# ---- events: the outcome of an incident (and its strike) in one transaction ----
#
# The same technique for `append_events`: the whole chained append (events, the incident's state,
# the chain head, the strike) as one raw transaction, through the writer thread or asyncpg directly.

from storage.models import IncidentEvent, IncidentState, Strike  # noqa: E402

_EV_TABLE = IncidentEvent.__table__
_EV_COLUMNS = [c.name for c in _EV_TABLE.c if c.name != "id"]
_STATE_COLUMNS = [c.name for c in IncidentState.__table__.c]
_STATE_UPDATABLE = [c for c in _STATE_COLUMNS if c not in ("incident_id", "chat_id")]

EventSpec = tuple[str, str, str, str | None, int | None]  # kind, value, actor, detail (text), batch_id


class _EventPlan:
    """Bind processors for event and state rows in one dialect."""

    def __init__(self, dialect: Dialect) -> None:
        self.event = {n: _EV_TABLE.c[n].type.bind_processor(dialect) for n in _EV_COLUMNS}
        state_table = IncidentState.__table__
        self.state = {n: state_table.c[n].type.bind_processor(dialect) for n in _STATE_COLUMNS}
        self.time = Strike.__table__.c.created_at.type.bind_processor(dialect)

    @staticmethod
    def _apply(procs: dict[str, Any], names: list[str], values: dict[str, Any]) -> list[Any]:
        out = []
        for name in names:
            value, proc = values[name], procs[name]
            out.append(proc(value) if proc is not None and value is not None else value)
        return out

    def event_params(self, values: dict[str, Any]) -> list[Any]:
        return self._apply(self.event, _EV_COLUMNS, values)

    def state_params(self, values: dict[str, Any]) -> list[Any]:
        return self._apply(self.state, _STATE_COLUMNS, values)

    def when(self, value: datetime) -> Any:
        return self.time(value) if self.time is not None else value


def chain_events(
    incident_id: int,
    chat_id: int,
    message_id: int,
    last_seq: int,
    prev: str,
    events: list[EventSpec],
    state: dict[str, Any] | None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The event rows (seq, hashes) following the head, and the incident's state after them."""
    from storage.chain import record_hash as _hash

    now = datetime.now(UTC)
    if state is None:
        state = {name: None for name in _STATE_COLUMNS}
        state.update(incident_id=incident_id, chat_id=chat_id, legal_hold=False)
    rows = []
    for kind, value, actor, detail, batch_id in events:
        last_seq += 1
        row = {
            "incident_id": incident_id, "chat_id": chat_id, "seq": last_seq, "message_id": message_id,
            "kind": kind, "value": value, "actor": actor, "detail": detail, "batch_id": batch_id,
            "recorded_at": now, "prev_hash": prev,
        }  # fmt: skip
        hashed = {
            "chat_id": chat_id, "seq": last_seq, "incident_id": incident_id, "message_id": message_id,
            "event_kind": kind, "event_value": value, "event_actor": actor, "event_detail": detail,
            "batch_id": batch_id, "recorded_at": now,
        }  # fmt: skip
        row["record_hash"] = prev = _hash("event", hashed, prev)
        rows.append(row)
        # the projection append_event keeps
        if kind == "action":
            state["action_taken"], state["action_detail"] = value, detail
        elif kind == "review":
            state["review_result"], state["reviewed_by"] = value, actor
        elif kind == "report":
            state["report_status"] = value
            if batch_id is not None:
                state["report_batch_id"] = batch_id
        else:
            state["legal_hold"] = value == "on"
    state["updated_at"] = now
    return rows, state


_SQLITE_EV_INSERT = (
    f"INSERT INTO incident_events ({', '.join(_EV_COLUMNS)}) VALUES ({', '.join('?' for _ in _EV_COLUMNS)})"
)
_SQLITE_STATE_UPSERT = (
    f"INSERT INTO incident_state ({', '.join(_STATE_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _STATE_COLUMNS)}) "
    "ON CONFLICT (incident_id) DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in _STATE_UPDATABLE)
)
_SQLITE_STATE_SELECT = f"SELECT {', '.join(_STATE_COLUMNS)} FROM incident_state WHERE incident_id = ?"


class MissingIncident(LookupError):
    pass


def _append_in(
    conn: sqlite3.Connection,
    plan: _EventPlan,
    incident_id: int,
    events: list[EventSpec],
    strike: tuple[int, float] | None,
) -> int:
    """One incident's events (and strike) inside the caller's transaction; the sender's strikes."""
    row = conn.execute("SELECT chat_id, message_id FROM incidents WHERE id = ?", (incident_id,)).fetchone()
    if row is None:
        raise MissingIncident(f"no incident {incident_id}")
    chat_id, message_id = row
    head = conn.execute(
        "SELECT last_seq, last_hash FROM chain_heads WHERE chat_id = ?", (chat_id,)
    ).fetchone()
    last_seq, prev = head if head is not None else (0, GENESIS)
    srow = conn.execute(_SQLITE_STATE_SELECT, (incident_id,)).fetchone()
    state = None
    if srow is not None:
        state = dict(zip(_STATE_COLUMNS, srow, strict=True))
        state["legal_hold"] = bool(state["legal_hold"])
    rows, state = chain_events(incident_id, chat_id, message_id, last_seq, prev, events, state)
    conn.executemany(_SQLITE_EV_INSERT, [plan.event_params(r) for r in rows])
    conn.execute(_SQLITE_STATE_UPSERT, plan.state_params(state))
    if rows:
        last = rows[-1]
        conn.execute(
            _SQLITE_HEAD, (chat_id, last["seq"], last["record_hash"], plan.when(last["recorded_at"]))
        )
    strikes = 0
    if strike is not None:
        user_id, window = strike
        now = datetime.now(UTC)
        if conn.execute("SELECT id FROM strikes WHERE incident_id = ?", (incident_id,)).fetchone() is None:
            conn.execute(
                "INSERT INTO strikes (chat_id, user_id, incident_id, created_at) VALUES (?, ?, ?, ?)",
                (chat_id, user_id, incident_id, plan.when(now)),
            )
        strikes = conn.execute(
            "SELECT count(id) FROM strikes WHERE chat_id = ? AND user_id = ? AND created_at >= ?",
            (chat_id, user_id, plan.when(now - timedelta(seconds=window))),
        ).fetchone()[0]
    return int(strikes)


AppendSpec = tuple[int, list[EventSpec], tuple[int, float] | None]  # incident id, events, strike


def _sqlite_append_many(
    writer: SqliteWriter, plan: _EventPlan, items: list[AppendSpec], lock_timeout: float | None = None
) -> list[int]:
    conn = writer._connect_waiting(lock_timeout)
    conn.execute("BEGIN IMMEDIATE")
    try:
        out = [_append_in(conn, plan, incident_id, events, strike) for incident_id, events, strike in items]
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return out


_event_plans: weakref.WeakKeyDictionary[Any, _EventPlan] = weakref.WeakKeyDictionary()


def _event_plan(engine: AsyncEngine) -> _EventPlan:
    plan = _event_plans.get(engine.sync_engine)
    if plan is None:
        plan = _event_plans[engine.sync_engine] = _EventPlan(engine.dialect)
    return plan


async def append_sqlite(
    engine: AsyncEngine,
    writer: SqliteWriter,
    incident_id: int,
    events: list[EventSpec],
    strike: tuple[int, float] | None,
    lock_timeout: float | None = None,
) -> int:
    """Events (and the strike) of one incident in one BEGIN IMMEDIATE..COMMIT on the writer thread."""
    (strikes,) = await append_sqlite_many(engine, writer, [(incident_id, events, strike)], lock_timeout)
    return strikes


async def append_sqlite_many(
    engine: AsyncEngine, writer: SqliteWriter, items: list[AppendSpec], lock_timeout: float | None = None
) -> list[int]:
    """The events of several incidents in one transaction on the writer thread: one commit for all."""
    plan = _event_plan(engine)
    return await asyncio.get_running_loop().run_in_executor(
        writer.executor, _sqlite_append_many, writer, plan, items, lock_timeout
    )


def _pg_placeholders(names: list[str], table: Any) -> str:
    from sqlalchemy.dialects import postgresql

    dialect = postgresql.dialect()
    casts = []
    for i, name in enumerate(names):
        col_type = table.c[name].type
        casts.append(f"${i + 1}::{getattr(col_type, 'impl', col_type).compile(dialect=dialect)}")
    return ", ".join(casts)


_PG_EV_INSERT = (
    f"INSERT INTO incident_events ({', '.join(_EV_COLUMNS)}) "
    f"VALUES ({_pg_placeholders(_EV_COLUMNS, _EV_TABLE)})"
)
_PG_STATE_UPSERT = (
    f"INSERT INTO incident_state ({', '.join(_STATE_COLUMNS)}) "
    f"VALUES ({_pg_placeholders(_STATE_COLUMNS, IncidentState.__table__)}) "
    "ON CONFLICT (incident_id) DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in _STATE_UPDATABLE)
)


async def _append_postgres_tx(
    engine: AsyncEngine, incident_id: int, events: list[EventSpec], strike: tuple[int, float] | None
) -> int:
    """The general path: one asyncpg transaction of several statements under the chat's advisory lock
    (used when the chat's chain has no head yet, which a recorded incident always gives it)."""
    plan = _event_plan(engine)
    pg_state = _pg_state(engine)
    async with _asyncpg_connection(engine) as conn:
        async with conn.transaction():
            found = await conn.fetchrow(
                "SELECT chat_id, message_id, pg_advisory_xact_lock(chat_id) IS NULL FROM incidents "
                "WHERE id = $1",
                incident_id,
            )
            if found is None:
                raise MissingIncident(f"no incident {incident_id}")
            chat_id, message_id = found[0], found[1]
            # read under the lock: the head cannot move until this transaction ends
            head = await conn.fetchrow(
                "SELECT last_seq, last_hash FROM chain_heads WHERE chat_id = $1", chat_id
            )
            last_seq, prev = (head[0], head[1]) if head is not None else (0, GENESIS)
            srow = await conn.fetchrow(
                f"SELECT {', '.join(_STATE_COLUMNS)} FROM incident_state WHERE incident_id = $1",
                incident_id,
            )
            state = dict(srow) if srow is not None else None
            rows, state = chain_events(incident_id, chat_id, message_id, last_seq, prev, events, state)
            if rows:
                await conn.executemany(_PG_EV_INSERT, [plan.event_params(r) for r in rows])
            await conn.execute(_PG_STATE_UPSERT, *plan.state_params(state))
            if rows:
                last = rows[-1]
                await conn.execute(
                    "INSERT INTO chain_heads (chat_id, last_seq, last_hash, updated_at) "
                    "VALUES ($1, $2, $3, $4) ON CONFLICT (chat_id) DO UPDATE SET "
                    "last_seq = excluded.last_seq, "
                    "last_hash = excluded.last_hash, updated_at = excluded.updated_at",
                    chat_id,
                    last["seq"],
                    last["record_hash"],
                    last["recorded_at"],
                )
            strikes = 0
            if strike is not None:
                user_id, window = strike
                now = datetime.now(UTC)
                strikes = await conn.fetchval(
                    "WITH ins AS (INSERT INTO strikes (chat_id, user_id, incident_id, created_at) "
                    "SELECT $1, $2, $3, $4 WHERE NOT EXISTS "
                    "(SELECT 1 FROM strikes WHERE incident_id = $3) RETURNING created_at) "
                    "SELECT (SELECT count(*) FROM strikes WHERE chat_id = $1 AND user_id = $2 "
                    "AND created_at >= $5) + (SELECT count(*) FROM ins)",
                    chat_id,
                    user_id,
                    incident_id,
                    now,
                    now - timedelta(seconds=window),
                )
        if rows:
            pg_state.remember(chat_id, rows[-1]["seq"], rows[-1]["record_hash"])
        return int(strikes or 0)


# The common case as one statement, one round trip, in an implicit transaction (the reply comes after
# the durable commit), like `record_postgres`: take the chat's advisory lock, move the chain head from
# the (old seq, old hash) this engine last saw, and only if it moved insert the events, upsert the
# incident's state and add the strike. If another writer moved the head first, nothing is written: the
# head is read again and the statement retried. A statement that moves the head also saw every earlier
# append to the chat (their commits moved the head it started from), so its strike count is current.
# The state upsert sets only the columns these events change: the rest stay as committed.

_STATE_TOUCHED = {
    "action": ("action_taken", "action_detail"),
    "review": ("review_result", "reviewed_by"),
    "report": ("report_status",),
    "legal_hold": ("legal_hold",),
}


def _pg_cast(table: Any, name: str) -> str:
    from sqlalchemy.dialects import postgresql

    col_type = table.c[name].type
    return str(getattr(col_type, "impl", col_type).compile(dialect=postgresql.dialect()))


_EV_CASTS = [_pg_cast(_EV_TABLE, n) for n in _EV_COLUMNS]
_STATE_CASTS = [_pg_cast(IncidentState.__table__, n) for n in _STATE_COLUMNS]
_one_statements: dict[tuple[int, tuple[str, ...], bool], str] = {}


def _touched(events: list[EventSpec]) -> tuple[str, ...]:
    """The incident_state columns these events set (in table order), updated_at always."""
    names = {"updated_at"}
    for kind, _, _, _, batch_id in events:
        names.update(_STATE_TOUCHED.get(kind, ()))
        if kind == "report" and batch_id is not None:
            names.add("report_batch_id")
    return tuple(n for n in _STATE_COLUMNS if n in names)


def _one_statement(n_events: int, touched: tuple[str, ...], strike: bool) -> str:
    """The statement for this shape; parameters: see `_one_params`."""
    key = (n_events, touched, strike)
    sql = _one_statements.get(key)
    if sql is not None:
        return sql
    # $1 incident, $2 chat, $3/$4 old seq/hash, $5/$6/$7 new seq/hash/time, then the event rows, the
    # state row, and (with a strike) user, created_at and the window's start.
    n = 7
    rows = []
    for _ in range(n_events):
        rows.append("(" + ", ".join(f"${n + i + 1}::{c}" for i, c in enumerate(_EV_CASTS)) + ")")
        n += len(_EV_CASTS)
    state = ", ".join(f"${n + i + 1}::{c}" for i, c in enumerate(_STATE_CASTS))
    n += len(_STATE_CASTS)
    sql = (
        "WITH lk AS (SELECT pg_advisory_xact_lock($2::bigint) AS locked), "
        "inc AS (SELECT 1 AS found FROM incidents WHERE id = $1::bigint), "
        "h AS (UPDATE chain_heads SET last_seq = $5::bigint, last_hash = $6::varchar, "
        "updated_at = $7::timestamptz FROM lk WHERE chat_id = $2::bigint AND last_seq = $3::bigint "
        "AND last_hash = $4::varchar AND EXISTS (SELECT 1 FROM inc) RETURNING 1 AS moved), "
        f"ev AS (INSERT INTO incident_events ({', '.join(_EV_COLUMNS)}) SELECT v.* FROM "
        f"(VALUES {', '.join(rows)}) AS v ({', '.join(_EV_COLUMNS)}), h RETURNING 1), "
        f"st AS (INSERT INTO incident_state ({', '.join(_STATE_COLUMNS)}) SELECT {state} FROM h "
        "ON CONFLICT (incident_id) DO UPDATE SET "
        + ", ".join(f"{c} = excluded.{c}" for c in touched)
        + " RETURNING 1)"
    )
    if strike:
        u, at, since = f"${n + 1}::bigint", f"${n + 2}::timestamptz", f"${n + 3}::timestamptz"
        sql += (
            ", sk AS (INSERT INTO strikes (chat_id, user_id, incident_id, created_at) "
            f"SELECT $2::bigint, {u}, $1::bigint, {at} FROM h WHERE NOT EXISTS "
            "(SELECT 1 FROM strikes WHERE incident_id = $1::bigint) "
            "ON CONFLICT (incident_id) DO NOTHING RETURNING 1) "
            "SELECT (SELECT count(*) FROM h), (SELECT count(*) FROM inc), "
            f"(SELECT count(*) FROM strikes WHERE chat_id = $2::bigint AND user_id = {u} "
            f"AND created_at >= {since}) + (SELECT count(*) FROM sk), "
            + _PG_HEAD_NOW.format(chat="$2::bigint")
        )
    else:
        sql += " SELECT (SELECT count(*) FROM h), (SELECT count(*) FROM inc), 0, " + _PG_HEAD_NOW.format(
            chat="$2::bigint"
        )
    _one_statements[key] = sql
    return sql


async def append_postgres(
    engine: AsyncEngine, incident_id: int, events: list[EventSpec], strike: tuple[int, float] | None
) -> int:
    """Events (and the strike) of one incident under the chat's advisory lock, in one round trip when
    this engine knows the incident and its chat's head (it recorded them, or read them once)."""
    if not events:
        return await _append_postgres_tx(engine, incident_id, events, strike)
    plan = _event_plan(engine)
    pg_state = _pg_state(engine)
    async with _asyncpg_connection(engine) as conn:
        try:
            where = pg_state.incidents.get(incident_id)
            if where is None:
                found = await conn.fetchrow(
                    "SELECT chat_id, message_id FROM incidents WHERE id = $1", incident_id
                )
                if found is None:
                    raise MissingIncident(f"no incident {incident_id}")
                where = (found[0], found[1])
                pg_state.remember_incident(incident_id, *where)
            chat_id, message_id = where
            touched = _touched(events)
            sql = _one_statement(len(events), touched, strike is not None)
            head = pg_state.heads.get(chat_id)
            for _ in range(_PG_ATTEMPTS):
                if head is None:
                    row = await conn.fetchrow(_PG_HEAD, chat_id)
                    if row is None:
                        break  # no chain head yet: the general path creates it
                    head = (row[0], row[1])
                last_seq, prev = head
                rows, state = chain_events(incident_id, chat_id, message_id, last_seq, prev, events, None)
                last = rows[-1]
                params: list[Any] = [incident_id, chat_id, last_seq, prev]
                params += [last["seq"], last["record_hash"], last["recorded_at"]]
                for r in rows:
                    params += plan.event_params(r)
                params += plan.state_params(state)
                if strike is not None:
                    now = datetime.now(UTC)
                    params += [strike[0], now, now - timedelta(seconds=strike[1])]
                moved, exists, strikes, now_seq, now_hash = await conn.fetchrow(sql, *params)
                if moved:
                    pg_state.remember(chat_id, last["seq"], last["record_hash"])
                    return int(strikes or 0)
                if not exists:
                    pg_state.incidents.pop(incident_id, None)
                    raise MissingIncident(f"no incident {incident_id}")
                head = _moved_head(head, now_seq, now_hash)  # another writer moved it
                pg_state.heads.pop(chat_id, None)
            else:
                raise RuntimeError(
                    f"chat {chat_id}: could not append to the chain after {_PG_ATTEMPTS} attempts"
                )
        except Exception as exc:
            if type(exc).__name__ == "ForeignKeyViolationError":  # purged while this waited for the lock
                pg_state.incidents.pop(incident_id, None)
                raise MissingIncident(f"no incident {incident_id}") from exc
            raise
    return await _append_postgres_tx(engine, incident_id, events, strike)
