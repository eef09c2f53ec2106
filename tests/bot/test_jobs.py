"""The scheduled jobs, each run directly (no clock, no sleeping) against the real application."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from botenv import (
    GROUP,
    OWNER,
    REPORT_CHAT,
    SPAMMER,
    BotEnv,
    chat_of,
    make_emulator,
    running_env,
)
from sqlalchemy import update

import storage
from bot import jobs
from bot.notices import job_remove_notice, job_resume_notice_removals
from storage.models import Incident
from storage.notices import PendingDeletion, list_pending_deletions

SPAM = "出冰，货真价实，量大从优，需要的加V：bing8888"
SPAM2 = "澳门首家线上赌场，百家乐真人荷官，注册即送88元彩金，日赢万元"


async def test_jobs_are_scheduled(env: BotEnv) -> None:
    assert env.app.job_queue is not None
    names = {job.name for job in env.app.job_queue.jobs()}
    assert {"daily_digest", "retention_purge", "admin_refresh", "resume_notice_removals"} <= names


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


async def pending_notices(env: BotEnv) -> list[tuple[int, int, float]]:
    """(chat, message, seconds until due) of every stored notice deletion."""
    now = dt.datetime.now(dt.UTC)
    async with env.services.db.sessionmaker() as session:
        rows = await list_pending_deletions(session=session)
    return [(r.chat_id, r.message_id, (r.delete_at - now).total_seconds()) for r in rows]


def notice_job(env: BotEnv, message_id: int) -> tuple[object, float]:
    """The scheduled removal of a notice, and the seconds until it runs."""
    (job,) = env.app.job_queue.get_jobs_by_name(f"notice:{GROUP}:{message_id}")
    delay = (job.job.trigger.run_date - dt.datetime.now(dt.UTC)).total_seconds()
    return job, delay


async def test_a_notice_is_stored_until_it_is_removed(env: BotEnv) -> None:
    await env.send(SPAM, sender=SPAMMER)
    notice = env.emu.sent(GROUP)[-1]["message_id"]
    ((chat, message, due),) = await pending_notices(env)
    assert (chat, message) == (GROUP, notice) and due == pytest.approx(60, abs=5)
    job, delay = notice_job(env, notice)
    assert delay == pytest.approx(60, abs=5)

    await job_remove_notice(env.app.context_types.context.from_job(job, env.app))

    assert env.emu.is_deleted(GROUP, notice)
    assert await pending_notices(env) == []
    assert env.errors == []


async def test_a_restarted_bot_removes_the_notices_posted_before(tmp_path: Path) -> None:
    emu = make_emulator()
    async with running_env(tmp_path, emu=emu) as before:
        await before.send(SPAM, sender=SPAMMER)  # removal due in a minute
        await before.send(SPAM2, sender=SPAMMER)
        due_later, due_now = (m["message_id"] for m in emu.sent(GROUP)[-2:])
        assert len(await pending_notices(before)) == 2
        async with before.services.db.sessionmaker.begin() as session:  # as if the bot was down a while
            await session.execute(
                update(PendingDeletion)
                .where(PendingDeletion.message_id == due_now)
                .values(delete_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5))
            )
    # stopped before either job ran: both notices are still in the group
    assert not emu.is_deleted(GROUP, due_later) and not emu.is_deleted(GROUP, due_now)

    async with running_env(tmp_path, emu=emu) as after:
        assert await job_resume_notice_removals(after.context()) == 2
        job_now, delay_now = notice_job(after, due_now)
        _, delay_later = notice_job(after, due_later)
        assert delay_now <= 1 and delay_later == pytest.approx(60, abs=5)
        await job_remove_notice(after.app.context_types.context.from_job(job_now, after.app))
        assert emu.is_deleted(GROUP, due_now) and not emu.is_deleted(GROUP, due_later)
        assert [m for _, m, _ in await pending_notices(after)] == [due_later]
        assert await job_resume_notice_removals(after.context()) == 1  # already scheduled: not twice
        assert len(after.app.job_queue.get_jobs_by_name(f"notice:{GROUP}:{due_later}")) == 1
        assert after.errors == []
