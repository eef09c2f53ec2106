"""Scheduled jobs: daily digest, retention purge, admin-cache refresh, and at start the removal of the
deletion notices a previous run left (bot/notices.py).

`bot/app.py` calls `schedule_jobs(application)` once while building the application; jobs reach the
services through `context.services` when they run (services exist from post_init on). Each job is a
plain `job_<name>(context)` coroutine, so tests run them directly instead of waiting for the clock.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from dataclasses import dataclass, field
from typing import Any

from telegram.ext import Application

import storage
from bot import admin
from bot.caches import ChatPolicy
from bot.context import Context
from bot.i18n import t
from bot.notices import job_resume_notice_removals
from storage.admin_queries import latest_chat_title, list_chat_settings

log = logging.getLogger(__name__)

# The groups' morning (Asia/Shanghai): yesterday's digest and report batch, then the purge at night.
DIGEST_TIME = dt.time(9, 0, tzinfo=admin.LOCAL_TZ)
PURGE_TIME = dt.time(4, 0, tzinfo=admin.LOCAL_TZ)
# Shorter than the admin cache's lifetime (300 s by default): expired entries are fetched here, ahead of
# the next message, and a failed fetch keeps the list we had.
ADMIN_REFRESH_SECONDS = 120.0


def schedule_jobs(application: Application[Any, Any, Any, Any, Any, Any]) -> None:
    """Register the recurring jobs on `application.job_queue`."""
    jobs = application.job_queue
    if jobs is None:  # python-telegram-bot installed without its [job-queue] extra
        log.warning("no job queue: daily digest, retention purge and admin refresh will not run")
        return
    jobs.run_daily(job_daily_digest, time=DIGEST_TIME, name="daily_digest")
    jobs.run_daily(job_retention_purge, time=PURGE_TIME, name="retention_purge")
    jobs.run_repeating(
        job_refresh_admins, interval=ADMIN_REFRESH_SECONDS, first=ADMIN_REFRESH_SECONDS, name="admin_refresh"
    )
    # As soon as the bot runs: notices a previous run posted but never removed.
    jobs.run_once(job_resume_notice_removals, when=0, name="resume_notice_removals")


@dataclass
class DigestResult:
    """What one digest run did, per chat: the batch sent (or None) and whether the summary arrived."""

    batches: dict[int, int | None] = field(default_factory=dict)
    delivered: dict[int, bool] = field(default_factory=dict)


async def job_daily_digest(context: Context) -> DigestResult:
    """For every chat with a report chat: the last 24 hours' counts per category and action, and the
    day's report batch (the queued incidents, claimed and sent as a file)."""
    services = context.services
    result = DigestResult()
    async with services.db.sessionmaker() as session:
        chats = [
            ChatPolicy.from_row(row)
            for row in await list_chat_settings(session=session, with_report_chat=True)
        ]
    since = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    for policy in chats:
        assert policy.report_chat_id is not None
        lang = policy.language
        async with services.db.sessionmaker() as session:
            stats = await storage.incident_stats(session=session, chat_id=policy.chat_id, since=since)
            title = await latest_chat_title(session=session, chat_id=policy.chat_id) or str(policy.chat_id)
        try:
            delivery = await admin.submit_report_batch(
                chat_id=policy.chat_id,
                created_by="job:daily_digest",
                targets=[policy.report_chat_id],
                caption=functools.partial(_caption, lang=lang, title=title),
                services=services,
            )
        except admin.DeliveryFailed:
            log.warning(
                "chat %s: the report chat %s did not take the digest", policy.chat_id, policy.report_chat_id
            )
            delivery = None
        lines = [t("digest.header", lang, chat=title), *admin.format_counts(stats, lang), ""]
        if delivery is not None:
            lines.append(t("digest.batch", lang, batch=delivery.batch_id, n=delivery.incidents))
        else:
            lines.append(t("digest.no_batch", lang))
        sent = await services.tg.send_message(policy.report_chat_id, "\n".join(lines))
        result.batches[policy.chat_id] = delivery.batch_id if delivery is not None else None
        result.delivered[policy.chat_id] = sent.ok
    return result


def _caption(batch: int, n: int, *, lang: str, title: str) -> str:
    return t("digest.caption", lang, batch=batch, n=n, chat=title)


async def job_retention_purge(context: Context) -> storage.PurgeResult:
    """Apply every chat's retention period (evidence past it is removed, chains stay verifiable)."""
    services = context.services
    async with services.db.sessionmaker.begin() as session:
        result = await storage.purge_expired(session=session)
    if result.incidents:
        log.info("retention purge: %d incidents, %d events removed", result.incidents, result.events)
    return result


async def job_refresh_admins(context: Context) -> int:
    """Fetch the admin lists of the chats the bot moderates whose cached copy has expired."""
    services = context.services
    async with services.db.sessionmaker() as session:
        chats = [row.chat_id for row in await list_chat_settings(session=session) if row.mode != "off"]
    for chat_id in chats:
        await services.admins.get(chat_id)  # a fresh entry is kept; an expired one is fetched again
    return len(chats)
