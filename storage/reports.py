"""The report queue: incidents queued with a `report/queued` event are claimed into batches."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.export import FORMATS, write_export
from storage.models import IncidentState, ReportBatch
from storage.records import _dialect, _lock_chain, append_event, utcnow


async def create_report_batch(
    *,
    session: AsyncSession,
    chat_id: int | None,
    created_by: str,
    path: Path | str | None = None,
    fmt: str = "csv",
    limit: int | None = None,
) -> ReportBatch | None:
    """Claim every queued incident of the scope (one chat, or all when chat_id is None) into a new batch.

    Atomic: two workers never claim one incident (chain locks taken in chat order, then the queued rows
    claimed with FOR UPDATE SKIP LOCKED on PostgreSQL; SQLite has a single writer). Each claimed incident
    gets a `report/reported` event naming the batch. With `path`, the batch's records are written there
    (`fmt` csv|xlsx|jsonl) and the file's digest stored. Returns None when nothing is queued.
    The returned batch carries `incident_ids` (a plain attribute, not a column).
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}")
    if chat_id is not None:
        chats = [chat_id]
    else:
        chats = list(
            (
                await session.scalars(
                    select(IncidentState.chat_id).where(IncidentState.report_status == "queued").distinct()
                )
            ).all()
        )
    if not chats:
        return None
    for cid in sorted(chats):  # one order everywhere: no deadlock between two batch workers
        await _lock_chain(session, cid)
    claim = (
        select(IncidentState.incident_id)
        .where(IncidentState.report_status == "queued", IncidentState.chat_id.in_(chats))
        .order_by(IncidentState.incident_id)
    )
    if limit is not None:
        claim = claim.limit(limit)
    if await _dialect(session) == "postgresql":
        claim = claim.with_for_update(skip_locked=True)
    ids = list((await session.scalars(claim)).all())
    if not ids:
        return None
    scope = "all" if chat_id is None else f"chat:{chat_id}"
    batch = ReportBatch(
        chat_id=chat_id, scope=scope, created_by=created_by, created_at=utcnow(), incident_count=len(ids)
    )
    session.add(batch)
    await session.flush()
    for incident_id in ids:
        await append_event(
            session=session,
            incident_id=incident_id,
            kind="report",
            value="reported",
            actor=created_by,
            detail=f"batch {batch.id}",
            batch_id=batch.id,
        )
    if path is not None:
        conn = await session.connection()
        result = await write_export(conn, path=Path(path), fmt=fmt, incident_ids=ids)
        batch.file_name = Path(path).name
        batch.file_digest = result.digest
    await session.flush()
    batch.incident_ids = ids
    return batch


async def list_report_batches(
    *, session: AsyncSession, chat_id: int | None = None, limit: int = 50
) -> list[ReportBatch]:
    """Newest batches first."""
    q = select(ReportBatch).order_by(ReportBatch.id.desc()).limit(limit)
    if chat_id is not None:
        q = q.where(ReportBatch.chat_id == chat_id)
    return list((await session.scalars(q)).all())
