"""The hash chain: canonical record fields, record hashes, and the verifier shared by DB and export checks.

record_hash = SHA-256 of the canonical JSON (sorted keys, ASCII escapes, no spaces) of a record's
immutable fields plus its `prev_hash`. One chain per chat, numbered by `seq` from 1, covering incidents
and events in the order they were appended; the first record links to GENESIS.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from storage.types import as_utc

GENESIS = "0" * 64

# Every export row has exactly these fields, in this order, in every format. Kinds drive conversion.
FIELDS: tuple[tuple[str, str], ...] = (
    ("record_type", "str"),  # incident | event | anchor
    ("chat_id", "int"),
    ("seq", "int"),
    ("incident_id", "int"),
    ("message_id", "int"),
    ("chat_title", "str"),
    ("thread_id", "int"),
    ("sender_id", "int"),
    ("sender_username", "str"),
    ("sender_name", "str"),
    ("sender_chat_id", "int"),
    ("message_date", "time"),
    ("received_at", "time"),
    ("is_edit", "bool"),
    ("edit_date", "time"),
    ("text", "str"),
    ("hidden_links", "json"),
    ("media_kind", "str"),
    ("media_file_unique_id", "str"),
    ("forward_origin", "json"),
    ("category", "str"),
    ("score", "float"),
    ("suggested_action", "str"),
    ("model_version", "str"),
    ("reasons", "json"),
    ("contacts", "json"),
    ("decided_by", "str"),
    # current state at export time (derived from the events, which are in the chain themselves)
    ("action_taken", "str"),
    ("review_result", "str"),
    ("report_status", "str"),
    ("legal_hold", "bool"),
    # event records
    ("event_kind", "str"),
    ("event_value", "str"),
    ("event_actor", "str"),
    ("event_detail", "str"),
    ("batch_id", "int"),
    # anchor records: a run of records removed by a retention purge, seq .. anchor_last_seq
    ("anchor_last_seq", "int"),
    ("recorded_at", "time"),
    ("prev_hash", "str"),
    ("record_hash", "str"),
)
FIELD_NAMES = tuple(name for name, _ in FIELDS)
KINDS = dict(FIELDS)

INCIDENT_HASHED = (
    "chat_id",
    "seq",
    "message_id",
    "chat_title",
    "thread_id",
    "sender_id",
    "sender_username",
    "sender_name",
    "sender_chat_id",
    "message_date",
    "received_at",
    "is_edit",
    "edit_date",
    "text",
    "hidden_links",
    "media_kind",
    "media_file_unique_id",
    "forward_origin",
    "category",
    "score",
    "suggested_action",
    "model_version",
    "reasons",
    "contacts",
    "decided_by",
    "recorded_at",
)
EVENT_HASHED = (
    "chat_id",
    "seq",
    "incident_id",
    "message_id",
    "event_kind",
    "event_value",
    "event_actor",
    "event_detail",
    "batch_id",
    "recorded_at",
)
HASHED = {"incident": INCIDENT_HASHED, "event": EVENT_HASHED}


def iso(value: datetime | None) -> str | None:
    """The one text form of a time in hashes and exports: UTC, microseconds, explicit offset."""
    return None if value is None else as_utc(value).isoformat(timespec="microseconds")


def _canonical(kind: str, value: Any) -> Any:
    # Exports blur None and "" for text (a CSV cell cannot tell them apart), so hashes do too.
    if kind == "str":
        return "" if value is None else str(value)
    if value is None or value == "":
        return None if kind != "bool" else False
    if kind == "int":
        return int(value)
    if kind == "float":
        return float(value)
    if kind == "bool":
        if isinstance(value, str):
            return value.strip().lower() in ("true", "1", "yes")
        return bool(value)
    if kind == "time":
        if isinstance(value, datetime):
            return iso(value)
        return iso(datetime.fromisoformat(str(value)))
    return value  # json: already a Python value


def record_hash(record_type: str, row: Mapping[str, Any], prev_hash: str) -> str:
    """SHA-256 of the canonical JSON of the record's immutable fields and prev_hash."""
    payload = {name: _canonical(KINDS[name], row.get(name)) for name in HASHED[record_type]}
    payload["record_type"] = record_type
    payload["prev_hash"] = prev_hash
    data = json.dumps(payload, sort_keys=True, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(data.encode("ascii")).hexdigest()


def describe(row: Mapping[str, Any]) -> str:
    """A short name for a record in messages: never its content."""
    kind = row.get("record_type")
    base = f"chat {row.get('chat_id')} seq {row.get('seq')}"
    if kind == "incident":
        return f"{base}: incident {row.get('incident_id')} (message {row.get('message_id')})"
    if kind == "event":
        return (
            f"{base}: event {row.get('event_kind')}={row.get('event_value')} of incident "
            f"{row.get('incident_id')} (message {row.get('message_id')})"
        )
    return f"{base}: purge anchor through seq {row.get('anchor_last_seq')}"


@dataclass
class VerifyResult:
    """Outcome of a verification: per chat, the first broken record (if any)."""

    records: int = 0
    chats: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class _ChatState:
    last_seq: int
    last_hash: str
    broken: bool = False


class ChainVerifier:
    """Feed records per chat in seq order; collects the first problem of each chat.

    `from_genesis`: the first record of a chat must be seq 1 linked to GENESIS (a database check);
    otherwise the first record seen is taken as the starting point (a partial export).
    `contiguous`: a gap in seq is a problem (False only for files that list chosen incidents).
    """

    def __init__(self, *, from_genesis: bool = True, contiguous: bool = True) -> None:
        self.from_genesis = from_genesis
        self.contiguous = contiguous
        self.chats: dict[int, _ChatState] = {}
        self.result = VerifyResult()

    def _fail(self, state: _ChatState, message: str) -> None:
        state.broken = True
        self.result.problems.append(message)

    def feed(self, row: Mapping[str, Any]) -> None:
        self.result.records += 1
        chat_id = _canonical("int", row.get("chat_id"))
        seq = _canonical("int", row.get("seq"))
        kind = row.get("record_type")
        prev = row.get("prev_hash") or ""
        state = self.chats.get(chat_id)
        if state is None:
            self.result.chats += 1
            if self.from_genesis:
                state = _ChatState(0, GENESIS)
            else:
                state = _ChatState(seq - 1, prev)
                if seq != 1:
                    self.result.notes.append(f"chat {chat_id}: the file starts at seq {seq}")
            self.chats[chat_id] = state
        if state.broken:
            return
        name = describe(row)
        if kind not in ("incident", "event", "anchor"):
            return self._fail(state, f"{name}: unknown record_type {kind!r}")
        if seq <= state.last_seq:
            return self._fail(state, f"{name}: out of order (after seq {state.last_seq}): rows reordered?")
        if seq != state.last_seq + 1:
            if self.contiguous:
                return self._fail(
                    state,
                    f"{name}: seq {state.last_seq + 1}..{seq - 1} missing: records deleted",
                )
        elif prev != state.last_hash:
            return self._fail(
                state, f"{name}: prev_hash does not match the record before it: a record changed or removed"
            )
        if kind == "anchor":
            state.last_seq = _canonical("int", row.get("anchor_last_seq"))
            state.last_hash = row.get("record_hash") or ""
            return None
        expected = record_hash(kind, row, prev)
        if expected != row.get("record_hash"):
            return self._fail(
                state, f"{name}: record_hash does not match its contents: the record was altered"
            )
        state.last_seq, state.last_hash = seq, expected
        return None

    def check_head(self, chat_id: int, last_seq: int, last_hash: str) -> None:
        """Compare where a chat's chain ends with the recorded head: notices records cut from the end."""
        state = self.chats.get(chat_id)
        if state is None:
            self.result.chats += 1
            self.result.problems.append(
                f"chat {chat_id}: no records left but the chain head says seq {last_seq}: records deleted"
            )
            return
        if state.broken:
            return
        if state.last_seq != last_seq or state.last_hash != last_hash:
            self._fail(
                state,
                f"chat {chat_id}: the chain ends at seq {state.last_seq} but its head says seq {last_seq}: "
                "records removed from the end",
            )
