"""The hash chain: canonical record fields, record hashes, and the verifier shared by DB and export checks.

record_hash = SHA-256 of the canonical JSON (sorted keys, ASCII escapes, no spaces) of a record's
immutable fields plus its `prev_hash`. One chain per chat, numbered by `seq` from 1, covering incidents
and events in the order they were appended; the first record links to GENESIS.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from storage.types import as_utc

GENESIS = "0" * 64

# Every export row has exactly these fields, in this order, in every format. Kinds drive conversion.
# One row per incident; its events ride along in `events`. A purge anchor is a row of its own.
FIELDS: tuple[tuple[str, str], ...] = (
    ("record_type", "str"),  # incident | anchor
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
    # current state, derived from the events below (verify_export checks that they agree)
    ("action_taken", "str"),
    ("review_result", "str"),
    ("report_status", "str"),
    ("legal_hold", "bool"),
    # the incident's chain events in seq order: [{seq, kind, value, actor, detail, batch_id,
    # recorded_at, prev_hash, record_hash}, ...]
    ("events", "json"),
    # anchor rows: a run of records removed by a retention purge, seq .. anchor_last_seq
    ("anchor_last_seq", "int"),
    ("recorded_at", "time"),
    ("prev_hash", "str"),
    ("record_hash", "str"),
)
EVENT_KEYS = (
    "seq", "kind", "value", "actor", "detail", "batch_id", "recorded_at", "prev_hash", "record_hash",
)  # fmt: skip
FIELD_NAMES = tuple(name for name, _ in FIELDS)
KINDS = dict(FIELDS)
# the names an event's hash payload uses (the chain format, unchanged since the first record)
KINDS.update(event_kind="str", event_value="str", event_actor="str", event_detail="str", batch_id="int")

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


# One function per field kind. Exports blur None and "" (a CSV cell cannot tell them apart), so
# hashes do too: text None is "", any other kind's "" is None (bool: False).
def _canonical_str(value: Any) -> Any:
    return "" if value is None else str(value)


def _canonical_int(value: Any) -> Any:
    return None if value is None or value == "" else int(value)


def _canonical_float(value: Any) -> Any:
    return None if value is None or value == "" else float(value)


def _canonical_bool(value: Any) -> bool:
    if value is None or value == "":
        return False
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def _canonical_time(value: Any) -> Any:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return iso(value)
    return iso(datetime.fromisoformat(str(value)))


def _canonical_json(value: Any) -> Any:
    return None if value is None or value == "" else value  # already a Python value


_CANONICAL_BY_KIND: dict[str, Callable[[Any], Any]] = {
    "str": _canonical_str,
    "int": _canonical_int,
    "float": _canonical_float,
    "bool": _canonical_bool,
    "time": _canonical_time,
    "json": _canonical_json,
}


def _canonical(kind: str, value: Any) -> Any:
    return _CANONICAL_BY_KIND.get(kind, _canonical_json)(value)


# json.dumps with these options builds an encoder per call; one shared encoder gives the same text.
_CANONICAL_JSON = json.JSONEncoder(sort_keys=True, ensure_ascii=True, separators=(",", ":"), allow_nan=False)

# Each hashed field with its kind's function, resolved once (the writer hashes ~30 fields per
# incident on the hot path).
_HASH_PLAN = {
    record_type: tuple((name, _CANONICAL_BY_KIND.get(KINDS[name], _canonical_json)) for name in names)
    for record_type, names in HASHED.items()
}


def record_hash(record_type: str, row: Mapping[str, Any], prev_hash: str) -> str:
    """SHA-256 of the canonical JSON of the record's immutable fields and prev_hash."""
    get = row.get
    payload = {name: canonical(get(name)) for name, canonical in _HASH_PLAN[record_type]}
    payload["record_type"] = record_type
    payload["prev_hash"] = prev_hash
    data = _CANONICAL_JSON.encode(payload)
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


def event_record(row: Mapping[str, Any], event: Mapping[str, Any]) -> dict[str, Any]:
    """An event embedded in an export row as a chain record (the names its hash covers)."""
    return {
        "record_type": "event",
        "chat_id": row.get("chat_id"),
        "seq": event.get("seq"),
        "incident_id": row.get("incident_id"),
        "message_id": row.get("message_id"),
        "event_kind": event.get("kind"),
        "event_value": event.get("value"),
        "event_actor": event.get("actor"),
        "event_detail": event.get("detail"),
        "batch_id": event.get("batch_id"),
        "recorded_at": event.get("recorded_at"),
        "prev_hash": event.get("prev_hash"),
        "record_hash": event.get("record_hash"),
    }


STATE_FIELDS = ("action_taken", "review_result", "report_status", "legal_hold")


def state_of(events: list[Mapping[str, Any]]) -> dict[str, Any]:
    """An incident's current state from its events in seq order (the projection append_event keeps)."""
    state: dict[str, Any] = dict.fromkeys(STATE_FIELDS)
    state["legal_hold"] = False
    for ev in events:
        kind, value = ev.get("kind"), ev.get("value")
        if kind == "action":
            state["action_taken"] = value
        elif kind == "review":
            state["review_result"] = value
        elif kind == "report":
            state["report_status"] = value
        elif kind == "legal_hold":
            state["legal_hold"] = value == "on"
    return state


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
        """One record (incident, event or anchor, in the names `describe` uses), in seq order."""
        kind = row.get("record_type")
        name = describe(row)
        if kind not in ("incident", "event", "anchor"):
            self.link(row, name, check=False)
            state = self.chats[_canonical("int", row.get("chat_id"))]
            if not state.broken:
                self._fail(state, f"{name}: unknown record_type {kind!r}")
            return
        if not self.link(row, name):
            return
        if kind != "anchor" and record_hash(kind, row, row.get("prev_hash") or "") != row.get("record_hash"):
            self._fail(
                self.chats[_canonical("int", row.get("chat_id"))],
                f"{name}: record_hash does not match its contents: the record was altered",
            )

    def link(self, row: Mapping[str, Any], name: str, *, check: bool = True) -> bool:
        """Check where a record sits in its chat's chain (not its own hash). False: the chain is broken."""
        self.result.records += 1
        chat_id = _canonical("int", row.get("chat_id"))
        seq = _canonical("int", row.get("seq"))
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
        if state.broken or not check:
            return False
        if seq <= state.last_seq:
            self._fail(state, f"{name}: out of order (after seq {state.last_seq}): rows reordered?")
            return False
        if seq != state.last_seq + 1:
            if self.contiguous:
                self._fail(state, f"{name}: seq {state.last_seq + 1}..{seq - 1} missing: records deleted")
                return False
        elif prev != state.last_hash:
            self._fail(
                state, f"{name}: prev_hash does not match the record before it: a record changed or removed"
            )
            return False
        if row.get("record_type") == "anchor":
            state.last_seq = _canonical("int", row.get("anchor_last_seq"))
        else:
            state.last_seq = seq
        state.last_hash = row.get("record_hash") or ""
        return True

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


class ExportVerifier:
    """Verify export rows in any order: each record's hash (incident and embedded events) and each
    row's state columns as they arrive; the links per chat in seq order at the end, from small
    per-record tuples (seq, last seq, prev hash, hash, name)."""

    def __init__(self, *, contiguous: bool = True) -> None:
        self.contiguous = contiguous
        # per chat: (seq, last seq, prev hash, hash, incident id, message id, label); label is interned
        self.records: dict[int, list[tuple[int, int, bytes, bytes, Any, Any, str]]] = {}
        self.hash_problems: list[str] = []
        self.broken_chats: set[int] = set()

    def _problem(self, chat_id: int, message: str) -> None:
        if chat_id not in self.broken_chats:  # the first broken record of each chat
            self.broken_chats.add(chat_id)
            self.hash_problems.append(message)

    def _keep(self, chat_id: int, record: Mapping[str, Any], last_seq: int | None = None) -> None:
        seq = _canonical("int", record.get("seq"))
        kind = record.get("record_type")
        if kind == "event":
            label = sys.intern(f"event {record.get('event_kind')}={record.get('event_value')}")
        else:
            label = "purge anchor" if kind == "anchor" else "incident"
        self.records.setdefault(chat_id, []).append(
            (
                seq,
                seq if last_seq is None else last_seq,
                _packed(record.get("prev_hash")),
                _packed(record.get("record_hash")),
                record.get("incident_id"),
                record.get("message_id"),
                label,
            )
        )

    def add_row(self, row: Mapping[str, Any]) -> None:
        kind = row.get("record_type")
        chat_id = _canonical("int", row.get("chat_id"))
        name = describe(row)
        if kind == "anchor":
            self._keep(chat_id, row, _canonical("int", row.get("anchor_last_seq")))
            return
        if kind != "incident":
            self._problem(chat_id, f"{name}: unknown record_type {kind!r}")
            return
        if record_hash("incident", row, row.get("prev_hash") or "") != row.get("record_hash"):
            self._problem(chat_id, f"{name}: record_hash does not match its contents: the record was altered")
        self._keep(chat_id, row)
        events = row.get("events") or []
        if not isinstance(events, list) or not all(isinstance(ev, Mapping) for ev in events):
            self._problem(chat_id, f"{name}: events is not a list of events: the row was altered")
            return
        for ev in events:
            record = event_record(row, ev)
            ev_name = describe(record)
            if record_hash("event", record, record.get("prev_hash") or "") != record.get("record_hash"):
                self._problem(
                    chat_id, f"{ev_name}: record_hash does not match its contents: the event was altered"
                )
            self._keep(chat_id, record)
        derived = state_of(sorted(events, key=lambda ev: _canonical("int", ev.get("seq")) or 0))
        for field_name in STATE_FIELDS:
            shown = _canonical(KINDS[field_name], row.get(field_name))
            if shown != _canonical(KINDS[field_name], derived[field_name]):
                self._problem(
                    chat_id,
                    f"{name}: {field_name} says {shown!r} but its events say {derived[field_name]!r}: "
                    "the row was altered",
                )
                break

    def finish(self) -> VerifyResult:
        """Link every chat's records in seq order; hash problems first, then broken links."""
        chain = ChainVerifier(from_genesis=False, contiguous=self.contiguous)
        for chat_id in sorted(self.records):
            records = self.records[chat_id]
            records.sort(key=lambda r: r[0])
            for seq, last_seq, prev, digest, incident_id, message_id, label in records:
                if label == "purge anchor":
                    name = f"chat {chat_id} seq {seq}: purge anchor through seq {last_seq}"
                elif label == "incident":
                    name = f"chat {chat_id} seq {seq}: incident {incident_id} (message {message_id})"
                else:
                    name = f"chat {chat_id} seq {seq}: {label} of incident {incident_id} "
                    name += f"(message {message_id})"
                row = {
                    "record_type": "anchor" if label == "purge anchor" else "incident",
                    "chat_id": chat_id,
                    "seq": seq,
                    "anchor_last_seq": last_seq,
                    "prev_hash": prev.hex() if len(prev) == 32 else prev.decode(),
                    "record_hash": digest.hex() if len(digest) == 32 else digest.decode(),
                }
                chain.link(row, name, check=chat_id not in self.broken_chats)
            self.records[chat_id] = []
        result = chain.result
        result.problems[:0] = self.hash_problems
        return result


def _packed(digest: Any) -> bytes:
    """A hex digest in 32 bytes (anything else kept as its text, so a mismatch still shows)."""
    text = "" if digest is None else str(digest)
    if len(text) == 64:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    return text.encode()
