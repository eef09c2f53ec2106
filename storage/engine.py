"""Engines, sessions and the schema version: SQLite (aiosqlite) by default, PostgreSQL through asyncpg."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker, create_async_engine

DEFAULT_URL = "sqlite+aiosqlite:///qinglang.db"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
UPGRADE_HINT = "run: qinglang db upgrade"

# Execution option read by the SQLite "begin" hook. Writers take SQLite's write lock when the
# transaction starts (BEGIN IMMEDIATE), so a read-then-write never fails halfway with SQLITE_BUSY and the
# chain of a chat is appended by one writer at a time. Long readers (export, verify) ask for DEFERRED.
SQLITE_BEGIN = "qinglang_sqlite_begin"


class SchemaOutOfDate(RuntimeError):
    """The database schema is not the one this code needs."""


@dataclass
class Database:
    """An engine and its sessionmaker (`expire_on_commit=False`)."""

    engine: AsyncEngine
    sessionmaker: async_sessionmaker[Any]
    url: str

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    async def close(self) -> None:
        from storage.fastpath import close_writer

        await asyncio.get_running_loop().run_in_executor(None, close_writer, self.engine)
        await self.engine.dispose()


def resolve_url(url: str | None) -> str:
    """The URL to use: the argument, else QINGLANG_DATABASE_URL, else a SQLite file in the working dir."""
    url = url or os.environ.get("QINGLANG_DATABASE_URL") or DEFAULT_URL
    # Accept the plain driver-less spellings people paste from elsewhere.
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+asyncpg://" + url.split("://", 1)[1]
    elif url.startswith("sqlite:///"):
        url = "sqlite+aiosqlite:///" + url[len("sqlite:///") :]
    return url


def _sqlite_path(url: str) -> Path | None:
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def _create_private_file(path: Path) -> None:
    """Create the SQLite file readable by its owner only; SQLite gives -wal and -shm the same mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    os.close(fd)


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Hand transaction control to SQLAlchemy's "begin" hook below (the documented pysqlite/aiosqlite
    # recipe): the driver itself then emits no BEGIN of its own.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in (
        "PRAGMA journal_mode=WAL",
        "PRAGMA synchronous=FULL",
        "PRAGMA busy_timeout=30000",
        "PRAGMA foreign_keys=ON",
    ):
        cursor.execute(pragma)
    cursor.close()


def _on_sqlite_begin(conn: Connection) -> None:
    mode = conn.get_execution_options().get(SQLITE_BEGIN, "IMMEDIATE")
    conn.exec_driver_sql(f"BEGIN {mode}")


def make_engine(url: str | None = None, **kwargs: Any) -> AsyncEngine:
    """An async engine set up for evidence: SQLite with WAL, synchronous=FULL, busy timeout, foreign keys."""
    url = resolve_url(url)
    if url.startswith("sqlite"):
        path = _sqlite_path(url)
        if path is not None:
            _create_private_file(path)
        engine = create_async_engine(url, **kwargs)
        event.listen(engine.sync_engine, "connect", _on_sqlite_connect)
        event.listen(engine.sync_engine, "begin", _on_sqlite_begin)
        return engine
    # No pool_pre_ping: it costs a round trip per checkout on the hot path; a broken connection is
    # invalidated when it fails and the pool replaces it.
    return create_async_engine(url, **kwargs)


def _alembic_config(url: str | None = None) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if url:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str | None:
    """The newest migration this code ships."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def _current_revision(sync_conn: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(sync_conn).get_current_revision()


def _upgrade_on(sync_conn: Connection) -> None:
    from alembic import command

    config = _alembic_config()
    config.attributes["connection"] = sync_conn
    command.upgrade(config, "head")


async def upgrade_engine(engine: AsyncEngine) -> None:
    """Alembic upgrade to head over an existing async engine."""
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade_on)


def upgrade_database(url: str | None = None) -> str | None:
    """Alembic upgrade head (synchronous; used by `qinglang db upgrade`). Returns the new revision."""

    async def run() -> str | None:
        engine = make_engine(url)
        try:
            await upgrade_engine(engine)
            async with engine.connect() as conn:
                return await conn.run_sync(_current_revision)
        finally:
            await engine.dispose()

    return asyncio.run(run())


async def check_schema(engine: AsyncEngine) -> None:
    """Raise SchemaOutOfDate unless the database is at the newest migration."""
    async with engine.connect() as conn:
        current = await conn.run_sync(_current_revision)
    head = head_revision()
    if current != head:
        state = "has no qinglang schema" if current is None else f"is at schema revision {current}"
        raise SchemaOutOfDate(f"the database {state}, this code needs {head}; {UPGRADE_HINT}")


async def _is_empty(conn: AsyncConnection) -> bool:
    names = await conn.run_sync(lambda c: inspect(c).get_table_names())
    return not names


async def open_database(
    url: str | None = None, *, create_if_empty: bool = True, **engine_kwargs: Any
) -> Database:
    """Open the database at `url` (None: QINGLANG_DATABASE_URL or ./qinglang.db).

    A brand-new empty database gets the schema at once (so a first run just works); a database with
    tables is left as it is: call `check_schema` to refuse an out-of-date one.
    """
    url = resolve_url(url)
    engine = make_engine(url, **engine_kwargs)
    if create_if_empty:
        async with engine.connect() as conn:
            empty = await _is_empty(conn)
        if empty:
            await upgrade_engine(engine)
    maker = async_sessionmaker(engine, expire_on_commit=False)
    return Database(engine=engine, sessionmaker=maker, url=url)
