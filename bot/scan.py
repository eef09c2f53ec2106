"""`qinglang scan`: judge a chat history exported by Telegram Desktop and record what it flags.

The export ("Export chat history", JSON) is one chat (`{"name", "type", "id", "messages": [...]}`) or a
whole account (`{"chats": {"list": [...]}}`). A message's `text` is a string or a list of parts, each a
string or `{"type", "text"}` (a `text_link` part also has `href`). Flagged messages become incidents with
action `none`: history is recorded, never acted on. Rerunning is harmless: incidents are keyed on
(chat, message), so a message already recorded (by a scan or by the running bot) is not recorded again.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import storage
from bot.incidents import new_incident
from bot.moderation import Classifier

# Telegram Desktop's chat types; supergroups and channels get Bot API ids of the form -100<id>.
_SUPERGROUP_TYPES = ("private_supergroup", "public_supergroup", "private_channel", "public_channel")
_GROUP_TYPES = ("private_group",)
MEDIA_FIELDS = {"photo": "photo", "sticker_emoji": "sticker"}


@dataclass(frozen=True, slots=True)
class ExportedMessage:
    """One message of an export, in the plain terms an incident needs."""

    chat_id: int
    chat_title: str | None
    message_id: int
    message_date: dt.datetime
    sender_id: int | None
    sender_chat_id: int | None
    sender_name: str | None
    text: str
    hidden_links: tuple[str, ...]
    media_kind: str | None
    forwarded_from: str | None
    # Not in a Desktop export (the incident builder reads them, as it does for a live message):
    thread_id: None = None
    sender_username: None = None
    is_edit: bool = False
    edit_date: None = None
    media_file_unique_id: None = None

    @property
    def judged_text(self) -> str:
        """Like the live bot: the text, then each hidden link on a line of its own."""
        return "\n".join((self.text, *self.hidden_links)) if self.hidden_links else self.text

    @property
    def forward_origin(self) -> dict[str, Any] | None:
        """Desktop names the forward's origin only."""
        return {"name": self.forwarded_from} if self.forwarded_from else None


class ExportError(ValueError):
    """The file is not a Telegram Desktop JSON export."""


def export_text(value: Any) -> tuple[str, tuple[str, ...]]:
    """The plain text of a `text` field (string or list of parts) and the URLs of its text_link parts."""
    if value is None:
        return "", ()
    if isinstance(value, str):
        return value, ()
    if not isinstance(value, list):
        return str(value), ()
    parts: list[str] = []
    links: list[str] = []
    for part in value:
        if isinstance(part, str):
            parts.append(part)
        elif isinstance(part, Mapping):
            parts.append(str(part.get("text", "")))
            href = part.get("href")
            if href and part.get("type") == "text_link":
                links.append(str(href))
    return "".join(parts), tuple(links)


def bot_api_chat_id(export_id: int, chat_type: str) -> int:
    """The Bot API id of an exported chat (Desktop writes the bare id, without -100 or the minus)."""
    if export_id < 0:
        return export_id
    if chat_type in _SUPERGROUP_TYPES:
        return int(f"-100{export_id}")
    if chat_type in _GROUP_TYPES:
        return -export_id
    return export_id


def parse_sender(from_id: Any, chat_id: int) -> tuple[int | None, int | None]:
    """(user id, sender chat id) from Desktop's "user123" / "channel123" / "chat123"."""
    if not isinstance(from_id, str):
        return None, None
    for prefix, is_user in (("user", True), ("channel", False), ("chat", False)):
        if from_id.startswith(prefix) and from_id[len(prefix) :].isdigit():
            number = int(from_id[len(prefix) :])
            if is_user:
                return number, None
            sender_chat = int(f"-100{number}") if prefix == "channel" else -number
            return None, sender_chat
    return None, None


def _message_date(raw: Mapping[str, Any]) -> dt.datetime:
    # `date_unixtime` is UTC; `date` is the exporting machine's local time with no zone (older exports
    # have only that: taken as UTC, the best we can do).
    unix = raw.get("date_unixtime")
    if unix is not None:
        return dt.datetime.fromtimestamp(int(unix), dt.UTC)
    return dt.datetime.fromisoformat(str(raw["date"])).replace(tzinfo=dt.UTC)


def _chats(doc: Any) -> list[Mapping[str, Any]]:
    if isinstance(doc, Mapping) and isinstance(doc.get("messages"), list):
        return [doc]
    chats = doc.get("chats") if isinstance(doc, Mapping) else None
    if isinstance(chats, Mapping) and isinstance(chats.get("list"), list):
        return [c for c in chats["list"] if isinstance(c, Mapping) and isinstance(c.get("messages"), list)]
    raise ExportError("not a Telegram Desktop JSON export (no `messages` list)")


def read_export(doc: Any) -> list[ExportedMessage]:
    """Every ordinary message with text in the export, in file order (service messages skipped)."""
    out: list[ExportedMessage] = []
    for chat in _chats(doc):
        try:
            chat_id = bot_api_chat_id(int(chat["id"]), str(chat.get("type", "")))
        except (KeyError, TypeError, ValueError):
            raise ExportError("a chat in the export has no numeric `id`") from None
        title = chat.get("name")
        for raw in chat["messages"]:
            if not isinstance(raw, Mapping) or raw.get("type", "message") != "message":
                continue
            text, links = export_text(raw.get("text"))
            if not text.strip() and not links:
                continue
            sender_id, sender_chat_id = parse_sender(raw.get("from_id"), chat_id)
            media = raw.get("media_type") or next((k for k in MEDIA_FIELDS if raw.get(k)), None)
            try:
                message_id, message_date = int(raw["id"]), _message_date(raw)
            except (KeyError, TypeError, ValueError):
                continue  # a malformed entry: skip it rather than abandon the scan
            out.append(
                ExportedMessage(
                    chat_id=chat_id,
                    chat_title=str(title) if title is not None else None,
                    message_id=message_id,
                    message_date=message_date,
                    sender_id=sender_id,
                    sender_chat_id=sender_chat_id,
                    sender_name=raw.get("from"),
                    text=text,
                    hidden_links=links,
                    media_kind=MEDIA_FIELDS.get(media, media) if media else None,
                    forwarded_from=raw.get("forwarded_from"),
                )
            )
    return out


def load_export(path: Path) -> list[ExportedMessage]:
    """Read and parse an export file."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise ExportError(f"{path}: not JSON ({exc})") from None
    return read_export(doc)


@dataclass
class ScanSummary:
    """What a scan found: counts only."""

    messages: int = 0
    flagged: Counter[tuple[str, str]] = field(default_factory=Counter)  # (category, suggested action)
    recorded: int = 0  # new incidents
    already: int = 0  # flagged, but recorded before (an earlier scan, or the live bot)
    chats: set[int] = field(default_factory=set)

    @property
    def flagged_total(self) -> int:
        return sum(self.flagged.values())


async def scan_messages(
    messages: list[ExportedMessage],
    *,
    db: storage.Database,
    classifier: Classifier,
    source: str,
    progress: Callable[[int], None] | None = None,
) -> ScanSummary:
    """Classify every message; record each flagged one as a historical incident (action `none`)."""
    summary = ScanSummary(messages=len(messages))
    received_at = dt.datetime.now(dt.UTC)
    for msg in messages:
        summary.chats.add(msg.chat_id)
        verdict = classifier.classify(msg.judged_text)
        if progress is not None:
            progress(1)
        if verdict.action not in ("delete", "review"):
            continue
        summary.flagged[(verdict.label, verdict.action)] += 1
        incident, created = await storage.record_incident(
            sessionmaker=db.sessionmaker, incident=new_incident(msg, verdict, received_at=received_at)
        )
        if created:
            summary.recorded += 1
        else:
            summary.already += 1
        if incident.action_taken is None:  # also finishes an incident a crashed scan left without one
            async with db.sessionmaker.begin() as session:
                await storage.append_event(
                    session=session,
                    incident_id=incident.id,
                    kind="action",
                    value="none",
                    actor="scan",
                    detail={"historical": True, "source": source, "would": verdict.action},
                )
    return summary
