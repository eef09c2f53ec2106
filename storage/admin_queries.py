"""Queries the admin commands and scheduled jobs need beyond records.py (keyword-only, no Telegram types)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import ChatSettings, Incident


async def list_chat_settings(*, session: AsyncSession, with_report_chat: bool = False) -> list[ChatSettings]:
    """Every chat the bot has settings for (optionally only those with a report chat), by chat id."""
    q = select(ChatSettings).order_by(ChatSettings.chat_id)
    if with_report_chat:
        q = q.where(ChatSettings.report_chat_id.is_not(None))
    return list((await session.scalars(q)).all())


async def latest_chat_title(*, session: AsyncSession, chat_id: int) -> str | None:
    """The chat's title as last recorded with an incident (None if it never had one)."""
    q = (
        select(Incident.chat_title)
        .where(Incident.chat_id == chat_id, Incident.chat_title.is_not(None))
        .order_by(Incident.id.desc())
        .limit(1)
    )
    return await session.scalar(q)
