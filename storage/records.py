"""Data access: keyword-only functions over an AsyncSession. Callers own the transaction, except
`record_incident`, which commits itself so the evidence is durable before the message is deleted."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import func, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

from storage import fastpath
from storage.chain import GENESIS, iso, record_hash
from storage.models import (
    AuditLog,
    ChainHead,
    ChatSettings,
    Incident,
    IncidentEvent,
    IncidentState,
    Strike,
    TrainingExample,
    table_of,
)
from storage.types import as_utc

log = logging.getLogger(__name__)

MODES = ("enforce", "dry_run", "off")
LANGUAGES = ("zh", "en")
EVENT_VALUES: dict[str, tuple[str, ...]] = {
    "action": ("deleted", "delete_failed", "kept_for_review", "warned", "muted", "banned", "none"),
    "review": ("confirmed", "false_positive"),
    "report": ("queued", "reported", "dismissed"),
    "legal_hold": ("on", "off"),
}
DEFAULT_RETENTION_DAYS = 180


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(kw_only=True)
class NewIncident:
    """What the bot knows about a flagged message, in plain types (no Telegram objects)."""

    chat_id: int
    message_id: int
    message_date: datetime
    category: str
    score: float
    suggested_action: str
    chat_title: str | None = None
    thread_id: int | None = None
    sender_id: int | None = None
    sender_username: str | None = None
    sender_name: str | None = None
    sender_chat_id: int | None = None
    received_at: datetime = field(default_factory=utcnow)
    is_edit: bool = False
    edit_date: datetime | None = None
    text: str | None = None
    hidden_links: list[str] = field(default_factory=list)
    media_kind: str | None = None
    media_file_unique_id: str | None = None
    forward_origin: Any = None
    model_version: str = ""
    reasons: Any = field(default_factory=dict)
    contacts: Any = field(default_factory=list)
    decided_by: str = "model"


def _require_int(name: str, value: Any, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"NewIncident.{name} must be an int, got {value!r}")


def _epoch_micros(value: datetime) -> int:
    return (as_utc(value) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def _incident_values(incident: NewIncident) -> dict[str, Any]:
    """Validate and normalise; raises ValueError with a clear message before anything is written."""
    if not isinstance(incident, NewIncident):
        raise TypeError("incident must be a storage.NewIncident")
    # A shallow copy: dataclasses.asdict deep-copies the reasons dict field by field, which was a
    # visible share of the bot's CPU per incident; nothing below mutates a nested value.
    values = {f.name: getattr(incident, f.name) for f in fields(incident)}
    for name in ("chat_id", "message_id"):
        _require_int(name, values[name])
    for name in ("thread_id", "sender_id", "sender_chat_id"):
        _require_int(name, values[name], optional=True)
    for name in ("message_date", "received_at"):
        if not isinstance(values[name], datetime):
            raise ValueError(f"NewIncident.{name} must be a datetime, got {values[name]!r}")
    if values["edit_date"] is not None and not isinstance(values["edit_date"], datetime):
        raise ValueError(f"NewIncident.edit_date must be a datetime or None, got {values['edit_date']!r}")
    for name in (
        "chat_title",
        "sender_username",
        "sender_name",
        "text",
        "media_kind",
        "media_file_unique_id",
    ):
        if values[name] is not None and not isinstance(values[name], str):
            raise ValueError(f"NewIncident.{name} must be a str or None")
    for name in ("category", "suggested_action", "model_version", "decided_by"):
        if not isinstance(values[name], str):
            raise ValueError(f"NewIncident.{name} must be a str")
    if not values["category"]:
        raise ValueError("NewIncident.category must not be empty")
    score = float(values["score"])
    if score != score or score in (float("inf"), float("-inf")):
        raise ValueError("NewIncident.score must be a finite number")
    # Six decimals survive every export format exactly (XLSX keeps 15-16 significant digits).
    values["score"] = round(score, 6)
    values["is_edit"] = bool(values["is_edit"])
    values["hidden_links"] = list(values["hidden_links"] or [])
    for name in ("message_date", "received_at", "edit_date"):
        if values[name] is not None:
            values[name] = as_utc(values[name])
    values["edit_key"] = _epoch_micros(values["edit_date"]) if values["edit_date"] is not None else 0
    return values


def _hash_fields(values: Mapping[str, Any]) -> dict[str, Any]:
    """The incident's values in export form (times as ISO text), as hashed."""
    return {k: iso(v) if isinstance(v, datetime) else v for k, v in values.items()}


async def _dialect(session: AsyncSession) -> str:
    return (await session.connection()).dialect.name


async def _lock_chain(session: AsyncSession, chat_id: int) -> None:
    """Serialize appends to one chat's chain until the transaction ends.

    PostgreSQL: a transaction-level advisory lock keyed by the chat id. SQLite: our engine opens every
    write transaction with BEGIN IMMEDIATE, so this transaction already holds the single write lock.
    """
    if await _dialect(session) == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": chat_id})


async def _chain_head(session: AsyncSession, chat_id: int) -> tuple[int, str, bool]:
    row = (
        await session.execute(
            select(ChainHead.last_seq, ChainHead.last_hash).where(ChainHead.chat_id == chat_id)
        )
    ).first()
    if row is None:
        return 0, GENESIS, False
    return row[0], row[1], True


async def _advance_head(session: AsyncSession, chat_id: int, seq: int, digest: str, exists: bool) -> None:
    now = utcnow()
    if exists:
        await session.execute(
            update(table_of(ChainHead))
            .where(table_of(ChainHead).c.chat_id == chat_id)
            .values(last_seq=seq, last_hash=digest, updated_at=now)
        )
    else:
        await session.execute(
            insert(table_of(ChainHead)).values(
                chat_id=chat_id, last_seq=seq, last_hash=digest, updated_at=now
            )
        )


async def _find_incident(
    session: AsyncSession, chat_id: int, message_id: int, edit_key: int
) -> Incident | None:
    return (
        await session.execute(
            select(Incident).where(
                Incident.chat_id == chat_id, Incident.message_id == message_id, Incident.edit_key == edit_key
            )
        )
    ).scalar_one_or_none()


async def record_incident(
    *,
    sessionmaker: async_sessionmaker[AsyncSession],
    incident: NewIncident,
    lock_timeout: float | None = None,
) -> tuple[Incident, bool]:
    """Append an incident to its chat's chain and commit. Returns (incident, created).

    Idempotent on (chat_id, message_id, edit_date): the same update delivered twice yields one incident
    (the second call returns the first row with created=False). `lock_timeout`: on a SQLite file, seconds
    to wait for another writer's lock before raising "database is locked" (None: the 30 s busy timeout).
    """
    values = _incident_values(incident)
    engine = sessionmaker.kw.get("bind")
    integrity: tuple[type[BaseException], ...] = (
        IntegrityError,
        sqlite3.IntegrityError,
        *_pg_integrity_errors(),
    )
    try:
        if isinstance(engine, AsyncEngine) and engine.dialect.name == "postgresql":
            new_id, created = await fastpath.record_postgres(engine, values)
        elif isinstance(engine, AsyncEngine) and (writer := fastpath.sqlite_writer(engine)) is not None:
            new_id, created = await writer.record(values, lock_timeout)
        else:
            new_id, created = await _record_incident_session(sessionmaker, values)
    except integrity as exc:
        # Two writers raced on the same message past the chain lock (only if the lock is bypassed):
        # the row that won is the incident.
        async with sessionmaker() as session:
            found = await _find_incident(session, values["chat_id"], values["message_id"], values["edit_key"])
        if found is None:
            raise exc
        return found, False
    return await _incident_row(sessionmaker, values, new_id, created), created


async def _incident_row(
    sessionmaker: async_sessionmaker[AsyncSession], values: dict[str, Any], new_id: int, created: bool
) -> Incident:
    if not created:
        async with sessionmaker() as session:
            found = await session.get(Incident, new_id)
        assert found is not None
        return found
    inc = Incident(id=new_id, **values)
    set_committed_value(inc, "state", None)
    make_transient_to_detached(inc)
    return inc


def _batch_writer(
    sessionmaker: async_sessionmaker[AsyncSession], count: int
) -> tuple[AsyncEngine, fastpath.SqliteWriter] | None:
    """The engine and SQLite writer thread that take `count` (> 1) records in one transaction; None when
    they go one by one (a single record, or any database but a SQLite file)."""
    engine = sessionmaker.kw.get("bind")
    if count < 2 or not isinstance(engine, AsyncEngine):
        return None
    writer = fastpath.sqlite_writer(engine)
    return None if writer is None else (engine, writer)


class RecordedIncident(NamedTuple):
    """One incident of `record_incidents`: its id, whether this call created it, and when it was recorded.
    The ORM row is not built: a batch of the bot's deletions needs only these."""

    id: int
    created: bool
    recorded_at: datetime


async def record_incidents(
    *,
    sessionmaker: async_sessionmaker[AsyncSession],
    incidents: Sequence[NewIncident],
    lock_timeout: float | None = None,
) -> list[RecordedIncident]:
    """`record_incident` for several incidents, in order. On a SQLite file they share one transaction
    (one commit, one fsync: all of them or none); elsewhere each commits on its own."""
    batch = _batch_writer(sessionmaker, len(incidents))
    if batch is None:
        return [await _recorded_one(sessionmaker, i, lock_timeout) for i in incidents]
    _engine, writer = batch
    many = [_incident_values(i) for i in incidents]
    try:
        results = await writer.record_many(many, lock_timeout)
    except (IntegrityError, sqlite3.IntegrityError):
        # A race past the chain lock (see record_incident): nothing was written; one by one resolves it.
        return [await _recorded_one(sessionmaker, i, lock_timeout) for i in incidents]
    out = []
    for values, (new_id, created) in zip(many, results, strict=True):
        if created:  # the writer set recorded_at as it chained the row
            out.append(RecordedIncident(new_id, True, values["recorded_at"]))
        else:
            row = await _incident_row(sessionmaker, values, new_id, created)
            out.append(RecordedIncident(new_id, False, row.recorded_at))
    return out


async def _recorded_one(
    sessionmaker: async_sessionmaker[AsyncSession], incident: NewIncident, lock_timeout: float | None
) -> RecordedIncident:
    row, created = await record_incident(
        sessionmaker=sessionmaker, incident=incident, lock_timeout=lock_timeout
    )
    return RecordedIncident(row.id, created, row.recorded_at)


async def _record_incident_session(
    sessionmaker: async_sessionmaker[AsyncSession], values: dict[str, Any]
) -> tuple[int, bool]:
    """The portable path (any engine SQLAlchemy supports), used where the fast path does not apply."""
    chat_id = values["chat_id"]
    table = table_of(Incident)
    async with sessionmaker() as session, session.begin():
        await _lock_chain(session, chat_id)
        existing_id = (
            await session.execute(
                select(table.c.id).where(
                    table.c.chat_id == chat_id,
                    table.c.message_id == values["message_id"],
                    table.c.edit_key == values["edit_key"],
                )
            )
        ).scalar_one_or_none()
        if existing_id is not None:
            return existing_id, False
        last_seq, prev, head_exists = await _chain_head(session, chat_id)
        values["seq"] = last_seq + 1
        values["recorded_at"] = utcnow()
        values["prev_hash"] = prev
        values["record_hash"] = record_hash("incident", _hash_fields(values), prev)
        new_id = (await session.execute(insert(table).values(**values).returning(table.c.id))).scalar_one()
        await _advance_head(session, chat_id, values["seq"], values["record_hash"], head_exists)
    return new_id, True


def _pg_integrity_errors() -> tuple[type[BaseException], ...]:
    try:
        import asyncpg
    except ImportError:
        return ()
    return (asyncpg.IntegrityConstraintViolationError,)


def _detail_text(detail: Any) -> str | None:
    if detail is None or isinstance(detail, str):
        return detail
    from storage.types import dumps_json

    return dumps_json(detail)


def _check_event(kind: str, value: str, actor: str) -> None:
    allowed = EVENT_VALUES.get(kind)
    if allowed is None:
        raise ValueError(f"unknown event kind {kind!r}; expected one of {sorted(EVENT_VALUES)}")
    if value not in allowed:
        raise ValueError(f"unknown {kind} value {value!r}; expected one of {list(allowed)}")
    if not isinstance(actor, str) or not actor:
        raise ValueError("actor must be a non-empty str, e.g. 'model' or 'admin:<id>'")


async def append_event(
    *,
    session: AsyncSession,
    incident_id: int,
    kind: str,
    value: str,
    actor: str,
    detail: str | Mapping[str, Any] | None = None,
    batch_id: int | None = None,
) -> IncidentEvent:
    """Append a state change of an incident to its chat's chain and update the incident's state."""
    _check_event(kind, value, actor)
    row = (
        await session.execute(select(Incident.chat_id, Incident.message_id).where(Incident.id == incident_id))
    ).first()
    if row is None:
        raise LookupError(f"no incident {incident_id}")
    chat_id, message_id = row
    await _lock_chain(session, chat_id)
    last_seq, prev, head_exists = await _chain_head(session, chat_id)
    now = utcnow()
    ev = IncidentEvent(
        incident_id=incident_id,
        chat_id=chat_id,
        seq=last_seq + 1,
        message_id=message_id,
        kind=kind,
        value=value,
        actor=actor,
        detail=_detail_text(detail),
        batch_id=batch_id,
        recorded_at=now,
        prev_hash=prev,
    )
    ev.record_hash = record_hash("event", event_fields(ev), prev)
    session.add(ev)
    state = await session.get(IncidentState, incident_id)
    if state is None:
        state = IncidentState(incident_id=incident_id, chat_id=chat_id, legal_hold=False, updated_at=now)
        session.add(state)
    if kind == "action":
        state.action_taken, state.action_detail = value, ev.detail
    elif kind == "review":
        state.review_result, state.reviewed_by = value, actor
    elif kind == "report":
        state.report_status = value
        if batch_id is not None:
            state.report_batch_id = batch_id
    else:
        state.legal_hold = value == "on"
    state.updated_at = now
    await _advance_head(session, chat_id, ev.seq, ev.record_hash, head_exists)
    await session.flush()
    return ev


async def append_events(
    *,
    sessionmaker: async_sessionmaker[AsyncSession],
    incident_id: int,
    events: Sequence[tuple[str, str, str, str | Mapping[str, Any] | None]],
    strike: tuple[int, float] | None = None,
    lock_timeout: float | None = None,
) -> int:
    """Append events (kind, value, actor, detail) to an incident and, optionally, its strike
    (user id, window seconds), in one transaction that commits itself. Returns the user's strikes in
    the window (0 without a strike). `lock_timeout` as for `record_incident`.

    The bot's outcome path: on a file-backed SQLite or PostgreSQL engine it is one raw transaction
    (storage/fastpath.py), otherwise `append_event` and `add_strike` in one session.
    """
    specs: list[fastpath.EventSpec] = []
    for kind, value, actor, detail in events:
        _check_event(kind, value, actor)
        specs.append((kind, value, actor, _detail_text(detail), None))
    engine = sessionmaker.kw.get("bind")
    if isinstance(engine, AsyncEngine) and engine.dialect.name == "postgresql":
        return await fastpath.append_postgres(engine, incident_id, specs, strike)
    if isinstance(engine, AsyncEngine) and (writer := fastpath.sqlite_writer(engine)) is not None:
        return await fastpath.append_sqlite(engine, writer, incident_id, specs, strike, lock_timeout)
    strikes = 0
    async with sessionmaker.begin() as session:
        for kind, value, actor, detail, _ in specs:
            await append_event(
                session=session, incident_id=incident_id, kind=kind, value=value, actor=actor, detail=detail
            )
        if strike is not None:
            chat_id = await session.scalar(select(Incident.chat_id).where(Incident.id == incident_id))
            if chat_id is None:
                raise LookupError(f"no incident {incident_id}")
            strikes = await add_strike(
                session=session,
                chat_id=chat_id,
                user_id=strike[0],
                incident_id=incident_id,
                window=timedelta(seconds=strike[1]),
            )
    return strikes


async def append_events_many(
    *,
    sessionmaker: async_sessionmaker[AsyncSession],
    items: Sequence[
        tuple[int, Sequence[tuple[str, str, str, str | Mapping[str, Any] | None]], tuple[int, float] | None]
    ],
    lock_timeout: float | None = None,
) -> list[int]:
    """`append_events` for several incidents (incident id, events, strike), in order. On a SQLite file
    they share one transaction (one commit for all, or none); elsewhere each commits on its own.
    Returns each sender's strikes in the window."""
    batch = _batch_writer(sessionmaker, len(items))
    if batch is None:
        return [
            await append_events(
                sessionmaker=sessionmaker,
                incident_id=incident_id,
                events=events,
                strike=strike,
                lock_timeout=lock_timeout,
            )
            for incident_id, events, strike in items
        ]
    engine, writer = batch
    specs: list[fastpath.AppendSpec] = []
    for incident_id, events, strike in items:
        for kind, value, actor, _ in events:
            _check_event(kind, value, actor)
        chained: list[fastpath.EventSpec] = [
            (kind, value, actor, _detail_text(detail), None) for kind, value, actor, detail in events
        ]
        specs.append((incident_id, chained, strike))
    return await fastpath.append_sqlite_many(engine, writer, specs, lock_timeout)


def event_fields(ev: IncidentEvent) -> dict[str, Any]:
    """An event in export form (the fields its hash covers and more)."""
    return {
        "record_type": "event",
        "chat_id": ev.chat_id,
        "seq": ev.seq,
        "incident_id": ev.incident_id,
        "message_id": ev.message_id,
        "event_kind": ev.kind,
        "event_value": ev.value,
        "event_actor": ev.actor,
        "event_detail": ev.detail,
        "batch_id": ev.batch_id,
        "recorded_at": iso(ev.recorded_at),
        "prev_hash": ev.prev_hash,
        "record_hash": ev.record_hash,
    }


# ---- chat settings and the audit log ----

SETTING_FIELDS = (
    "mode",
    "thresholds",
    "strike_limit",
    "strike_window_seconds",
    "mute_seconds",
    "ban_on_limit",
    "report_chat_id",
    "retention_days",
    "language",
    "trusted_user_ids",
)


async def get_chat_settings(
    *, session: AsyncSession, chat_id: int, default_mode: str = "enforce"
) -> ChatSettings:
    """The chat's settings, created with defaults if absent (safe when two updates race to create)."""
    if default_mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    settings = await session.get(ChatSettings, chat_id)
    if settings is not None:
        return settings
    now = utcnow()
    values = {
        "chat_id": chat_id,
        "mode": default_mode,
        "thresholds": {},
        "strike_limit": 3,
        "strike_window_seconds": 86400,
        "mute_seconds": 3600,
        "ban_on_limit": False,
        "report_chat_id": None,
        "retention_days": DEFAULT_RETENTION_DAYS,
        "language": "zh",
        "trusted_user_ids": [],
        "created_at": now,
        "updated_at": now,
    }
    if await _dialect(session) == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert  # type: ignore[assignment]
    await session.execute(dialect_insert(table_of(ChatSettings)).values(**values).on_conflict_do_nothing())
    settings = await session.get(ChatSettings, chat_id, populate_existing=True)
    assert settings is not None
    return settings


def _check_setting(name: str, value: Any) -> Any:
    def positive_int(v: Any) -> int:
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ValueError(f"{name} must be a non-negative int, got {v!r}")
        return v

    if name == "mode":
        if value not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {value!r}")
    elif name == "language":
        if value not in LANGUAGES:
            raise ValueError(f"language must be one of {LANGUAGES}, got {value!r}")
    elif name == "thresholds":
        if not isinstance(value, Mapping):
            raise ValueError("thresholds must be a mapping {category: float}")
        out = {}
        for k, v in value.items():
            f = float(v)
            if not 0.0 <= f <= 1.0:
                raise ValueError(f"threshold for {k} must be within 0..1, got {v!r}")
            out[str(k)] = f
        return out
    elif name in ("strike_limit", "strike_window_seconds", "mute_seconds"):
        return positive_int(value)
    elif name == "retention_days":
        if positive_int(value) < 1:
            raise ValueError("retention_days must be at least 1")
    elif name == "ban_on_limit":
        return bool(value)
    elif name == "report_chat_id":
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise ValueError("report_chat_id must be an int or None")
    elif name == "trusted_user_ids":
        ids = list(value)
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise ValueError("trusted_user_ids must be a list of ints")
        return sorted(set(ids))
    return value


async def update_chat_settings(
    *, session: AsyncSession, chat_id: int, actor_id: int | None, **changes: Any
) -> ChatSettings:
    """Change some settings of a chat; writes an audit row with the old and new values."""
    unknown = set(changes) - set(SETTING_FIELDS)
    if unknown:
        raise ValueError(f"unknown chat settings: {sorted(unknown)}; known: {list(SETTING_FIELDS)}")
    checked = {name: _check_setting(name, value) for name, value in changes.items()}
    settings = await get_chat_settings(session=session, chat_id=chat_id)
    diff = {}
    for name, value in checked.items():
        old = getattr(settings, name)
        if old != value:
            diff[name] = {"old": old, "new": value}
            setattr(settings, name, value)
    settings.updated_at = utcnow()
    await log_admin_action(session=session, chat_id=chat_id, actor_id=actor_id, command="settings", args=diff)
    await session.flush()
    return settings


async def log_admin_action(
    *, session: AsyncSession, chat_id: int | None, actor_id: int | None, command: str, args: Any = None
) -> AuditLog:
    """Append one row to the audit log (who, what, when, arguments)."""
    row = AuditLog(chat_id=chat_id, actor_id=actor_id, command=command, args=args, created_at=utcnow())
    session.add(row)
    await session.flush()
    return row


async def add_training_example(
    *,
    session: AsyncSession,
    text: str,
    label: str,
    actor_id: int | None,
    chat_id: int | None = None,
    incident_id: int | None = None,
) -> TrainingExample:
    """Keep an admin's correction as a training example."""
    if not isinstance(text, str) or not isinstance(label, str) or not label:
        raise ValueError("text must be a str and label a non-empty str")
    row = TrainingExample(
        text=text,
        label=label,
        actor_id=actor_id,
        chat_id=chat_id,
        incident_id=incident_id,
        created_at=utcnow(),
    )
    session.add(row)
    await session.flush()
    return row


async def list_training_examples(
    *, session: AsyncSession, since: datetime | None = None
) -> list[TrainingExample]:
    """Training examples, oldest first."""
    q = select(TrainingExample).order_by(TrainingExample.id)
    if since is not None:
        q = q.where(TrainingExample.created_at >= as_utc(since))
    return list((await session.scalars(q)).all())


# ---- strikes ----


async def add_strike(
    *, session: AsyncSession, chat_id: int, user_id: int, incident_id: int | None, window: timedelta
) -> int:
    """Record a strike (at most one per incident); returns the user's strikes in this chat within `window`."""
    now = utcnow()
    exists = incident_id is not None and (
        await session.scalar(select(Strike.id).where(Strike.incident_id == incident_id))
    )
    if not exists:
        session.add(Strike(chat_id=chat_id, user_id=user_id, incident_id=incident_id, created_at=now))
        await session.flush()
    count = await session.scalar(
        select(func.count(Strike.id)).where(
            Strike.chat_id == chat_id, Strike.user_id == user_id, Strike.created_at >= now - window
        )
    )
    return int(count or 0)


async def remove_strike(*, session: AsyncSession, incident_id: int) -> int:
    """Remove the strike an incident gave (e.g. it was a false positive); returns how many were removed."""
    strikes = (await session.scalars(select(Strike).where(Strike.incident_id == incident_id))).all()
    for strike in strikes:
        await session.delete(strike)
    await session.flush()
    return len(strikes)


# ---- reading ----


async def get_incident(*, session: AsyncSession, incident_id: int) -> Incident | None:
    """One incident by id, with its current state."""
    return await session.get(Incident, incident_id)


async def find_incident(
    *, session: AsyncSession, chat_id: int, message_id: int, edit_date: datetime | None = None
) -> Incident | None:
    """The incident recorded for a message (the original, or the given edit)."""
    key = _epoch_micros(edit_date) if edit_date is not None else 0
    return await _find_incident(session, chat_id, message_id, key)


async def list_incidents(
    *, session: AsyncSession, chat_id: int | None, limit: int = 50, before_id: int | None = None
) -> list[Incident]:
    """Newest incidents first (all chats when chat_id is None); page with before_id."""
    q = select(Incident).order_by(Incident.id.desc()).limit(limit)
    if chat_id is not None:
        q = q.where(Incident.chat_id == chat_id)
    if before_id is not None:
        q = q.where(Incident.id < before_id)
    return list((await session.scalars(q)).unique().all())


async def list_pending_review(
    *, session: AsyncSession, chat_id: int | None, limit: int = 100
) -> list[Incident]:
    """Incidents kept for review and not reviewed yet, oldest first."""
    q = (
        select(Incident)
        .join(IncidentState, IncidentState.incident_id == Incident.id)
        .where(IncidentState.action_taken == "kept_for_review", IncidentState.review_result.is_(None))
        .order_by(Incident.id)
        .limit(limit)
    )
    if chat_id is not None:
        q = q.where(Incident.chat_id == chat_id)
    return list((await session.scalars(q)).unique().all())


async def list_pending_reports(
    *, session: AsyncSession, chat_id: int | None, limit: int = 1000
) -> list[Incident]:
    """Incidents queued for a report and not yet in a batch, oldest first."""
    q = (
        select(Incident)
        .join(IncidentState, IncidentState.incident_id == Incident.id)
        .where(IncidentState.report_status == "queued")
        .order_by(Incident.id)
        .limit(limit)
    )
    if chat_id is not None:
        q = q.where(Incident.chat_id == chat_id)
    return list((await session.scalars(q)).unique().all())


async def list_events(*, session: AsyncSession, incident_id: int) -> list[IncidentEvent]:
    """An incident's events in the order they were appended."""
    q = select(IncidentEvent).where(IncidentEvent.incident_id == incident_id).order_by(IncidentEvent.seq)
    return list((await session.scalars(q)).all())


async def list_audit_log(*, session: AsyncSession, chat_id: int | None, limit: int = 100) -> list[AuditLog]:
    """Newest audit rows first."""
    q = select(AuditLog).order_by(AuditLog.id.desc()).limit(limit)
    if chat_id is not None:
        q = q.where(AuditLog.chat_id == chat_id)
    return list((await session.scalars(q)).all())


async def incident_stats(
    *, session: AsyncSession, chat_id: int | None, since: datetime
) -> dict[tuple[str, str | None], int]:
    """{(category, action_taken): count} of incidents received since `since`."""
    q = (
        select(Incident.category, IncidentState.action_taken, func.count(Incident.id))
        .outerjoin(IncidentState, IncidentState.incident_id == Incident.id)
        .where(Incident.received_at >= as_utc(since))
        .group_by(Incident.category, IncidentState.action_taken)
    )
    if chat_id is not None:
        q = q.where(Incident.chat_id == chat_id)
    return {(cat, action): int(n) for cat, action, n in (await session.execute(q)).all()}


def incident_fields(
    inc: Incident | Mapping[str, Any], state: IncidentState | Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """An incident in export form (times as ISO text), with its current state."""
    get = inc.get if isinstance(inc, Mapping) else lambda k: getattr(inc, k)
    row: dict[str, Any] = {"record_type": "incident", "incident_id": get("id")}
    for name in (
        "chat_id", "seq", "message_id", "chat_title", "thread_id", "sender_id", "sender_username",
        "sender_name", "sender_chat_id", "message_date", "received_at", "is_edit", "edit_date", "text",
        "hidden_links", "media_kind", "media_file_unique_id", "forward_origin", "category", "score",
        "suggested_action", "model_version", "reasons", "contacts", "decided_by", "recorded_at",
        "prev_hash", "record_hash",
    ):  # fmt: skip
        value = get(name)
        row[name] = iso(value) if isinstance(value, datetime) else value
    if state is not None:
        sget = state.get if isinstance(state, Mapping) else lambda k: getattr(state, k)
        for name in ("action_taken", "review_result", "report_status", "legal_hold"):
            row[name] = sget(name)
    return row
