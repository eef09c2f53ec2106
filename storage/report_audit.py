"""Members' /report as the audit log keeps them: a restarted bot rebuilds its report tally from these."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import AuditLog


async def list_member_reports(*, session: AsyncSession, chat_id: int, since: datetime) -> list[AuditLog]:
    """The chat's audited member reports (command "report") recorded at or after `since`, oldest first."""
    q = (
        select(AuditLog)
        .where(AuditLog.chat_id == chat_id, AuditLog.command == "report", AuditLog.created_at >= since)
        .order_by(AuditLog.created_at, AuditLog.id)
    )
    return list((await session.scalars(q)).all())
