"""Streamed exports (CSV with BOM, XLSX, JSONL) of the incident log, and verification of the database
or of an export file on its own. Memory stays flat: incidents come from a server-side cursor in blocks,
the events of a block in one query, and rows go straight to the file (XLSX in xlsxwriter's
constant_memory mode).

One row per incident (`record_type` incident), in chain order per chat, with its current state and its
chain events in `events` (a JSON list); a retention purge leaves a rare row of its own (`record_type`
anchor). The field names are the same in every format (storage.chain.FIELDS). The hot path reads raw
driver values (no ORM or column-type layer) and converts only the columns that need it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import operator
import os
import re
import secrets
import zipfile
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO
from xml.etree.ElementTree import iterparse

from sqlalchemy import RowMapping, Select, column, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from storage.chain import (
    FIELD_NAMES,
    FIELDS,
    KINDS,
    ChainVerifier,
    ExportVerifier,
    VerifyResult,
    iso,
)
from storage.engine import SQLITE_BEGIN
from storage.models import ChainAnchor, ChainHead, Incident, IncidentEvent, IncidentState
from storage.types import ESCAPE_MARKER, as_utc, unescape_text

FORMATS = ("csv", "xlsx", "jsonl")
YIELD_PER = 2000
BLOCK = 1000  # incidents per block: one events query each
XLSX_MAX_CELL = 32767
XLSX_MAX_ROWS = 1_048_576  # header included
WIDTHS = {
    "text": 60, "reasons": 40, "contacts": 30, "events": 60, "prev_hash": 20, "record_hash": 20,
    "chat_title": 24,
}  # fmt: skip
TIME_WIDTH = 27

_INCIDENT_COLS = [c for c in Incident.__table__.c if c.name not in ("edit_key",)]
_STATE_COLS = [
    IncidentState.action_taken,
    IncidentState.review_result,
    IncidentState.report_status,
    IncidentState.legal_hold,
]

# ---- the chain records one by one (database verification) ----


def _incident_row(m: Mapping[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"record_type": "incident", "incident_id": m["id"]}
    for col in _INCIDENT_COLS:
        if col.name != "id":
            v = m[col.name]
            row[col.name] = iso(v) if isinstance(v, datetime) else v
    return row


def _event_row(m: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "record_type": "event",
        "chat_id": m["chat_id"],
        "seq": m["seq"],
        "incident_id": m["incident_id"],
        "message_id": m["message_id"],
        "event_kind": m["kind"],
        "event_value": m["value"],
        "event_actor": m["actor"],
        "event_detail": m["detail"],
        "batch_id": m["batch_id"],
        "recorded_at": iso(m["recorded_at"]),
        "prev_hash": m["prev_hash"],
        "record_hash": m["record_hash"],
    }


def _anchor_row(a: RowMapping) -> dict[str, Any]:
    return {
        "record_type": "anchor",
        "chat_id": a["chat_id"],
        "seq": a["first_seq"],
        "anchor_last_seq": a["last_seq"],
        "event_detail": f"{a['removed_count']} records removed by retention purge",
        "recorded_at": iso(a["created_at"]),
        "prev_hash": a["prev_hash"],
        "record_hash": a["record_hash"],
    }


async def _stream(conn: AsyncConnection, stmt: Select[Any], convert: Any) -> AsyncIterator[dict[str, Any]]:
    result = await conn.stream(stmt.execution_options(yield_per=YIELD_PER))
    async for row in result.mappings():
        yield convert(row)


async def iter_chain_rows(
    conn: AsyncConnection,
    *,
    chat_id: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    incident_ids: list[int] | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """Chain records in (chat_id, seq) order; since/until filter on when a record was appended."""
    inc = select(*_INCIDENT_COLS)
    ev = select(IncidentEvent.__table__)
    anchors = select(ChainAnchor.__table__)
    for col_chat, col_time, kind in (
        (Incident.chat_id, Incident.recorded_at, "inc"),
        (IncidentEvent.chat_id, IncidentEvent.recorded_at, "ev"),
        (ChainAnchor.chat_id, ChainAnchor.created_at, "anchor"),
    ):
        conds = []
        if chat_id is not None:
            conds.append(col_chat == chat_id)
        if since is not None:
            conds.append(col_time >= as_utc(since))
        if until is not None:
            conds.append(col_time < as_utc(until))
        if kind == "inc":
            inc = inc.where(*conds)
        elif kind == "ev":
            ev = ev.where(*conds)
        else:
            anchors = anchors.where(*conds)
    if incident_ids is not None:
        inc = inc.where(Incident.id.in_(incident_ids))
        ev = ev.where(IncidentEvent.incident_id.in_(incident_ids))
        anchors = anchors.where(ChainAnchor.id < 0)
    inc = inc.order_by(Incident.chat_id, Incident.seq)
    ev = ev.order_by(IncidentEvent.chat_id, IncidentEvent.seq)
    anchor_rows = [_anchor_row(a) for a in (await conn.execute(anchors)).mappings()]
    anchor_rows.sort(key=lambda r: (r["chat_id"], r["seq"]))

    # Two server-side cursors merged by (chat_id, seq); anchors are few and held in memory.
    streams = [_stream(conn, inc, _incident_row), _stream(conn, ev, _event_row)]
    heads: list[dict[str, Any] | None] = [await anext(s, None) for s in streams]
    ai = 0
    while True:
        best: int | None = None
        key: tuple[int, int] = (0, 0)
        for i, head in enumerate(heads):
            if head is not None and (best is None or (head["chat_id"], head["seq"]) < key):
                best, key = i, (head["chat_id"], head["seq"])
        if ai < len(anchor_rows) and (
            best is None or (anchor_rows[ai]["chat_id"], anchor_rows[ai]["seq"]) < key
        ):
            yield anchor_rows[ai]
            ai += 1
            continue
        if best is None:
            return
        row = heads[best]
        assert row is not None
        yield row
        heads[best] = await anext(streams[best], None)


def _reader_connection_options(conn: AsyncConnection) -> dict[str, Any]:
    # A long read must not hold SQLite's write lock (the bot keeps writing meanwhile).
    return {SQLITE_BEGIN: "DEFERRED"} if conn.dialect.name == "sqlite" else {}


# ---- export rows: one per incident ----

# Incident columns read raw, in export order (the export's names; `id` is incident_id).
_HEAD = [
    "chat_id", "seq", "id", "message_id", "chat_title", "thread_id", "sender_id", "sender_username",
    "sender_name", "sender_chat_id", "message_date", "received_at", "is_edit", "edit_date", "text",
    "hidden_links", "media_kind", "media_file_unique_id", "forward_origin", "category", "score",
    "suggested_action", "model_version", "reasons", "contacts", "decided_by",
]  # fmt: skip
_TAIL = ["recorded_at", "prev_hash", "record_hash"]
_EVENT_SRC = [
    "incident_id", "seq", "kind", "value", "actor", "detail", "batch_id", "recorded_at", "prev_hash",
    "record_hash",
]  # fmt: skip
_POS = {name: i for i, name in enumerate(FIELD_NAMES)}
_TIME_POS = [i for i, (_, kind) in enumerate(FIELDS) if kind == "time"]
_BOOL_POS = [i for i, (_, kind) in enumerate(FIELDS) if kind == "bool"]
_JSON_POS = [i for i, (_, kind) in enumerate(FIELDS) if kind == "json" and FIELDS[i][0] != "events"]
# text columns that may hold an escaped value (storage.types.SafeText)
_SAFE_POS = [
    _POS[c.name] for c in Incident.__table__.c if c.name in _POS and type(c.type).__name__ == "SafeText"
]
_EVENTS_POS = _POS["events"]
_IS_EDIT = _POS["is_edit"]
_STATE_POS = _POS["action_taken"]
assert FIELD_NAMES[_STATE_POS : _STATE_POS + 4] == (
    "action_taken", "review_result", "report_status", "legal_hold"
)  # fmt: skip
assert len(_HEAD) + 1 + 4 + 2 + len(_TAIL) == len(FIELDS)
_MARK = ESCAPE_MARKER[0]


def _sqlite_time(value: Any) -> str | None:
    # SQLAlchemy stores naive UTC as "YYYY-MM-DD HH:MM:SS.ffffff" in SQLite: rewrite, do not parse.
    if value is None:
        return None
    if value.__class__ is str and len(value) == 26 and value[10] == " ":
        return f"{value[:10]}T{value[11:]}+00:00"
    if not isinstance(value, datetime):
        value = datetime.fromisoformat(str(value))
    return iso(value)


def _time_converter(dialect: str) -> Callable[[Any], str | None]:
    return _sqlite_time if dialect == "sqlite" else iso


def _unescape(value: Any) -> Any:
    if value and value[0] == _MARK:
        return unescape_text(value)
    return value


_json_str = json.encoder.encode_basestring  # type: ignore[attr-defined]  # C-accelerated, keeps non-ASCII
_json_ascii = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]


def _event_json(ev: dict[str, Any], quote: Callable[[str], str]) -> str:
    detail, batch = ev["detail"], ev["batch_id"]
    return (
        f'{{"seq":{ev["seq"]},"kind":{quote(ev["kind"])},"value":{quote(ev["value"])},'
        f'"actor":{quote(ev["actor"])},"detail":{"null" if detail is None else quote(detail)},'
        f'"batch_id":{"null" if batch is None else int(batch)},"recorded_at":"{ev["recorded_at"]}",'
        f'"prev_hash":{quote(ev["prev_hash"])},"record_hash":{quote(ev["record_hash"])}}}'
    )


def _events_json(events: list[dict[str, Any]]) -> str:
    """The events as a JSON list (what json.dumps gives with compact separators, only faster)."""
    if not events:
        return "[]"
    text = "[" + ",".join([_event_json(ev, _json_str) for ev in events]) + "]"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates in a detail: escape them
            text = "[" + ",".join([_event_json(ev, _json_ascii) for ev in events]) + "]"
    return text


def _state(events: list[dict[str, Any]]) -> tuple[Any, Any, Any, bool]:
    action = review = report = None
    hold = False
    for ev in events:
        kind = ev["kind"]
        if kind == "action":
            action = ev["value"]
        elif kind == "review":
            review = ev["value"]
        elif kind == "report":
            report = ev["value"]
        elif kind == "legal_hold":
            hold = ev["value"] == "on"
    return action, review, report, hold


def _anchor_export_row(a: RowMapping) -> list[Any]:
    out: list[Any] = [None] * len(FIELDS)
    out[0] = "anchor"
    for name, value in (
        ("chat_id", a["chat_id"]),
        ("seq", a["first_seq"]),
        ("anchor_last_seq", a["last_seq"]),
        ("recorded_at", iso(a["created_at"])),
        ("prev_hash", a["prev_hash"]),
        ("record_hash", a["record_hash"]),
    ):
        out[_POS[name]] = value
    return out


@dataclass
class ExportBlock:
    """Rows in FIELDS order: ints, floats, bools, str; JSON fields as stored text, `events` as a list."""

    rows: list[list[Any]]
    records: int  # chain records in these rows (incidents + events + anchors)
    incidents: int


def _where(
    stmt: Select[*tuple[Any, ...]], chat_col: Any, time_col: Any, chat_id: Any, since: Any, until: Any
) -> Select[*tuple[Any, ...]]:
    if chat_id is not None:
        stmt = stmt.where(chat_col == chat_id)
    if since is not None:
        stmt = stmt.where(time_col >= as_utc(since))
    if until is not None:
        stmt = stmt.where(time_col < as_utc(until))
    return stmt


async def iter_export_blocks(
    conn: AsyncConnection,
    *,
    chat_id: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    incident_ids: list[int] | None = None,
) -> AsyncIterator[ExportBlock]:
    """Export rows in (chat_id, seq) order, in blocks. since/until select incidents by when they were
    recorded; each carries its events recorded before `until` (all of them without `until`)."""
    inc_t, ev_t = Incident.__table__, IncidentEvent.__table__
    time_text = _time_converter(conn.dialect.name)
    # untyped columns: raw driver values, no result processing
    inc: Select[*tuple[Any, ...]] = select(*(column(n) for n in [*_HEAD, *_TAIL])).select_from(inc_t)
    inc = _where(inc, inc_t.c.chat_id, inc_t.c.recorded_at, chat_id, since, until)
    anchors = select(ChainAnchor.__table__)
    anchors = _where(anchors, ChainAnchor.chat_id, ChainAnchor.created_at, chat_id, since, until)
    if incident_ids is not None:
        inc = inc.where(inc_t.c.id.in_(incident_ids))
        anchors = anchors.where(ChainAnchor.id < 0)
    inc = inc.order_by(inc_t.c.chat_id, inc_t.c.seq)
    anchor_rows = [_anchor_export_row(a) for a in (await conn.execute(anchors)).mappings()]
    anchor_rows.sort(key=lambda r: (r[1], r[2]))
    ev_base: Select[*tuple[Any, ...]] = select(*(column(n) for n in _EVENT_SRC)).select_from(ev_t)
    if until is not None:
        ev_base = ev_base.where(ev_t.c.recorded_at < as_utc(until))
    head = operator.itemgetter(*range(len(_HEAD)))
    tail = operator.itemgetter(*range(len(_HEAD), len(_HEAD) + len(_TAIL)))
    id_pos = _HEAD.index("id")
    ai = 0

    result = await conn.stream(inc.execution_options(yield_per=YIELD_PER))
    async for part in result.partitions(BLOCK):
        ids = [r[id_pos] for r in part]
        events: dict[int, list[dict[str, Any]]] = {}
        ev_stmt = ev_base.where(ev_t.c.incident_id.in_(ids)).order_by(ev_t.c.incident_id, ev_t.c.seq)
        n_events = 0
        for e in (await conn.execute(ev_stmt)).all():
            n_events += 1
            detail = e[5]
            events.setdefault(e[0], []).append(
                {
                    "seq": e[1],
                    "kind": e[2],
                    "value": e[3],
                    "actor": _unescape(e[4]),
                    "detail": _unescape(detail) if detail is not None else None,
                    "batch_id": e[6],
                    "recorded_at": time_text(e[7]),
                    "prev_hash": e[8],
                    "record_hash": e[9],
                }
            )
        rows: list[list[Any]] = []
        n_anchors = 0
        for r in part:
            evs = events.get(r[id_pos], [])
            out = ["incident", *head(r), *_state(evs), evs, None, *tail(r)]
            for i in _TIME_POS:
                v = out[i]
                if v is not None:
                    out[i] = time_text(v)
            for i in _SAFE_POS:
                v = out[i]
                if v and v[0] == _MARK:
                    out[i] = unescape_text(v)
            out[_IS_EDIT] = bool(out[_IS_EDIT])  # 0/1 on SQLite
            key = (out[1], out[2])
            while ai < len(anchor_rows) and (anchor_rows[ai][1], anchor_rows[ai][2]) < key:
                rows.append(anchor_rows[ai])
                ai += 1
                n_anchors += 1
            rows.append(out)
        yield ExportBlock(rows, records=len(part) + n_events + n_anchors, incidents=len(part))
    if ai < len(anchor_rows):
        rest = anchor_rows[ai:]
        yield ExportBlock(rest, records=len(rest), incidents=0)


# ---- writers ----


def _encodable(value: str) -> str:
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:  # lone surrogates: only JSONL keeps them exactly
        return value.encode("utf-8", "backslashreplace").decode("utf-8")


def _text_row(row: list[Any]) -> list[Any]:
    """A row for CSV and XLSX cells: booleans as true/false, events as JSON text."""
    out = row.copy()
    for i in _BOOL_POS:
        v = out[i]
        if v is not None:
            out[i] = "true" if v else "false"
    events = out[_EVENTS_POS]
    if events is not None:
        out[_EVENTS_POS] = _events_json(events)
    return out


class _CsvWriter:
    def __init__(self, raw: BinaryIO) -> None:
        # utf-8-sig writes the BOM that makes Excel read the file as UTF-8.
        self.file = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="", errors="backslashreplace")
        self.writer = csv.writer(self.file)
        self.writer.writerow(FIELD_NAMES)

    def write_block(self, rows: list[list[Any]]) -> None:
        # csv writes None as "" and floats with repr(): exact
        self.writer.writerows([_text_row(r) for r in rows])

    def close(self) -> None:
        self.file.close()


class _JsonlWriter:
    def __init__(self, raw: BinaryIO) -> None:
        self.file = io.TextIOWrapper(raw, encoding="utf-8", newline="\n")

    def write_block(self, rows: list[list[Any]]) -> None:
        lines = []
        for row in rows:
            data = dict(zip(FIELD_NAMES, row, strict=True))
            for i in _JSON_POS:
                v = row[i]
                if v is not None:
                    data[FIELD_NAMES[i]] = json.loads(v)
            line = json.dumps(data, ensure_ascii=False)
            try:
                line.encode("utf-8")
            except UnicodeEncodeError:
                line = json.dumps(data, ensure_ascii=True)
            lines.append(line + "\n")
        self.file.write("".join(lines))

    def close(self) -> None:
        self.file.close()


_MAX_EXACT = 2**53  # larger integers would lose digits as spreadsheet numbers: written as text
_XML_SPECIAL = re.compile(r"[&<>\x00-\x08\x0b-\x1f\ufffe\uffff]|_x[0-9A-Fa-f]{4}_")
_XL_LITERAL = re.compile(r"(_x[0-9A-Fa-f]{4}_)")
_XL_CONTROL = re.compile(r"([\x00-\x08\x0b-\x1f\ufffe\uffff])")
_WHITESPACE = " \t\n\r"


def _xml_text(value: str) -> str:
    """Cell text as SpreadsheetML wants it: a literal _xHHHH_ guarded, control characters as _xHHHH_
    (as Excel and xlsxwriter do), then &, < and > escaped. Nothing is ever written raw."""
    if not _XML_SPECIAL.search(value):
        return value
    value = _XL_LITERAL.sub(r"_x005F\1", value)
    value = _XL_CONTROL.sub(lambda m: f"_x{ord(m.group(1)):04X}_", value)
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _utf16_len(value: str) -> int:
    return len(value.encode("utf-16-le")) // 2


class _XlsxWriter:
    """xlsxwriter (constant_memory) makes the workbook: styles, widths, frozen header, filter, zip.
    The data rows, the bulk of the work, are written here as SpreadsheetML straight into the sheet's
    row stream, each column's cell kind decided once. Per-cell calls into xlsxwriter cost ~10 times
    more, and its constant_memory path writes any string shaped like "<r>...</r>" unescaped (a rich
    string), which user text must never be. If xlsxwriter's internals ever change shape, the
    public per-cell API is used instead (slow, same file)."""

    def __init__(self, raw: BinaryIO) -> None:
        import xlsxwriter
        from xlsxwriter.utility import xl_col_to_name

        # xlsxwriter zips into a file object as into a path; its own scratch files are tempfiles (0600).
        self.book = xlsxwriter.Workbook(
            raw,
            {
                "constant_memory": True,
                "strings_to_numbers": False,
                "strings_to_formulas": False,
                "strings_to_urls": False,
            },
        )
        self.sheet = self.book.add_worksheet("incidents")
        bold = self.book.add_format({"bold": True})
        for col, (name, kind) in enumerate(FIELDS):
            width = WIDTHS.get(name, TIME_WIDTH if kind == "time" else max(10, len(name) + 2))
            self.sheet.set_column(col, col, width)
        for col, name in enumerate(FIELD_NAMES):
            self.sheet.write_string(0, col, name, bold)
        self.sheet.freeze_panes(1, 0)
        self.row = 1
        self.truncated = 0
        self.letters = [xl_col_to_name(i) for i in range(len(FIELDS))]
        self.numeric = [kind in ("int", "float") for _, kind in FIELDS]
        sheet = self.sheet
        self.fast = all(
            hasattr(sheet, name)
            for name in ("_write_single_row", "_check_dimensions", "previous_row", "table", "fh")
        )
        if self.fast:
            sheet._write_single_row(1)  # flush the header row; data rows follow in the same stream

    def _text_cell(self, ref: str, text: str, special: bool) -> str:
        if len(text) > XLSX_MAX_CELL // 2 and _utf16_len(text) > XLSX_MAX_CELL:
            self.truncated += 1  # Excel's cell limit; CSV and JSONL keep the whole text
            text = text.encode("utf-16-le")[: 2 * XLSX_MAX_CELL].decode("utf-16-le", "ignore")
        space = ' xml:space="preserve"' if text[0] in _WHITESPACE or text[-1] in _WHITESPACE else ""
        if special:
            text = _xml_text(text)
        return f'<c r="{ref}" t="inlineStr"><is><t{space}>{text}</t></is></c>'

    def write_block(self, rows: list[list[Any]]) -> None:
        if not self.fast:
            return self._write_block_public(rows)
        if self.row + len(rows) > XLSX_MAX_ROWS:
            raise ValueError(f"an XLSX sheet holds at most {XLSX_MAX_ROWS - 1} rows: export CSV or JSONL")
        letters, numeric, text_cell = self.letters, self.numeric, self._text_cell
        r = self.row
        parts = []
        for row in rows:
            n = r + 1
            values = _text_row(row)
            # Checks that concern every text cell, done once per row: escapes needed? encodable?
            texts = [v for i, v in enumerate(values) if v and not numeric[i]]
            joined = "\n".join(texts)
            special = _XML_SPECIAL.search(joined) is not None
            if not joined.isascii():
                try:
                    joined.encode("utf-8")
                except UnicodeEncodeError:  # lone surrogates
                    values = [_encodable(v) if v.__class__ is str else v for v in values]
            cells = []
            for i, v in enumerate(values):
                if v is None or v == "":
                    continue
                if numeric[i] and v.__class__ is not str and -_MAX_EXACT < v < _MAX_EXACT:
                    cells.append(f'<c r="{letters[i]}{n}"><v>{v!r}</v></c>')
                else:
                    cells.append(text_cell(f"{letters[i]}{n}", str(v), special))
            parts.append(f'<row r="{n}">{"".join(cells)}</row>')
            r += 1
        if parts:
            sheet = self.sheet
            sheet.fh.write("".join(parts))
            sheet._check_dimensions(r - 1, len(FIELDS) - 1)
            sheet.previous_row = r - 1
        self.row = r
        return None

    def _write_block_public(self, rows: list[list[Any]]) -> None:
        sheet, r = self.sheet, self.row
        for row in rows:
            for col, v in enumerate(_text_row(row)):
                if v is None or v == "":
                    continue
                if self.numeric[col] and -_MAX_EXACT < v < _MAX_EXACT:
                    sheet.write_number(r, col, v)
                else:
                    sheet.write_string(r, col, _encodable(str(v)))
            r += 1
        self.row = r

    def close(self) -> None:
        self.sheet.autofilter(0, 0, max(self.row - 1, 0), len(FIELDS) - 1)
        self.book.close()


_WRITERS: dict[str, Callable[[BinaryIO], Any]] = {
    "csv": _CsvWriter,
    "xlsx": _XlsxWriter,
    "jsonl": _JsonlWriter,
}
# Exports carry solicitation texts and senders' ids: readable and writable by their owner only.
EXPORT_FILE_MODE = 0o600


def _private_temp(path: Path) -> tuple[int, Path]:
    """A new file beside `path`, created with EXPORT_FILE_MODE: the export never exists with the
    umask's mode, not even for a moment, and moving it over `path` replaces any wider-open old file."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.part")
    return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, EXPORT_FILE_MODE), tmp


@dataclass
class ExportResult:
    path: Path
    format: str
    rows: int  # rows in the file (incidents, and any purge anchors)
    incidents: int
    digest: str  # "sha256:<hex>" of the file written
    records: int = 0  # chain records in the file: incidents, their events, anchors


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


async def write_export(
    conn: AsyncConnection,
    *,
    path: Path,
    fmt: str,
    chat_id: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    incident_ids: list[int] | None = None,
) -> ExportResult:
    """Write the export rows of the selection to `path` in `fmt` (mode 0600; the file appears complete or
    not at all); returns counts and the file's digest."""
    path = Path(path)
    make = _WRITERS.get(fmt)
    if make is None:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    fd, tmp = _private_temp(path)
    rows = incidents = records = 0
    try:
        with open(fd, "wb") as raw:
            writer = make(raw)
            try:
                async for block in iter_export_blocks(
                    conn, chat_id=chat_id, since=since, until=until, incident_ids=incident_ids
                ):
                    writer.write_block(block.rows)
                    rows += len(block.rows)
                    incidents += block.incidents
                    records += block.records
            finally:
                writer.close()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return ExportResult(
        path=path, format=fmt, rows=rows, incidents=incidents, digest=file_digest(path), records=records
    )


async def export_records(
    engine: AsyncEngine,
    *,
    path: Path | str,
    fmt: str,
    chat_id: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> ExportResult:
    """Stream the incidents (all chats, or one), each with its events, to a file: one row per incident."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    async with engine.connect() as conn:
        conn = await conn.execution_options(**_reader_connection_options(conn))
        async with conn.begin():
            return await write_export(
                conn, path=Path(path), fmt=fmt, chat_id=chat_id, since=since, until=until
            )


# ---- verification ----


async def verify_database(engine: AsyncEngine, *, chat_id: int | None = None) -> VerifyResult:
    """Recompute every chain (or one chat's) from the database; names the first broken record per chat."""
    verifier = ChainVerifier(from_genesis=True, contiguous=True)
    async with engine.connect() as conn:
        conn = await conn.execution_options(**_reader_connection_options(conn))
        async with conn.begin():
            async for row in iter_chain_rows(conn, chat_id=chat_id):
                verifier.feed(row)
            heads = select(ChainHead.chat_id, ChainHead.last_seq, ChainHead.last_hash)
            if chat_id is not None:
                heads = heads.where(ChainHead.chat_id == chat_id)
            seen = set()
            for cid, last_seq, last_hash in (await conn.execute(heads)).all():
                seen.add(cid)
                verifier.check_head(cid, last_seq, last_hash)
    for cid in verifier.chats.keys() - seen:
        verifier.result.problems.append(f"chat {cid}: records exist but the chain head is missing")
    return verifier.result


_XL_ESCAPE = re.compile(r"_x([0-9A-Fa-f]{4})_")


def _cell_value(kind: str, value: Any) -> Any:
    """A CSV/XLSX cell (text or number) back to its export value."""
    if value is None:
        return None if kind != "str" else ""
    if kind == "int":
        if isinstance(value, str):
            return int(value) if value.strip() else None
        return int(value)
    if kind == "float":
        return float(value) if value != "" else None
    if kind == "bool":
        if isinstance(value, str):
            return None if value == "" else value.lower() == "true"
        return bool(value)
    if kind == "json":
        return json.loads(value) if value != "" else None
    return str(value)


def _read_csv(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        for cells in reader:
            yield {
                name: _cell_value(KINDS.get(name, "str"), cell)
                for name, cell in zip(header, cells, strict=False)
            }


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def _col_index(ref: str) -> int:
    n = 0
    for ch in ref:
        if ch.isalpha():
            n = n * 26 + (ord(ch.upper()) - 64)
        else:
            break
    return n - 1


def _read_xlsx(path: Path) -> Iterator[dict[str, Any]]:
    """A small streaming reader for the sheets we write (no runtime dependency beyond the stdlib)."""
    ns = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
    with zipfile.ZipFile(path) as zf:
        shared: list[str] = []
        if "xl/sharedStrings.xml" in zf.namelist():
            with zf.open("xl/sharedStrings.xml") as f:
                for _, el in iterparse(f):
                    if el.tag == ns + "si":
                        shared.append("".join(t.text or "" for t in el.iter(ns + "t")))
                        el.clear()
        sheet = next(n for n in zf.namelist() if n.startswith("xl/worksheets/sheet"))
        header: list[str] | None = None
        with zf.open(sheet) as f:
            for _, el in iterparse(f):
                if el.tag != ns + "row":
                    continue
                cells: dict[int, Any] = {}
                for c in el.iter(ns + "c"):
                    t = c.get("t")
                    idx = _col_index(c.get("r", ""))
                    if t == "inlineStr":
                        value: Any = "".join(x.text or "" for x in c.iter(ns + "t"))
                    else:
                        v = c.find(ns + "v")
                        if v is None or v.text is None:
                            continue
                        if t == "s":
                            value = shared[int(v.text)]
                        elif t == "b":
                            value = v.text == "1"
                        elif t in ("str", "e"):
                            value = v.text
                        else:
                            value = float(v.text) if any(ch in v.text for ch in ".eE") else int(v.text)
                    if isinstance(value, str):
                        value = _XL_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), value)
                    cells[idx] = value
                el.clear()
                if header is None:
                    header = [cells.get(i, "") for i in range(max(cells) + 1)]
                    continue
                yield {
                    name: _cell_value(KINDS.get(name, "str"), cells.get(i)) for i, name in enumerate(header)
                }


def read_export(path: Path | str) -> Iterator[dict[str, Any]]:
    """Rows of an export file (format from the extension: .csv, .xlsx, .jsonl/.json)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_csv(path)
    if suffix in (".xlsx",):
        return _read_xlsx(path)
    if suffix in (".jsonl", ".json", ".ndjson"):
        return _read_jsonl(path)
    raise ValueError(f"cannot tell the format of {path.name}: expected .csv, .xlsx or .jsonl")


def verify_export(path: Path | str, *, partial: bool = False) -> VerifyResult:
    """Verify an export file on its own: every record's hash (incidents and their embedded events), each
    row's state against its events, and the links per chat in seq order.

    The first record of each chat is taken as given (an export may start after a purge or mid-chain).
    `partial`: the file lists chosen incidents (a report batch, or an export limited by --since/--until),
    so gaps in seq are expected and only hashes and the links between consecutive records are checked.
    """
    verifier = ExportVerifier(contiguous=not partial)
    for row in read_export(path):
        verifier.add_row(row)
    return verifier.finish()
