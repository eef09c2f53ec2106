"""Bot messages waiting to be deleted: a deletion notice removes itself after a minute, and a bot
restarted in that minute must still remove it. Not evidence (no chain, no retention): a row lives from
the notice's posting to its removal.

The table is declared on the evidence schema's metadata, so importing this module is enough for
Alembic's autogenerate to see it (storage/migrations/versions/0002_pending_deletions.py creates it).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from storage.models import Base
from storage.types import UTCDateTime


class PendingDeletion(Base):
    """One message the bot posted and must delete at `delete_at`."""

    __tablename__ = "pending_deletions"
    __table_args__ = (Index("ix_pending_deletions_delete_at", "delete_at"),)

    chat_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    message_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    delete_at: Mapped[datetime] = mapped_column(UTCDateTime)


async def add_pending_deletion(
    *, session: AsyncSession, chat_id: int, message_id: int, delete_at: datetime
) -> None:
    """Remember that (chat_id, message_id) is to be deleted at `delete_at` (again: the new time wins)."""
    await session.merge(PendingDeletion(chat_id=chat_id, message_id=message_id, delete_at=delete_at))


async def list_pending_deletions(
    *, session: AsyncSession, due_before: datetime | None = None
) -> list[PendingDeletion]:
    """Every pending deletion (or those due before a time), soonest first."""
    q = select(PendingDeletion).order_by(PendingDeletion.delete_at)
    if due_before is not None:
        q = q.where(PendingDeletion.delete_at < due_before)
    return list((await session.scalars(q)).all())


async def remove_pending_deletion(*, session: AsyncSession, chat_id: int, message_id: int) -> bool:
    """Forget a pending deletion (done, or given up); False if there was none."""
    result = await session.execute(
        delete(PendingDeletion).where(
            PendingDeletion.chat_id == chat_id, PendingDeletion.message_id == message_id
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
