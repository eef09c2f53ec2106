"""Tamper evidence: a changed, deleted or reordered record is named by verify; purges keep it green."""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from storage_helpers import CHAT, new_incident, record_many

import storage
from storage import chain


async def _with_events(db: storage.Database, n: int = 6) -> list[int]:
    ids = await record_many(db, n)
    async with db.sessionmaker.begin() as s:
        for i in ids:
            await storage.append_event(
                session=s, incident_id=i, kind="action", value="deleted", actor="model"
            )
    return ids


async def _sql(db: storage.Database, sql: str, **params: object) -> None:
    async with db.engine.begin() as conn:
        await conn.execute(text(sql), params)


async def test_intact_chain_verifies(db: storage.Database) -> None:
    await _with_events(db)
    result = await storage.verify_database(db.engine)
    assert result.ok, result.problems
    assert result.records == 12 and result.chats == 1


async def test_tampered_row_is_named(db: storage.Database) -> None:
    ids = await _with_events(db)
    await _sql(db, "UPDATE incidents SET text = 'harmless' WHERE id = :id", id=ids[2])
    result = await storage.verify_database(db.engine)
    assert not result.ok
    assert f"incident {ids[2]}" in result.problems[0] and "altered" in result.problems[0]


async def test_tampered_event_is_named(db: storage.Database) -> None:
    ids = await _with_events(db)
    await _sql(db, "UPDATE incident_events SET value = 'none' WHERE incident_id = :id", id=ids[1])
    result = await storage.verify_database(db.engine)
    assert not result.ok and "event action=none" in result.problems[0]


async def test_deleted_row_is_detected(db: storage.Database) -> None:
    ids = await _with_events(db)
    await _sql(db, "DELETE FROM incident_events WHERE incident_id = :id", id=ids[3])
    result = await storage.verify_database(db.engine)
    assert not result.ok and "missing: records deleted" in result.problems[0]


async def test_deleted_last_row_is_detected(db: storage.Database) -> None:
    ids = await _with_events(db)
    await _sql(db, "DELETE FROM incident_events WHERE incident_id = :id", id=ids[-1])
    result = await storage.verify_database(db.engine)
    assert not result.ok and "removed from the end" in result.problems[0]


async def test_reordered_rows_are_detected(db: storage.Database) -> None:
    ids = await record_many(db, 4)
    # Swap the chain positions of two incidents (through a free seq, the pair is unique).
    await _sql(db, "UPDATE incidents SET seq = -1 WHERE id = :id", id=ids[1])
    await _sql(db, "UPDATE incidents SET seq = 2 WHERE id = :id", id=ids[2])
    await _sql(db, "UPDATE incidents SET seq = 3 WHERE id = :id", id=ids[1])
    result = await storage.verify_database(db.engine)
    assert not result.ok and "seq 2" in result.problems[0]


async def test_one_chat_can_be_verified_alone(db: storage.Database) -> None:
    await record_many(db, 2)
    other = await record_many(db, 2, chat_id=-100555)
    await _sql(db, "UPDATE incidents SET category = 'ok' WHERE id = :id", id=other[0])
    assert (await storage.verify_database(db.engine, chat_id=CHAT)).ok
    assert not (await storage.verify_database(db.engine, chat_id=-100555)).ok


async def test_purge_keeps_chain_verifiable_and_spares_hold_and_queue(db: storage.Database) -> None:
    ids = await _with_events(db, 8)
    async with db.sessionmaker.begin() as s:
        await storage.append_event(
            session=s, incident_id=ids[2], kind="legal_hold", value="on", actor="admin:1"
        )
        await storage.append_event(
            session=s, incident_id=ids[5], kind="report", value="queued", actor="model"
        )
        settings = await storage.get_chat_settings(session=s, chat_id=CHAT)
        settings.retention_days = 30
    now = storage.records.utcnow() + timedelta(days=31)
    async with db.sessionmaker.begin() as s:
        result = await storage.purge_expired(session=s, now=now)
    assert result.incidents == 6 and result.events == 6 and result.anchors >= 2
    async with db.sessionmaker() as s:
        left = {i.id for i in await storage.list_incidents(session=s, chat_id=CHAT)}
        audit = await storage.list_audit_log(session=s, chat_id=CHAT)
    assert left == {ids[2], ids[5]}
    assert audit[0].command == "purge" and audit[0].args["incidents"] == 6
    verified = await storage.verify_database(db.engine)
    assert verified.ok, verified.problems
    # the chain goes on after the purge
    await storage.record_incident(sessionmaker=db.sessionmaker, incident=new_incident(100))
    assert (await storage.verify_database(db.engine)).ok
    # and a second purge (hold lifted) still verifies
    async with db.sessionmaker.begin() as s:
        await storage.append_event(
            session=s, incident_id=ids[2], kind="legal_hold", value="off", actor="admin:1"
        )
    async with db.sessionmaker.begin() as s:
        await storage.purge_expired(session=s, now=now)
    verified = await storage.verify_database(db.engine)
    assert verified.ok, verified.problems


async def test_two_writers_on_one_chat_never_fork_the_chain(db: storage.Database, database_url: str) -> None:
    other = await storage.open_database(database_url)
    try:

        async def writer(database: storage.Database, start: int) -> None:
            for i in range(start, start + 300):
                await storage.record_incident(sessionmaker=database.sessionmaker, incident=new_incident(i))
                if i % 10 == 0:
                    async with database.sessionmaker.begin() as s:
                        inc = await storage.find_incident(session=s, chat_id=CHAT, message_id=i)
                        assert inc is not None
                        await storage.append_event(
                            session=s, incident_id=inc.id, kind="action", value="deleted", actor="model"
                        )

        # overlapping ranges: 50 messages are delivered to both writers
        await asyncio.gather(writer(db, 1), writer(other, 251))
    finally:
        await other.close()
    async with db.sessionmaker() as s:
        incidents = await storage.list_incidents(session=s, chat_id=CHAT, limit=10_000)
    assert len(incidents) == 550 and len({i.message_id for i in incidents}) == 550
    result = await storage.verify_database(db.engine)
    assert result.ok, result.problems
    assert result.records == 550 + 60  # 30 events per writer, the shared ones twice


# Hashes computed before record_hash resolved each field's kind once (the chain format must not move):
# odd values on purpose (a zoned time, text times, "" for numbers, a NUL, a bool as text).
GOLDEN_INCIDENT = {
    "chat_id": -1001000000001, "seq": 7, "message_id": 42, "chat_title": "测试群", "thread_id": None,
    "sender_id": 1234, "sender_username": None, "sender_name": "小王\x00", "sender_chat_id": "",
    "message_date": datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=8))),
    "received_at": "2026-01-02T03:04:05.5+00:00", "is_edit": "yes", "edit_date": None,
    "text": "出冰 加V bing8888", "hidden_links": ["https://t.me/x"], "media_kind": None,
    "forward_origin": "", "category": "drug", "score": "0.93", "suggested_action": "delete",
    "model_version": "v1", "reasons": {"terms": [{"term": "出冰", "start": 0, "end": 2}]},
    "contacts": [], "decided_by": "model", "recorded_at": datetime(2026, 1, 2, 3, 4, 6),
}  # fmt: skip
GOLDEN_EVENT = {
    "chat_id": -1001000000001, "seq": 8, "incident_id": 3, "message_id": 42, "event_kind": "action",
    "event_value": "deleted", "event_actor": "model", "event_detail": None, "batch_id": "",
    "recorded_at": datetime(2026, 1, 2, 3, 4, 7, tzinfo=UTC),
}  # fmt: skip


def _reference_hash(record_type: str, row: dict[str, Any], prev_hash: str) -> str:
    """record_hash as first written: `_canonical` per value, kind looked up per value."""
    payload = {name: chain._canonical(chain.KINDS[name], row.get(name)) for name in chain.HASHED[record_type]}
    payload.update(record_type=record_type, prev_hash=prev_hash)
    data = json.dumps(payload, sort_keys=True, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(data.encode("ascii")).hexdigest()


def test_record_hash_is_unchanged() -> None:
    assert (
        chain.record_hash("incident", GOLDEN_INCIDENT, chain.GENESIS)
        == "a4bbc0bc0df340197bd283b0b93915c7367f1ee64e5b69c8fa0460c6fa54b259"
    )
    assert (
        chain.record_hash("event", GOLDEN_EVENT, "ab" * 32)
        == "2b03db28af66384326add0ac3600eb7788f3c25faefb617658cbd44670638ae8"
    )


_VALUES = st.one_of(
    st.none(),
    st.just(""),
    st.text(max_size=8),
    st.integers(-(2**63), 2**63),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.datetimes(timezones=st.one_of(st.none(), st.just(UTC), st.just(timezone(timedelta(hours=8))))),
    st.lists(st.text(max_size=4), max_size=3),
)


@settings(max_examples=300, deadline=None)
@given(
    record_type=st.sampled_from(["incident", "event"]),
    values=st.lists(_VALUES, min_size=30, max_size=30),
)
def test_record_hash_equals_the_reference(record_type: str, values: list[Any]) -> None:
    row = dict(zip(chain.HASHED[record_type], values, strict=False))
    try:
        expected: str | type[Exception] = _reference_hash(record_type, row, chain.GENESIS)
    except (TypeError, ValueError) as exc:  # a value its kind cannot take: the same error either way
        expected = type(exc)
    if isinstance(expected, str):
        assert chain.record_hash(record_type, row, chain.GENESIS) == expected
    else:
        with pytest.raises(expected):
            chain.record_hash(record_type, row, chain.GENESIS)
