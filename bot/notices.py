"""Deletion notices remove themselves after `notice_ttl_seconds`, also across a restart: each is stored
(storage/notices.py) when posted and forgotten when removed, and a starting bot schedules the removal
of those a previous run left behind.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any, cast

from telegram.ext import JobQueue

from bot.context import Context, Services
from storage.notices import add_pending_deletion, list_pending_deletions, remove_pending_deletion

log = logging.getLogger(__name__)


def _notice_job_name(chat_id: int, message_id: int) -> str:
    return f"notice:{chat_id}:{message_id}"


async def remove_notice_later(
    services: Services, job_queue: JobQueue[Any] | None, chat_id: int, message_id: int
) -> None:
    """Delete the notice (chat_id, message_id) after notice_ttl_seconds: stored first, so a restart
    in between still removes it, then scheduled in this process."""
    ttl = services.settings.notice_ttl_seconds
    # While evidence is spooled the database is down: do not make the handler wait on it again. The
    # notice is then removed by this run only.
    if not services.spool_depth():
        try:
            async with services.db.sessionmaker.begin() as session:
                await add_pending_deletion(
                    session=session,
                    chat_id=chat_id,
                    message_id=message_id,
                    delete_at=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=ttl),
                )
        except Exception:  # fail safe: a notice that stays after a restart is no reason to stop
            log.warning("chat %s: notice %s not stored for removal after a restart", chat_id, message_id)
    if job_queue is not None:
        job_queue.run_once(
            job_remove_notice,
            when=ttl,
            data=(chat_id, message_id),
            name=_notice_job_name(chat_id, message_id),
        )


async def job_remove_notice(context: Context) -> None:
    """A deletion notice's time is up: delete it, then forget it (whether or not Telegram still had it:
    a notice already gone, or older than Telegram lets bots delete, is not retried)."""
    job = context.job
    if job is None or job.data is None:
        return
    chat_id, message_id = cast(tuple[int, int], job.data)
    services = context.services
    await services.tg.delete_message(chat_id, message_id)
    try:
        async with services.db.sessionmaker.begin() as session:
            await remove_pending_deletion(session=session, chat_id=chat_id, message_id=message_id)
    except Exception:  # still stored: the next start tries again, and Telegram says it is gone
        log.warning("chat %s: removed notice %s stays stored (database unavailable)", chat_id, message_id)


async def job_resume_notice_removals(context: Context) -> int:
    """At start: schedule the removal of every stored notice (at once if its time has passed).
    Returns how many were scheduled."""
    if context.bot_data.services is None:  # still starting (deferred services): try again shortly
        later: JobQueue[Any] | None = context.job_queue
        if later is not None:
            later.run_once(job_resume_notice_removals, when=0.5, name="resume_notice_removals")
        return 0
    services = context.services
    async with services.db.sessionmaker() as session:
        pending = await list_pending_deletions(session=session)
    job_queue: JobQueue[Any] | None = context.job_queue
    if job_queue is None:
        return 0
    now = dt.datetime.now(dt.UTC)
    for row in pending:
        name = _notice_job_name(row.chat_id, row.message_id)
        if job_queue.get_jobs_by_name(name):
            continue  # posted by this run: already scheduled
        job_queue.run_once(
            job_remove_notice,
            when=max(0.0, (row.delete_at - now).total_seconds()),
            data=(row.chat_id, row.message_id),
            name=name,
        )
    if pending:
        log.info("%d deletion notices from before the restart are scheduled for removal", len(pending))
    return len(pending)
