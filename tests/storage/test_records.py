"""Recording incidents and events: durable, chained, idempotent, faithful to odd input."""

from __future__ import annotations

import asyncio
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text
from storage_helpers import CHAT, T0, new_incident, record_many

import storage
from storage.models import Incident


async def test_record_incident_round_trip(db: storage.Database) -> None:
    inc, created = await storage.record_incident(sessionmaker=db.sessionmaker, incident=new_incident(1))
    assert created and inc.id and inc.seq == 1 and inc.action_taken is None
    async with db.sessionmaker() as s:
        got = await storage.get_incident(session=s, incident_id=inc.id)
    assert got is not None
    assert got.chat_id == CHAT and got.text == "急招刷单，日结300，加V: abc1"
    assert got.message_date == T0 + timedelta(seconds=1)
    assert got.reasons["terms"][0]["term"] == "刷单"
    assert got.record_hash == inc.record_hash and got.prev_hash == storage.chain.GENESIS


async def test_same_update_twice_is_one_incident(db: storage.Database) -> None:
    first, created1 = await storage.record_incident(sessionmaker=db.sessionmaker, incident=new_incident(5))
    again, created2 = await storage.record_incident(sessionmaker=db.sessionmaker, incident=new_incident(5))
    edit_date = T0 + timedelta(minutes=3)
    edited, created3 = await storage.record_incident(
        sessionmaker=db.sessionmaker, incident=new_incident(5, is_edit=True, edit_date=edit_date)
    )
    assert (created1, created2, created3) == (True, False, True)
    assert again.id == first.id and edited.id != first.id
    async with db.sessionmaker() as s:
        assert len(await storage.list_incidents(session=s, chat_id=CHAT)) == 2
        found = await storage.find_incident(session=s, chat_id=CHAT, message_id=5, edit_date=edit_date)
    assert found is not None and found.id == edited.id


async def test_record_incidents_tells_ids_and_recording_times_without_rows(db: storage.Database) -> None:
    """A batch's incidents come back as (id, created, recorded_at), a repeat as the first one's."""
    first = await storage.record_incidents(
        sessionmaker=db.sessionmaker, incidents=[new_incident(21), new_incident(22)]
    )
    assert [type(r) for r in first] == [storage.RecordedIncident] * 2
    assert [r.created for r in first] == [True, True] and first[0].id != first[1].id
    again = await storage.record_incidents(
        sessionmaker=db.sessionmaker, incidents=[new_incident(22), new_incident(23)]
    )
    assert (again[0].id, again[0].created, again[1].created) == (first[1].id, False, True)
    async with db.sessionmaker() as s:
        rows = {i.id: i for i in await storage.list_incidents(session=s, chat_id=CHAT)}
    for r in (*first, *again):
        stored = rows[r.id].recorded_at
        assert r.recorded_at.replace(tzinfo=None) == stored.replace(tzinfo=None), "the stored moment"


async def test_concurrent_duplicate_deliveries_yield_one_row(db: storage.Database) -> None:
    results = await asyncio.gather(
        *(storage.record_incident(sessionmaker=db.sessionmaker, incident=new_incident(9)) for _ in range(4))
    )
    assert len({inc.id for inc, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert (await storage.verify_database(db.engine)).ok


@pytest.mark.parametrize(
    "text_value",
    [
        "出\x00冰\x00 加V",  # NUL: PostgreSQL text rejects it; stored escaped, read back exactly
        "\ue000json:looks like our escape marker",
        "零宽\u200b分隔 ｆｕｌｌ　ｗｉｄｔｈ 🍀🎰 \u202eRTL",
        "lone surrogate \ud800 half",
        "长" * 100_000,  # far beyond Telegram's 4,096: stored whole
        "",
        None,
    ],
    ids=["nul", "marker", "unicode", "surrogate", "huge", "empty", "none"],
)
async def test_odd_text_is_stored_faithfully(db: storage.Database, text_value: str | None) -> None:
    inc, _ = await storage.record_incident(
        sessionmaker=db.sessionmaker,
        incident=new_incident(
            1,
            text=text_value,
            sender_id=None,
            sender_username=None,
            sender_name="\x00匿名",
            reasons={"t": "\x00"},
        ),
    )
    async with db.sessionmaker() as s:
        got = await s.get(Incident, inc.id)
    assert got is not None
    assert got.text == text_value and got.sender_name == "\x00匿名" and got.reasons == {"t": "\x00"}
    assert got.sender_id is None
    assert (await storage.verify_database(db.engine)).ok


async def test_bad_input_is_refused_before_anything_is_written(db: storage.Database) -> None:
    with pytest.raises(ValueError, match="chat_id"):
        await storage.record_incident(sessionmaker=db.sessionmaker, incident=new_incident(1, chat_id="x"))
    with pytest.raises(ValueError, match="score"):
        await storage.record_incident(
            sessionmaker=db.sessionmaker, incident=new_incident(1, score=float("nan"))
        )
    async with db.sessionmaker() as s:
        assert await storage.list_incidents(session=s, chat_id=None) == []


async def test_events_update_state_and_queries(db: storage.Database) -> None:
    ids = await record_many(db, 3)
    async with db.sessionmaker.begin() as s:
        await storage.append_event(
            session=s, incident_id=ids[0], kind="action", value="deleted", actor="model"
        )
        await storage.append_event(
            session=s, incident_id=ids[1], kind="action", value="kept_for_review", actor="model"
        )
        await storage.append_event(
            session=s,
            incident_id=ids[2],
            kind="action",
            value="delete_failed",
            actor="model",
            detail="BadRequest",
        )
        with pytest.raises(ValueError, match="unknown action value"):
            await storage.append_event(session=s, incident_id=ids[0], kind="action", value="nuked", actor="x")
    async with db.sessionmaker() as s:
        pending = await storage.list_pending_review(session=s, chat_id=CHAT)
        assert [p.id for p in pending] == [ids[1]]
        stats = await storage.incident_stats(session=s, chat_id=CHAT, since=T0 - timedelta(days=1))
        assert stats == {
            ("fraud", "deleted"): 1,
            ("fraud", "kept_for_review"): 1,
            ("fraud", "delete_failed"): 1,
        }
        events = await storage.list_events(session=s, incident_id=ids[2])
        assert [(e.kind, e.value, e.detail, e.seq) for e in events] == [
            ("action", "delete_failed", "BadRequest", 6)
        ]
    async with db.sessionmaker.begin() as s:
        await storage.append_event(
            session=s, incident_id=ids[1], kind="review", value="false_positive", actor="admin:42"
        )
    async with db.sessionmaker() as s:
        assert await storage.list_pending_review(session=s, chat_id=CHAT) == []
        got = await storage.get_incident(session=s, incident_id=ids[1])
        assert (
            got is not None
            and got.review_result == "false_positive"
            and got.action_taken == "kept_for_review"
        )
    assert (await storage.verify_database(db.engine)).ok


async def test_chat_settings_created_updated_and_audited(db: storage.Database) -> None:
    async with db.sessionmaker.begin() as s:
        settings = await storage.get_chat_settings(session=s, chat_id=CHAT, default_mode="dry_run")
        assert settings.mode == "dry_run" and settings.retention_days == 180 and settings.language == "zh"
        await storage.update_chat_settings(
            session=s,
            chat_id=CHAT,
            actor_id=42,
            mode="enforce",
            thresholds={"fraud": 0.7},
            trusted_user_ids=[5, 3],
        )
        with pytest.raises(ValueError, match="mode"):
            await storage.update_chat_settings(session=s, chat_id=CHAT, actor_id=42, mode="nuke")
    async with db.sessionmaker() as s:
        settings = await storage.get_chat_settings(session=s, chat_id=CHAT)
        assert settings.mode == "enforce" and settings.thresholds == {"fraud": 0.7}
        assert settings.trusted_user_ids == [3, 5]
        audit = await storage.list_audit_log(session=s, chat_id=CHAT)
        assert audit[0].command == "settings" and audit[0].actor_id == 42
        assert audit[0].args["mode"] == {"old": "dry_run", "new": "enforce"}


async def test_strikes_count_within_window(db: storage.Database) -> None:
    ids = await record_many(db, 3)
    async with db.sessionmaker.begin() as s:
        counts = [
            await storage.add_strike(
                session=s, chat_id=CHAT, user_id=1, incident_id=i, window=timedelta(hours=1)
            )
            for i in ids
        ]
        again = await storage.add_strike(
            session=s, chat_id=CHAT, user_id=1, incident_id=ids[0], window=timedelta(hours=1)
        )
        assert counts == [1, 2, 3] and again == 3
        assert await storage.remove_strike(session=s, incident_id=ids[0]) == 1
        assert (
            await storage.add_strike(
                session=s, chat_id=CHAT, user_id=1, incident_id=None, window=timedelta(hours=1)
            )
            == 3
        )
        ex = await storage.add_training_example(
            session=s, text="正常聊天", label="ok", actor_id=42, chat_id=CHAT
        )
        assert ex.id


async def test_sqlite_file_is_private_and_tuned(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "evidence.db"
    db = await storage.open_database(f"sqlite+aiosqlite:///{path}")
    try:
        await record_many(db, 1)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        async with db.engine.connect() as conn:
            assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
            assert (await conn.execute(text("PRAGMA synchronous"))).scalar() == 2  # FULL
            assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar() == 1
            assert (await conn.execute(text("PRAGMA busy_timeout"))).scalar() == 30000
    finally:
        await db.close()
    for suffix in ("-wal", "-shm"):
        wal = Path(str(path) + suffix)
        if wal.exists():
            assert stat.S_IMODE(os.stat(wal).st_mode) == 0o600


async def test_telegram_ids_beyond_32_bits(db: storage.Database) -> None:
    big = -1009876543210
    inc, _ = await storage.record_incident(
        sessionmaker=db.sessionmaker,
        incident=new_incident(2**40, chat_id=big, sender_id=2**45, thread_id=2**33),
    )
    async with db.sessionmaker() as s:
        got = (await s.scalars(select(Incident).where(Incident.chat_id == big))).one()
    assert (got.message_id, got.sender_id, got.thread_id) == (2**40, 2**45, 2**33)
    assert got.received_at.tzinfo is not None and got.received_at == inc.received_at
    assert isinstance(datetime.now(UTC) - got.recorded_at, timedelta)


async def test_a_short_lock_timeout_gives_up_on_a_locked_sqlite_file(sqlite_url: str, tmp_path: Path) -> None:
    import sqlite3

    from storage.spool import Spool, replay_spool

    db = await storage.open_database(sqlite_url)
    try:
        first, _ = await storage.record_incident(sessionmaker=db.sessionmaker, incident=new_incident(1))
        spool = Spool(tmp_path / "spool")
        spool.add_incident(new_incident(2))
        holder = sqlite3.connect(sqlite_url.split("///", 1)[1], isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock (a long purge, a backup)
        try:
            for attempt in (
                storage.record_incident(
                    sessionmaker=db.sessionmaker, incident=new_incident(3), lock_timeout=0.2
                ),
                storage.append_events(
                    sessionmaker=db.sessionmaker,
                    incident_id=first.id,
                    events=[("action", "deleted", "model", None)],
                    lock_timeout=0.2,
                ),
                replay_spool(spool=spool, sessionmaker=db.sessionmaker, lock_timeout=0.2),
            ):
                started = asyncio.get_running_loop().time()
                with pytest.raises(sqlite3.OperationalError, match="locked"):
                    await attempt
                assert asyncio.get_running_loop().time() - started < 5, "well before the 30 s busy timeout"
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        # Free again: the same calls go through, and the default wait is back for other callers.
        assert await replay_spool(spool=spool, sessionmaker=db.sessionmaker, lock_timeout=0.2) == 1
        _, created = await storage.record_incident(sessionmaker=db.sessionmaker, incident=new_incident(3))
        assert created
        writer = storage.fastpath.sqlite_writer(db.engine)
        assert writer is not None and writer.busy_ms == 30000
        assert (await storage.verify_database(db.engine)).ok
    finally:
        await db.close()


async def test_no_sqlite_writer_for_another_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A PostgreSQL URL's database name is not a SQLite file: spool replay on PostgreSQL once asked for
    a SQLite writer and created an empty file named after the database in the working directory."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from storage import fastpath

    monkeypatch.chdir(tmp_path)
    engine = create_async_engine("postgresql+asyncpg://nobody@127.0.0.1:9/qinglang_nowhere")
    try:
        assert fastpath.sqlite_writer(engine) is None
    finally:
        await engine.dispose()
    assert not (tmp_path / "qinglang_nowhere").exists()
