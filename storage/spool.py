"""An append-only local spool for evidence that could not reach the database, and its replay.

When the database is unavailable or locked, the bot writes the incident (and then its outcome events
and strike) here as fsync'd JSON lines, so the evidence is durable before the message is touched.
`replay_spool` later writes the entries into the database in the order they were spooled, through the
ordinary `record_incident`/`append_event`, so each chat's hash chain stays valid.

Files in the spool directory (0700; files 0600):
- `spool.jsonl`  one entry a line, appended and fsync'd;
- `spool.cursor` how many lines of `spool.jsonl` have been replayed (replaced atomically);
- `spool-<time>.replayed.jsonl` a fully replayed spool, kept as an audit trail.

Knows no Telegram types.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import uuid
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from storage.fastpath import sqlite_writer
from storage.records import (
    NewIncident,
    add_strike,
    append_event,
    find_incident,
    list_events,
    record_incident,
)

log = logging.getLogger(__name__)

SPOOL_FILE = "spool.jsonl"
CURSOR_FILE = "spool.cursor"
_TIMES = ("message_date", "received_at", "edit_date")

IncidentKey = tuple[int, int, str | None]  # chat_id, message_id, edit_date (ISO) or None


def incident_to_json(incident: NewIncident) -> dict[str, Any]:
    """A NewIncident as JSON-ready values (times as ISO 8601 text)."""
    values = asdict(incident)
    for name in _TIMES:
        if values[name] is not None:
            values[name] = values[name].isoformat()
    return values


def incident_from_json(values: dict[str, Any]) -> NewIncident:
    """The inverse of `incident_to_json`."""
    values = dict(values)
    for name in _TIMES:
        if values.get(name) is not None:
            values[name] = datetime.fromisoformat(values[name])
    return NewIncident(**values)


def incident_key(incident: NewIncident) -> IncidentKey:
    """What makes an incident unique: chat, message, and which edit."""
    edit = incident.edit_date.astimezone(UTC).isoformat() if incident.edit_date is not None else None
    return (incident.chat_id, incident.message_id, edit)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """The spool in one directory. Thread-safe; every append is on disk when `append` returns."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / SPOOL_FILE
        self.cursor_path = self.directory / CURSOR_FILE
        self._lock = threading.Lock()
        self._lines = 0  # complete lines in spool.jsonl
        self._cursor = 0
        self._keys: set[IncidentKey] = set()  # incidents waiting in the spool
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        self._cursor = int(self.cursor_path.read_text().strip() or 0) if self.cursor_path.exists() else 0
        entries = self._read()
        self._lines = len(entries)
        for entry in entries[self._cursor :]:
            if entry["kind"] == "incident":
                self._keys.add(_key_of(entry))

    def _read(self) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = []
        raw = self.path.read_bytes()
        lines = raw.split(b"\n")
        for number, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                entries.append(json.loads(line))
            except ValueError:
                if number == len(lines) - 1:  # a write torn by a crash: it was never acknowledged
                    log.warning("spool: ignoring a torn last line in %s", self.path)
                    break
                raise
        return entries

    def depth(self) -> int:
        """Entries written but not yet replayed into the database."""
        return self._lines - self._cursor

    def holds(self, key: IncidentKey) -> bool:
        """Whether an incident with this key waits in the spool."""
        return key in self._keys

    def append(self, entry: dict[str, Any]) -> None:
        """Write one entry and fsync it (creating the directory and file private to the owner)."""
        line = json.dumps(entry, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
        with self._lock:
            created = not self.path.exists()
            if created:
                self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
            if created:
                _fsync_dir(self.directory)
            self._lines += 1
            if entry["kind"] == "incident":
                self._keys.add(_key_of(entry))

    def add_incident(self, incident: NewIncident) -> None:
        """Spool an incident."""
        self.append({"kind": "incident", "incident": incident_to_json(incident)})

    def add_event(
        self, key: IncidentKey, *, kind: str, value: str, actor: str, detail: dict[str, Any] | None
    ) -> None:
        """Spool an event of an incident (spooled or not), found again by its key on replay."""
        self.append(
            {
                "kind": "event",
                "key": list(key),
                "id": uuid.uuid4().hex,  # makes the replay of this event idempotent
                "event": {"kind": kind, "value": value, "actor": actor, "detail": detail},
            }
        )

    def add_strike(self, key: IncidentKey, *, user_id: int, window_seconds: float) -> None:
        """Spool the strike an incident gives its sender."""
        self.append(
            {"kind": "strike", "key": list(key), "user_id": user_id, "window_seconds": window_seconds}
        )

    def pending(self) -> list[dict[str, Any]]:
        """The entries not yet replayed, oldest first."""
        with self._lock:
            if not self.path.exists():
                return []
            return self._read()[self._cursor :]

    def mark_replayed(self, count: int) -> None:
        """Advance the cursor by `count` entries; a fully replayed spool is set aside."""
        with self._lock:
            self._cursor += count
            if self._cursor >= self._lines:
                stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
                os.replace(self.path, self.directory / f"spool-{stamp}.replayed.jsonl")
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.cursor_path)
                _fsync_dir(self.directory)
                self._lines = self._cursor = 0
                self._keys.clear()
                return
            tmp = self.cursor_path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, str(self._cursor).encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.cursor_path)

    def forget_keys(self, keys: set[IncidentKey]) -> None:
        with self._lock:
            self._keys -= keys


def _key_of(entry: dict[str, Any]) -> IncidentKey:
    if entry["kind"] == "incident":
        return incident_key(incident_from_json(entry["incident"]))
    chat_id, message_id, edit = entry["key"]
    return (int(chat_id), int(message_id), edit)


async def replay_spool(
    *,
    spool: Spool,
    sessionmaker: async_sessionmaker[AsyncSession],
    on_entry: Callable[[dict[str, Any]], None] | None = None,
    lock_timeout: float | None = None,
) -> int:
    """Write the spool's pending entries into the database, in order; returns how many were replayed.

    Each entry is committed, then the cursor advances past it. Re-running an entry is harmless: incidents
    are idempotent, events carry an id checked before appending, strikes are one per incident. A database
    error stops the replay where it is (the caller retries later) and propagates. `lock_timeout`: on a
    SQLite file, give up (sqlite3.OperationalError, "database is locked") when another writer holds the
    lock that long, instead of waiting the 30 s busy timeout before each entry.
    """
    done = 0
    engine = sessionmaker.kw.get("bind")
    writer = sqlite_writer(engine) if isinstance(engine, AsyncEngine) else None
    for entry in spool.pending():
        kind = entry["kind"]
        if writer is not None and lock_timeout is not None:
            await writer.probe(lock_timeout)
        if kind == "incident":
            await record_incident(
                sessionmaker=sessionmaker,
                incident=incident_from_json(entry["incident"]),
                lock_timeout=lock_timeout,
            )
            spool.forget_keys({_key_of(entry)})
        else:
            chat_id, message_id, edit = _key_of(entry)
            async with sessionmaker.begin() as session:
                found = await find_incident(
                    session=session,
                    chat_id=chat_id,
                    message_id=message_id,
                    edit_date=datetime.fromisoformat(edit) if edit else None,
                )
                if found is None:
                    log.error(
                        "spool: no incident for %s entry %s; skipped", kind, (chat_id, message_id, edit)
                    )
                elif kind == "event":
                    event = entry["event"]
                    detail = dict(event.get("detail") or {})
                    detail["spooled"] = entry["id"]
                    seen = any(
                        ev.detail and entry["id"] in ev.detail
                        for ev in await list_events(session=session, incident_id=found.id)
                    )
                    if not seen:
                        await append_event(
                            session=session,
                            incident_id=found.id,
                            kind=event["kind"],
                            value=event["value"],
                            actor=event["actor"],
                            detail=detail,
                        )
                elif kind == "strike":
                    from datetime import timedelta

                    await add_strike(
                        session=session,
                        chat_id=chat_id,
                        user_id=int(entry["user_id"]),
                        incident_id=found.id,
                        window=timedelta(seconds=float(entry["window_seconds"])),
                    )
        spool.mark_replayed(1)
        done += 1
        if on_entry is not None:
            on_entry(entry)
    return done
