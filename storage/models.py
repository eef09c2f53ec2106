"""The evidence schema: typed SQLAlchemy 2 models. Every Telegram id is a BigInteger.

Evidence rows (`incidents`, `incident_events`) are written once and form one hash chain per chat, numbered
by `seq`. `incident_state` is a projection of the events kept for fast queries; it is not evidence and
can be rebuilt from `incident_events`.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from storage.types import JSONText, SafeText, UTCDateTime

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def table_of(model: type[Base]) -> Table:
    """A model's Core table (`__table__` is typed as a FromClause, which insert() and update() refuse)."""
    table = model.__table__
    assert isinstance(table, Table)
    return table


class ChatSettings(Base):
    """Per-chat policy. Thresholds override the model's delete thresholds per category."""

    __tablename__ = "chat_settings"

    chat_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    mode: Mapped[str] = mapped_column(String(16), default="enforce")  # enforce | dry_run | off
    thresholds: Mapped[dict[str, float]] = mapped_column(JSONText, default=dict)
    strike_limit: Mapped[int] = mapped_column(Integer, default=3)
    strike_window_seconds: Mapped[int] = mapped_column(Integer, default=86400)
    mute_seconds: Mapped[int] = mapped_column(Integer, default=3600)
    ban_on_limit: Mapped[bool] = mapped_column(Boolean, default=False)
    report_chat_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    retention_days: Mapped[int] = mapped_column(Integer, default=180)
    language: Mapped[str] = mapped_column(String(8), default="zh")  # zh | en
    trusted_user_ids: Mapped[list[int]] = mapped_column(JSONText, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Incident(Base):
    """The evidence record of one flagged message (or edit), written once."""

    __tablename__ = "incidents"
    __table_args__ = (
        UniqueConstraint("chat_id", "message_id", "edit_key", name="uq_incidents_message"),
        UniqueConstraint("chat_id", "seq", name="uq_incidents_chat_seq"),
        Index("ix_incidents_received", "received_at"),
        Index("ix_incidents_recorded", "recorded_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    chat_id: Mapped[int] = mapped_column(BigInteger)
    seq: Mapped[int] = mapped_column(BigInteger)
    chat_title: Mapped[str | None] = mapped_column(SafeText)
    message_id: Mapped[int] = mapped_column(BigInteger)
    thread_id: Mapped[int | None] = mapped_column(BigInteger)
    sender_id: Mapped[int | None] = mapped_column(BigInteger)
    sender_username: Mapped[str | None] = mapped_column(SafeText)
    sender_name: Mapped[str | None] = mapped_column(SafeText)
    sender_chat_id: Mapped[int | None] = mapped_column(BigInteger)
    message_date: Mapped[datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    is_edit: Mapped[bool] = mapped_column(Boolean)
    edit_date: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Unique key part for idempotency: edit_date in microseconds since the epoch, 0 for the original.
    # (NULLs never collide in a UNIQUE constraint, so edit_date itself cannot serve.)
    edit_key: Mapped[int] = mapped_column(BigInteger)
    text: Mapped[str | None] = mapped_column(SafeText)
    hidden_links: Mapped[list[str]] = mapped_column(JSONText)
    media_kind: Mapped[str | None] = mapped_column(SafeText)
    media_file_unique_id: Mapped[str | None] = mapped_column(SafeText)
    forward_origin: Mapped[Any] = mapped_column(JSONText, nullable=True)
    category: Mapped[str] = mapped_column(SafeText)
    score: Mapped[float] = mapped_column(Float)
    suggested_action: Mapped[str] = mapped_column(SafeText)
    model_version: Mapped[str] = mapped_column(SafeText)
    reasons: Mapped[Any] = mapped_column(JSONText, nullable=True)
    contacts: Mapped[Any] = mapped_column(JSONText, nullable=True)
    decided_by: Mapped[str] = mapped_column(SafeText)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    prev_hash: Mapped[str] = mapped_column(String(64))
    record_hash: Mapped[str] = mapped_column(String(64))

    state: Mapped[IncidentState | None] = relationship(
        lazy="joined", viewonly=True, primaryjoin="Incident.id == foreign(IncidentState.incident_id)"
    )

    # Current state, read from the projection of the appended events.
    @property
    def action_taken(self) -> str | None:
        return self.state.action_taken if self.state else None

    @property
    def review_result(self) -> str | None:
        return self.state.review_result if self.state else None

    @property
    def report_status(self) -> str | None:
        return self.state.report_status if self.state else None

    @property
    def legal_hold(self) -> bool:
        return bool(self.state and self.state.legal_hold)


class IncidentEvent(Base):
    """A change of an incident's state: appended, never updated."""

    __tablename__ = "incident_events"
    __table_args__ = (
        UniqueConstraint("chat_id", "seq", name="uq_incident_events_chat_seq"),
        Index("ix_incident_events_incident", "incident_id"),
        Index("ix_incident_events_recorded", "recorded_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"))
    chat_id: Mapped[int] = mapped_column(BigInteger)
    seq: Mapped[int] = mapped_column(BigInteger)
    message_id: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(16))  # action | review | report | legal_hold
    value: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(SafeText)
    detail: Mapped[str | None] = mapped_column(SafeText)
    batch_id: Mapped[int | None] = mapped_column(BigInteger)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    prev_hash: Mapped[str] = mapped_column(String(64))
    record_hash: Mapped[str] = mapped_column(String(64))


class IncidentState(Base):
    """Current state of an incident, maintained by `append_event` (a projection, not evidence)."""

    __tablename__ = "incident_state"
    __table_args__ = (
        Index("ix_incident_state_report", "report_status", "chat_id"),
        Index("ix_incident_state_chat_action", "chat_id", "action_taken"),
    )

    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"), primary_key=True)
    chat_id: Mapped[int] = mapped_column(BigInteger)
    action_taken: Mapped[str | None] = mapped_column(String(32))
    action_detail: Mapped[str | None] = mapped_column(SafeText)
    review_result: Mapped[str | None] = mapped_column(String(32))
    reviewed_by: Mapped[str | None] = mapped_column(SafeText)
    report_status: Mapped[str | None] = mapped_column(String(16))
    report_batch_id: Mapped[int | None] = mapped_column(BigInteger)
    legal_hold: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ChainHead(Base):
    """The last link of each chat's chain: lets `verify` notice records cut from the end."""

    __tablename__ = "chain_heads"

    chat_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    last_seq: Mapped[int] = mapped_column(BigInteger)
    last_hash: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ChainAnchor(Base):
    """A run of chain records removed by a retention purge: verification continues across it."""

    __tablename__ = "chain_anchors"
    __table_args__ = (Index("ix_chain_anchors_chat_seq", "chat_id", "first_seq"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    chat_id: Mapped[int] = mapped_column(BigInteger)
    first_seq: Mapped[int] = mapped_column(BigInteger)
    last_seq: Mapped[int] = mapped_column(BigInteger)
    prev_hash: Mapped[str] = mapped_column(String(64))  # prev_hash of the first removed record
    record_hash: Mapped[str] = mapped_column(String(64))  # record_hash of the last removed record
    removed_count: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AuditLog(Base):
    """Who did what, when, with which arguments."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_chat_created", "chat_id", "created_at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    chat_id: Mapped[int | None] = mapped_column(BigInteger)
    actor_id: Mapped[int | None] = mapped_column(BigInteger)
    command: Mapped[str] = mapped_column(SafeText)
    args: Mapped[Any] = mapped_column(JSONText, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ReportBatch(Base):
    """One report handed over: which incidents, by whom, and the digest of the file produced."""

    __tablename__ = "report_batches"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    chat_id: Mapped[int | None] = mapped_column(BigInteger)  # None: every chat
    scope: Mapped[str] = mapped_column(String(64))
    created_by: Mapped[str] = mapped_column(SafeText)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    incident_count: Mapped[int] = mapped_column(Integer)
    file_name: Mapped[str | None] = mapped_column(SafeText)
    file_digest: Mapped[str | None] = mapped_column(String(71))  # "sha256:" + hex
    if TYPE_CHECKING:  # set by create_report_batch on the batch it returns; not a column
        incident_ids: list[int]


class TrainingExample(Base):
    """Admin feedback that becomes training data."""

    __tablename__ = "training_examples"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    text: Mapped[str] = mapped_column(SafeText)
    label: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[int | None] = mapped_column(BigInteger)
    chat_id: Mapped[int | None] = mapped_column(BigInteger)
    incident_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Strike(Base):
    """One strike against a user in a chat; at most one per incident."""

    __tablename__ = "strikes"
    __table_args__ = (
        UniqueConstraint("incident_id", name="uq_strikes_incident"),
        Index("ix_strikes_chat_user_created", "chat_id", "user_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    chat_id: Mapped[int] = mapped_column(BigInteger)
    user_id: Mapped[int] = mapped_column(BigInteger)
    incident_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
