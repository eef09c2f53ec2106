"""The scheduled jobs, each run directly (no clock, no sleeping) against the real application."""

from __future__ import annotations

import datetime as dt

from botenv import (
    GROUP,
    OWNER,
    REPORT_CHAT,
    SPAMMER,
    BotEnv,
    chat_of,
)
from sqlalchemy import update

import storage
from bot import jobs
from storage.models import Incident

SPAM = "出冰，货真价实，量大从优，需要的加V：bing8888"
SPAM2 = "澳门首家线上赌场，百家乐真人荷官，注册即送88元彩金，日赢万元"


async def test_jobs_are_scheduled(env: BotEnv) -> None:
    assert env.app.job_queue is not None
    names = {job.name for job in env.app.job_queue.jobs()}
    assert {"daily_digest", "retention_purge", "admin_refresh"} <= names


async def test_daily_digest_sends_counts_and_the_days_batch(env: BotEnv) -> None:
    await env.send("/reportchat -1001234567890", sender=OWNER, chat_id=REPORT_CHAT)
    await env.send(SPAM, sender=SPAMMER)
    await env.send(SPAM2, sender=SPAMMER)
    env.emu.clear_calls()

    result = await jobs.job_daily_digest(env.context())

    (doc,) = env.calls("sendDocument")
    assert chat_of(doc) == REPORT_CHAT
    assert result.batches[GROUP] is not None and result.delivered[GROUP]
    digest = env.texts_to(REPORT_CHAT)[-1]
    assert "清朗日报" in digest and "涉毒：1（已删除 1）" in digest and "赌博：1" in digest
    assert f"#{result.batches[GROUP]}：2 条" in digest
    async with env.services.db.sessionmaker() as session:
        rows = await storage.list_incidents(session=session, chat_id=GROUP)
    assert {r.report_status for r in rows} == {"reported"}

    env.emu.clear_calls()
    again = await jobs.job_daily_digest(env.context())  # nothing new queued: counts, no file
    assert again.batches[GROUP] is None
    assert not env.calls("sendDocument")
    assert "今日没有新的待报告记录" in env.texts_to(REPORT_CHAT)[-1]
    assert env.errors == []


async def test_digest_skips_chats_without_a_report_chat(env: BotEnv) -> None:
    await env.send(SPAM, sender=SPAMMER)
    env.emu.clear_calls()
    result = await jobs.job_daily_digest(env.context())
    assert result.batches == {} and not env.emu.calls()


async def test_retention_purge_removes_expired_incidents(env: BotEnv) -> None:
    await env.send("/retention 1", sender=OWNER)
    await env.send(SPAM, sender=SPAMMER)
    await env.send("/submit", sender=OWNER)  # queued incidents are never purged: report it first
    await env.send(SPAM2, sender=SPAMMER)
    async with env.services.db.sessionmaker.begin() as session:
        first = min(i.id for i in await storage.list_incidents(session=session, chat_id=GROUP))
        old = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
        await session.execute(update(Incident).where(Incident.id == first).values(recorded_at=old))

    result = await jobs.job_retention_purge(env.context())

    assert result.incidents == 1
    async with env.services.db.sessionmaker() as session:
        left = await storage.list_incidents(session=session, chat_id=GROUP)
    assert [i.id for i in left] == [first + 1]
    assert env.errors == []


async def test_admin_refresh_fetches_expired_lists_only(env: BotEnv) -> None:
    await env.send("/status", sender=OWNER)  # the chat is known and its admins cached
    env.emu.clear_calls()
    assert await jobs.job_refresh_admins(env.context()) == 1
    assert not env.calls("getChatAdministrators")  # still fresh
    env.services.admins.invalidate()
    await jobs.job_refresh_admins(env.context())
    assert [chat_of(c) for c in env.calls("getChatAdministrators")] == [GROUP]
