"""The evidence record of a flagged message, built one way for every source: a live message or edit
(bot/moderation.py), an admin's /spam and members' /report (bot/admin.py), and a message of a
Telegram Desktop export (`qinglang scan`, bot/scan.py); and the way back, a stored incident as the
record moderation acts on.

Pure: plain facts in, a `storage.NewIncident` out. No Telegram types, so each source only has to
present its facts under these names (the Protocols below).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import storage

if TYPE_CHECKING:
    from bot.moderation import MessageRecord


class MessageFacts(Protocol):
    """What an incident records about the message itself (moderation.MessageRecord has all of it)."""

    @property
    def chat_id(self) -> int: ...
    @property
    def chat_title(self) -> str | None: ...
    @property
    def message_id(self) -> int: ...
    @property
    def thread_id(self) -> int | None: ...
    @property
    def sender_id(self) -> int | None: ...
    @property
    def sender_username(self) -> str | None: ...
    @property
    def sender_name(self) -> str | None: ...
    @property
    def sender_chat_id(self) -> int | None: ...
    @property
    def message_date(self) -> dt.datetime: ...
    @property
    def is_edit(self) -> bool: ...
    @property
    def edit_date(self) -> dt.datetime | None: ...
    @property
    def text(self) -> str: ...
    @property
    def hidden_links(self) -> Sequence[str]: ...
    @property
    def media_kind(self) -> str | None: ...
    @property
    def media_file_unique_id(self) -> str | None: ...
    @property
    def forward_origin(self) -> dict[str, Any] | None: ...


class JudgedFacts(Protocol):
    """What an incident records of the verdict (a classifier Verdict, or a hand flag shaped like one)."""

    @property
    def label(self) -> str: ...
    @property
    def score(self) -> float: ...
    @property
    def action(self) -> str: ...
    @property
    def reasons(self) -> Mapping[str, Any]: ...
    @property
    def model_version(self) -> str: ...


def new_incident(
    message: MessageFacts, verdict: JudgedFacts, *, received_at: dt.datetime, decided_by: str = "model"
) -> storage.NewIncident:
    """The evidence record for a flagged message: its facts, the verdict and the contacts it named."""
    reasons = dict(verdict.reasons)
    return storage.NewIncident(
        chat_id=message.chat_id,
        chat_title=message.chat_title,
        message_id=message.message_id,
        thread_id=message.thread_id,
        sender_id=message.sender_id,
        sender_username=message.sender_username,
        sender_name=message.sender_name,
        sender_chat_id=message.sender_chat_id,
        message_date=message.message_date,
        received_at=received_at,
        is_edit=message.is_edit,
        edit_date=message.edit_date,
        text=message.text,
        hidden_links=list(message.hidden_links),
        media_kind=message.media_kind,
        media_file_unique_id=message.media_file_unique_id,
        forward_origin=message.forward_origin,
        category=verdict.label,
        score=float(verdict.score),
        suggested_action=verdict.action,
        model_version=verdict.model_version,
        reasons=reasons,
        contacts=list(reasons.get("contacts", ())),
        decided_by=decided_by,
    )


def record_from_incident(incident: Any) -> MessageRecord:
    """The moderation record of a stored incident's message (to act on it again: a review's delete)."""
    # Imported here: bot/moderation.py imports this module (new_incident), so not at load time.
    from bot.moderation import MessageRecord

    return MessageRecord(
        chat_id=incident.chat_id,
        chat_title=incident.chat_title,
        message_id=incident.message_id,
        thread_id=incident.thread_id,
        sender_id=incident.sender_id,
        sender_username=incident.sender_username,
        sender_name=incident.sender_name,
        sender_chat_id=incident.sender_chat_id,
        is_automatic_forward=False,
        message_date=incident.message_date,
        is_edit=incident.is_edit,
        edit_date=incident.edit_date,
        text=incident.text or "",
        hidden_links=tuple(incident.hidden_links or ()),
        media_kind=incident.media_kind,
        media_file_unique_id=incident.media_file_unique_id,
        forward_origin=incident.forward_origin,
        is_service=False,
    )
