"""`append_events`: the bot's outcome path, one transaction (raw on SQLite files and PostgreSQL)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from storage_helpers import CHAT, T0, new_incident

import storage
from storage.models import IncidentEvent, IncidentState, Strike
from storage.retention import purge_chat


async def _states(db: storage.Database, ids: list[int]) -> list[tuple[object, ...]]:
    async with db.sessionmaker() as s:
        out = []
        for i in ids:
            st = await s.get(IncidentState, i)
            assert st is not None
            out.append((st.action_taken, st.action_detail, st.report_status, st.review_result, st.legal_hold))
    return out


async def test_append_events_matches_append_event(db: storage.Database) -> None:
    a, _ = await storage.record_incident(sessionmaker=db.sessionmaker, incident=new_incident(1))
    b, _ = await storage.record_incident(sessionmaker=db.sessionmaker, incident=new_incident(2))
    events = [
        ("action", "deleted", "model", {"notice_message_id": 7, "名": "零"}),
        ("report", "queued", "model", None),
    ]
    strikes = await storage.append_events(
        sessionmaker=db.sessionmaker, incident_id=a.id, events=events, strike=(42, 3600.0)
    )
    async with db.sessionmaker.begin() as s:
        for kind, value, actor, detail in events:
            await storage.append_event(
                session=s, incident_id=b.id, kind=kind, value=value, actor=actor, detail=detail
            )
    assert strikes == 1
    sa, sb = await _states(db, [a.id, b.id])
    assert sa == sb and sa[0] == "deleted" and sa[2] == "queued"
    # idempotent strike, counted in the window; review and hold update the same state row
    again = await storage.append_events(
        sessionmaker=db.sessionmaker,
        incident_id=a.id,
        events=[("review", "confirmed", "admin:1", None), ("legal_hold", "on", "admin:1", "case 9")],
        strike=(42, 3600.0),
    )
    assert again == 1
    (st,) = await _states(db, [a.id])
    assert st == ("deleted", sa[1], "queued", "confirmed", True)
    async with db.sessionmaker() as s:
        seqs = (await s.scalars(select(IncidentEvent.seq).where(IncidentEvent.chat_id == CHAT))).all()
    assert sorted(seqs) == [3, 4, 5, 6, 7, 8]
    assert (await storage.verify_database(db.engine)).ok
    # the next incident continues the chain the fast path advanced
    c, _ = await storage.record_incident(sessionmaker=db.sessionmaker, incident=new_incident(3))
    assert c.seq == 9
    assert (await storage.verify_database(db.engine)).ok


async def test_append_events_concurrent_with_records_keeps_one_chain(db: storage.Database) -> None:
    ids = [
        (await storage.record_incident(sessionmaker=db.sessionmaker, incident=new_incident(m)))[0].id
        for m in range(1, 6)
    ]
    await asyncio.gather(
        *(
            storage.append_events(
                sessionmaker=db.sessionmaker,
                incident_id=i,
                events=[("action", "deleted", "model", None), ("report", "queued", "model", None)],
                strike=(7, 3600.0),
            )
            for i in ids
        ),
        *(
            storage.record_incident(sessionmaker=db.sessionmaker, incident=new_incident(m))
            for m in range(6, 11)
        ),
    )
    result = await storage.verify_database(db.engine)
    assert result.ok
    async with db.sessionmaker() as s:
        n = await s.scalar(select(func.count()).select_from(IncidentEvent))
    assert n == 10


async def test_append_events_rejects_unknown_values_and_incidents(db: storage.Database) -> None:
    with pytest.raises(ValueError):
        await storage.append_events(
            sessionmaker=db.sessionmaker, incident_id=1, events=[("action", "exploded", "model", None)]
        )
    with pytest.raises(LookupError):
        await storage.append_events(
            sessionmaker=db.sessionmaker, incident_id=999, events=[("action", "deleted", "model", None)]
        )


def _log_queries(db: storage.Database) -> list[str]:
    """Every statement the engine's asyncpg connections run from now on (asyncpg's query logger)."""
    from sqlalchemy import event

    queries: list[str] = []

    def on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        raw = dbapi_connection.driver_connection
        raw.remove_query_logger(_log)  # once per connection
        raw.add_query_logger(_log)

    def _log(record: Any) -> None:
        queries.append(record.query)

    event.listen(db.engine.sync_engine, "checkout", on_checkout)
    return queries


async def test_append_events_on_postgresql_is_one_statement(postgres_url: str) -> None:
    db = await storage.open_database(postgres_url)
    try:
        inc, _ = await storage.record_incident(sessionmaker=db.sessionmaker, incident=new_incident(1))
        queries = _log_queries(db)
        strikes = await storage.append_events(
            sessionmaker=db.sessionmaker,
            incident_id=inc.id,
            events=[("action", "deleted", "model", {"n": 1}), ("report", "queued", "model", None)],
            strike=(42, 3600.0),
        )
        assert strikes == 1
        await storage.append_events(
            sessionmaker=db.sessionmaker, incident_id=inc.id, events=[("action", "muted", "model", None)]
        )
        # one round trip each: no BEGIN/COMMIT, no reads of the incident, head or state
        assert len(queries) == 2, queries
        (st,) = await _states(db, [inc.id])
        assert st[0] == "muted" and st[2] == "queued"
        assert (await storage.verify_database(db.engine)).ok
    finally:
        await db.close()


async def test_append_events_after_another_process_moved_the_head(postgres_url: str) -> None:
    # Two engines stand for two workers: each one's cached chain head goes stale when the other appends.
    one = await storage.open_database(postgres_url)
    two = await storage.open_database(postgres_url)
    try:
        a, _ = await storage.record_incident(sessionmaker=one.sessionmaker, incident=new_incident(1))
        b, _ = await storage.record_incident(sessionmaker=two.sessionmaker, incident=new_incident(2))
        for db, inc in ((one, a), (two, b), (one, b), (two, a)):
            await storage.append_events(
                sessionmaker=db.sessionmaker,
                incident_id=inc.id,
                events=[("action", "deleted", "model", None)],
                strike=(7, 3600.0),
            )
        assert (await storage.verify_database(one.engine)).ok
        async with one.sessionmaker() as s:
            seqs = sorted((await s.scalars(select(IncidentEvent.seq))).all())
            strikes = await s.scalar(select(func.count()).select_from(Strike))
        assert seqs == [3, 4, 5, 6]
        assert strikes == 2  # one per incident, however often its outcome is appended
    finally:
        await one.close()
        await two.close()


async def test_append_events_to_a_purged_incident_is_refused(postgres_url: str) -> None:
    db = await storage.open_database(postgres_url)
    try:
        inc, _ = await storage.record_incident(sessionmaker=db.sessionmaker, incident=new_incident(1))
        async with db.sessionmaker.begin() as s:
            await purge_chat(session=s, chat_id=CHAT, now=T0 + timedelta(days=10_000))
        with pytest.raises(LookupError):
            await storage.append_events(
                sessionmaker=db.sessionmaker,
                incident_id=inc.id,
                events=[("action", "deleted", "model", None)],
            )
    finally:
        await db.close()


async def test_a_stale_chain_head_costs_one_retry_not_a_read(postgres_url: str) -> None:
    # The statement that finds the head moved returns the head it saw: the retry starts from there.
    one = await storage.open_database(postgres_url)
    two = await storage.open_database(postgres_url)
    try:
        a, _ = await storage.record_incident(sessionmaker=one.sessionmaker, incident=new_incident(1))
        await storage.record_incident(sessionmaker=two.sessionmaker, incident=new_incident(2))
        queries = _log_queries(one)
        await storage.append_events(
            sessionmaker=one.sessionmaker, incident_id=a.id, events=[("action", "deleted", "model", None)]
        )
        assert len(queries) == 2, queries  # the attempt from the stale head, then the retry
        await storage.record_incident(sessionmaker=two.sessionmaker, incident=new_incident(3))
        queries.clear()
        await storage.record_incident(sessionmaker=one.sessionmaker, incident=new_incident(4))
        assert len(queries) == 2, queries
        assert (await storage.verify_database(one.engine)).ok
    finally:
        await one.close()
        await two.close()
