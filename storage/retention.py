"""Retention purges that keep every chain verifiable: removed runs of records leave anchors."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import (
    ChainAnchor,
    ChainHead,
    ChatSettings,
    Incident,
    IncidentEvent,
    IncidentState,
    Strike,
)
from storage.records import DEFAULT_RETENTION_DAYS, _lock_chain, log_admin_action, utcnow
from storage.types import as_utc

log = logging.getLogger(__name__)
CHUNK = 500


@dataclass
class PurgeResult:
    """Counts only: a purge never reports content."""

    incidents: int = 0
    events: int = 0
    anchors: int = 0
    per_chat: dict[int, dict[str, int]] = field(default_factory=dict)


def _runs(records: list[tuple[int, str, str]]) -> list[tuple[int, int, str, str, int]]:
    """Group (seq, prev, hash) into runs of consecutive seq: (first, last, prev of first, hash of last, n)."""
    runs: list[tuple[int, int, str, str, int]] = []
    for seq, prev, digest in sorted(records):
        if runs and runs[-1][1] == seq - 1:
            first, _, first_prev, _, n = runs[-1]
            runs[-1] = (first, seq, first_prev, digest, n + 1)
        else:
            runs.append((seq, seq, prev, digest, 1))
    return runs


async def purge_chat(
    *, session: AsyncSession, chat_id: int, now: datetime | None = None, retention_days: int | None = None
) -> dict[str, int]:
    """Remove one chat's incidents past retention (not under legal hold, not queued for a report)."""
    now = as_utc(now) if now is not None else utcnow()
    if retention_days is None:
        settings = await session.get(ChatSettings, chat_id)
        retention_days = settings.retention_days if settings else DEFAULT_RETENTION_DAYS
    cutoff = now - timedelta(days=retention_days)
    await _lock_chain(session, chat_id)
    q = (
        select(Incident.id, Incident.seq, Incident.prev_hash, Incident.record_hash)
        .outerjoin(IncidentState, IncidentState.incident_id == Incident.id)
        .where(
            Incident.chat_id == chat_id,
            Incident.recorded_at < cutoff,
            or_(IncidentState.legal_hold.is_(None), IncidentState.legal_hold.is_(False)),
            or_(IncidentState.report_status.is_(None), IncidentState.report_status != "queued"),
        )
    )
    rows = (await session.execute(q)).all()
    if not rows:
        return {"incidents": 0, "events": 0, "anchors": 0}
    ids = [r[0] for r in rows]
    records = [(r[1], r[2], r[3]) for r in rows]
    n_events = 0
    for i in range(0, len(ids), CHUNK):
        chunk = ids[i : i + CHUNK]
        evs = (
            await session.execute(
                select(IncidentEvent.seq, IncidentEvent.prev_hash, IncidentEvent.record_hash).where(
                    IncidentEvent.incident_id.in_(chunk)
                )
            )
        ).all()
        records.extend((s, p, h) for s, p, h in evs)
        n_events += len(evs)
        await session.execute(delete(Strike).where(Strike.incident_id.in_(chunk)))
        await session.execute(delete(IncidentState).where(IncidentState.incident_id.in_(chunk)))
        await session.execute(delete(IncidentEvent).where(IncidentEvent.incident_id.in_(chunk)))
        await session.execute(delete(Incident).where(Incident.id.in_(chunk)))
    runs = _runs(records)
    for first, last, prev, digest, n in runs:
        session.add(
            ChainAnchor(
                chat_id=chat_id,
                first_seq=first,
                last_seq=last,
                prev_hash=prev,
                record_hash=digest,
                removed_count=n,
                created_at=now,
            )
        )
    counts = {"incidents": len(ids), "events": n_events, "anchors": len(runs)}
    await log_admin_action(
        session=session,
        chat_id=chat_id,
        actor_id=None,
        command="purge",
        args={**counts, "retention_days": retention_days, "cutoff": cutoff.isoformat()},
    )
    log.info(
        "purge chat %s: removed %d incidents and %d events older than %d days (%d anchors)",
        chat_id,
        counts["incidents"],
        counts["events"],
        retention_days,
        counts["anchors"],
    )
    await session.flush()
    return counts


async def purge_expired(
    *, session: AsyncSession, chat_id: int | None = None, now: datetime | None = None
) -> PurgeResult:
    """Apply each chat's retention (default 180 days) to every chat, or one."""
    if chat_id is not None:
        chats = [chat_id]
    else:
        chats = list((await session.scalars(select(ChainHead.chat_id).order_by(ChainHead.chat_id))).all())
    result = PurgeResult()
    for cid in chats:
        counts = await purge_chat(session=session, chat_id=cid, now=now)
        if counts["incidents"]:
            result.per_chat[cid] = counts
            result.incidents += counts["incidents"]
            result.events += counts["events"]
            result.anchors += counts["anchors"]
    return result
