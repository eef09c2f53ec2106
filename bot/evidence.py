"""Evidence that is always durable somewhere: the database when it answers, else the local spool.

`moderate` records through `Evidence` so that a message is deleted only once its incident is on disk:
committed to the database, or fsync'd to the spool (storage/spool.py) when the database is unavailable
or locked. Spooled evidence is replayed into the database, in order, as soon as it answers again.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout

import storage
from storage.spool import IncidentKey, Spool, incident_key, replay_spool

log = logging.getLogger(__name__)

EventSpec = tuple[str, str, str, Any]  # kind, value, actor, detail
IncidentRef = int | IncidentKey  # a database incident's id, or a spooled incident's key


def _driver_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError, TimeoutError, PoolTimeout, sqlite3.OperationalError]
    try:
        import asyncpg

        errors += [asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.CannotConnectNowError]
        errors += [asyncpg.AdminShutdownError, asyncpg.ConnectionDoesNotExistError]
    except ImportError:  # SQLite-only installs
        pass
    return tuple(errors)


_DRIVER_ERRORS = _driver_errors()


def is_database_unavailable(exc: BaseException) -> bool:
    """A database that is down, restarting, unreachable or locked (not a bug, not a constraint)."""
    if isinstance(exc, IntegrityError):
        return False
    if isinstance(exc, DBAPIError):
        return exc.connection_invalidated or isinstance(exc.orig, _DRIVER_ERRORS) or "locked" in str(exc)
    return isinstance(exc, _DRIVER_ERRORS)


def default_spool_dir(database_url: str | None) -> Path:
    """Beside a SQLite file (`<file>.spool`), else ./qinglang-spool."""
    url = storage.engine.resolve_url(database_url)
    if url.startswith("sqlite"):
        database = make_url(url).database
        if database and database != ":memory:" and not database.startswith("file:"):
            return Path(database + ".spool")
    return Path("qinglang-spool")


@dataclass(frozen=True, slots=True)
class Recorded:
    """Where an incident's evidence is: `incident_id` in the database, or None while spooled."""

    key: IncidentKey
    created: bool
    incident_id: int | None
    recorded_at: datetime | None = None  # when it went into the database

    @property
    def ref(self) -> IncidentRef:
        """How to name the incident to `Evidence.append`."""
        return self.incident_id if self.incident_id is not None else self.key


class Evidence:
    """Records incidents and their events in the database, falling back to the spool."""

    def __init__(
        self, db: storage.Database, spool: Spool, *, retry_seconds: float = 1.0, lock_timeout: float = 1.0
    ) -> None:
        self.db = db
        self.spool = spool
        self.retry_seconds = retry_seconds
        # A SQLite file locked by another writer (a long purge, a backup) counts as unavailable after
        # this many seconds, not after the 30 s busy timeout: the message waits for its evidence.
        self.lock_timeout = lock_timeout
        self._drain_lock = asyncio.Lock()
        self._next_try = 0.0  # monotonic time before which the database is not tried again
        self._keys: dict[int, IncidentKey] = {}  # recent incident ids -> keys, to spool their events
        # Incidents another process recorded after this moment are its to act on (`handled_elsewhere`).
        self.started_at = datetime.now(UTC)

    def depth(self) -> int:
        """Spooled entries not yet in the database (the metrics gauge reads this)."""
        return self.spool.depth()

    def _down(self, exc: BaseException, what: str) -> None:
        self._next_try = time.monotonic() + self.retry_seconds
        log.warning("database unavailable (%s): %s spooled; %s", type(exc).__name__, what, exc)

    async def drain(self) -> int:
        """Replay the spool into the database; returns entries replayed (0 if it is still down)."""
        if not self.spool.depth():
            return 0
        async with self._drain_lock:
            try:
                done = await replay_spool(
                    spool=self.spool, sessionmaker=self.db.sessionmaker, lock_timeout=self.lock_timeout
                )
            except Exception as exc:
                if not is_database_unavailable(exc):
                    raise
                self._next_try = time.monotonic() + self.retry_seconds
                log.info("database still unavailable; %d spooled entries wait", self.spool.depth())
                return 0
        if done:
            log.info("replayed %d spooled entries into the database", done)
        return done

    async def _database_first(self) -> bool:
        """Whether to write to the database now: the spool is empty (after trying to drain it)."""
        if self.spool.depth() and time.monotonic() >= self._next_try:
            await self.drain()
        return not self.spool.depth()

    async def record(self, incident: storage.NewIncident) -> Recorded:
        """Record an incident durably (idempotent on chat, message and edit)."""
        key = incident_key(incident)
        if self.spool.holds(key):
            return Recorded(key, created=False, incident_id=None)
        if await self._database_first():
            try:
                row, created = await storage.record_incident(
                    sessionmaker=self.db.sessionmaker, incident=incident, lock_timeout=self.lock_timeout
                )
                recorded = Recorded(key, created=created, incident_id=row.id, recorded_at=row.recorded_at)
                self.remember(recorded)
                return recorded
            except Exception as exc:
                if not is_database_unavailable(exc):
                    raise
                self._down(exc, f"incident {key}")
        await asyncio.to_thread(self.spool.add_incident, incident)
        return Recorded(key, created=True, incident_id=None)

    async def record_many(self, incidents: Sequence[storage.NewIncident]) -> list[Recorded]:
        """`record` for several incidents: in the database in one transaction (one commit for all), or
        each spooled, in order, while it is unavailable."""
        keys = [incident_key(i) for i in incidents]
        out: list[Recorded | None] = [
            Recorded(key, created=False, incident_id=None) if self.spool.holds(key) else None for key in keys
        ]
        todo = [i for i, found in enumerate(out) if found is None]
        if todo and await self._database_first():
            try:
                rows = await storage.record_incidents(
                    sessionmaker=self.db.sessionmaker,
                    incidents=[incidents[i] for i in todo],
                    lock_timeout=self.lock_timeout,
                )
                for i, row in zip(todo, rows, strict=True):
                    out[i] = recorded = Recorded(
                        keys[i], created=row.created, incident_id=row.id, recorded_at=row.recorded_at
                    )
                    self.remember(recorded)
                todo = []
            except Exception as exc:
                if not is_database_unavailable(exc):
                    raise
                self._down(exc, f"{len(todo)} incidents")
        for i in todo:
            if self.spool.holds(keys[i]):  # the same message twice in one batch
                out[i] = Recorded(keys[i], created=False, incident_id=None)
                continue
            await asyncio.to_thread(self.spool.add_incident, incidents[i])
            out[i] = Recorded(keys[i], created=True, incident_id=None)
        return [r for r in out if r is not None]

    async def append_many(
        self, items: Sequence[tuple[IncidentRef, Sequence[EventSpec], tuple[int, float] | None]]
    ) -> list[int]:
        """`append` for several incidents (ref, events, strike): in the database in one transaction, or
        spooled, in order, while it is unavailable. Returns each sender's strikes, as `append` does."""
        strikes = [0] * len(items)
        left = list(range(len(items)))
        in_db = [(i, ref) for i, (ref, _, _) in enumerate(items) if isinstance(ref, int)]
        if len(in_db) > 1 and await self._database_first():
            try:
                done = await storage.append_events_many(
                    sessionmaker=self.db.sessionmaker,
                    items=[(ref, items[i][1], items[i][2]) for i, ref in in_db],
                    lock_timeout=self.lock_timeout,
                )
                for (i, _), count in zip(in_db, done, strict=True):
                    strikes[i] = count
                moved = {i for i, _ in in_db}
                left = [i for i in left if i not in moved]
            except Exception as exc:
                if not is_database_unavailable(exc):
                    raise
                self._down(exc, f"events of {len(in_db)} incidents")
        for i in left:  # one at a time: spooled ones, or the database was unavailable
            ref, events, strike = items[i]
            strikes[i] = await self.append(ref, events, strike=strike)
        return strikes

    async def append(
        self,
        ref: IncidentRef,
        events: Sequence[EventSpec],
        *,
        strike: tuple[int, float] | None = None,
    ) -> int:
        """Append events (and the strike: user id, window seconds) in one transaction, or spool them.

        Returns the sender's strikes in the window (0 when spooled: counted once replayed).
        """
        if isinstance(ref, int) and await self._database_first():
            try:
                return await self._append_db(ref, events, strike)
            except Exception as exc:
                if not is_database_unavailable(exc):
                    raise
                self._down(exc, f"events of incident {ref}")
        key = ref if not isinstance(ref, int) else await self._key_of(ref)
        for kind, value, actor, detail in events:
            await asyncio.to_thread(
                self.spool.add_event, key, kind=kind, value=value, actor=actor, detail=detail
            )
        if strike is not None:
            await asyncio.to_thread(self.spool.add_strike, key, user_id=strike[0], window_seconds=strike[1])
        return 0

    async def _key_of(self, incident_id: int) -> IncidentKey:
        known = self._keys.get(incident_id)
        if known is None:  # recorded before this process: only in the database, which is down
            raise RuntimeError(f"incident {incident_id}: database unavailable and its key is unknown")
        return known

    def remember(self, recorded: Recorded) -> None:
        """Keep the key of a database incident, so its events can be spooled if the database goes."""
        if recorded.incident_id is not None:
            self._keys[recorded.incident_id] = recorded.key
            if len(self._keys) > 10_000:
                self._keys.pop(next(iter(self._keys)))

    async def _append_db(
        self, incident_id: int, events: Sequence[EventSpec], strike: tuple[int, float] | None
    ) -> int:
        # One durable transaction for the outcome, its report entry and the strike.
        return await storage.append_events(
            sessionmaker=self.db.sessionmaker,
            incident_id=incident_id,
            events=events,
            strike=strike,
            lock_timeout=self.lock_timeout,
        )

    async def handled_elsewhere(self, recorded: Recorded) -> bool:
        """Whether this handling must not act on an incident it found already recorded.

        Only the handling whose `record` created the incident acts on it. An incident found recorded is
        left alone when it already has an outcome, or when another live process recorded it after this one
        started (the same update delivered to two workers at once: that process is acting on it now). An
        incident recorded before this process started and still without an outcome was left by a crash:
        this process completes its action (journal replay).
        """
        if recorded.created:
            return False
        if recorded.incident_id is None:
            return True  # spooled earlier in this process: its outcome is spooled after it
        async with self.db.sessionmaker() as session:
            state = await session.get(storage.IncidentState, recorded.incident_id)
        if state is not None and state.action_taken is not None:
            return True
        return recorded.recorded_at is None or _aware(recorded.recorded_at) >= self.started_at


def _aware(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; every time we store is UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
