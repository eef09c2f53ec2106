"""Streamed exports (CSV with BOM, XLSX, JSONL) of the chain records, and verification of the database
or of an export file on its own. Memory stays flat: rows come from server-side cursors and go straight
to the file; XLSX uses xlsxwriter's constant_memory mode.

One row per chain record (`record_type` incident, event or anchor) in chain order per chat, with the
same field names in every format (storage.chain.FIELDS).
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import zipfile
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import iterparse

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from storage.chain import FIELD_NAMES, FIELDS, KINDS, ChainVerifier, VerifyResult, iso
from storage.engine import SQLITE_BEGIN
from storage.models import ChainAnchor, ChainHead, Incident, IncidentEvent, IncidentState
from storage.types import as_utc, dumps_json

FORMATS = ("csv", "xlsx", "jsonl")
YIELD_PER = 2000
XLSX_MAX_CELL = 32767
WIDTHS = {"text": 60, "reasons": 40, "contacts": 30, "prev_hash": 20, "record_hash": 20, "chat_title": 24}
TIME_WIDTH = 27

_INCIDENT_COLS = [c for c in Incident.__table__.c if c.name not in ("edit_key",)]
_STATE_COLS = [
    IncidentState.action_taken,
    IncidentState.review_result,
    IncidentState.report_status,
    IncidentState.legal_hold,
]


def _incident_row(m: Mapping[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"record_type": "incident", "incident_id": m["id"]}
    for col in _INCIDENT_COLS:
        if col.name != "id":
            v = m[col.name]
            row[col.name] = iso(v) if isinstance(v, datetime) else v
    for col in _STATE_COLS:
        row[col.key] = m[col.key]
    if row["legal_hold"] is None:
        row["legal_hold"] = False
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


def _anchor_row(a: Mapping[str, Any]) -> dict[str, Any]:
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
    inc = select(*_INCIDENT_COLS, *_STATE_COLS).outerjoin(
        IncidentState, IncidentState.incident_id == Incident.id
    )
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


# ---- writers ----


def _text_cell(kind: str, value: Any) -> str:
    if value is None:
        return ""
    if kind == "json":
        return dumps_json(value)
    if kind == "bool":
        return "true" if value else "false"
    if kind == "float":
        return repr(float(value))
    return str(value)


def _encodable(value: str) -> str:
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:  # lone surrogates: only JSONL keeps them exactly
        return value.encode("utf-8", "backslashreplace").decode("utf-8")


class _CsvWriter:
    def __init__(self, path: Path) -> None:
        # utf-8-sig writes the BOM that makes Excel read the file as UTF-8.
        self.file = open(path, "w", encoding="utf-8-sig", newline="", errors="backslashreplace")  # noqa: SIM115
        self.writer = csv.writer(self.file)
        self.writer.writerow(FIELD_NAMES)

    def write(self, row: Mapping[str, Any]) -> None:
        self.writer.writerow([_text_cell(kind, row.get(name)) for name, kind in FIELDS])

    def close(self) -> None:
        self.file.close()


class _JsonlWriter:
    def __init__(self, path: Path) -> None:
        self.file = open(path, "w", encoding="utf-8", newline="\n")  # noqa: SIM115

    def write(self, row: Mapping[str, Any]) -> None:
        data = {name: row.get(name) for name in FIELD_NAMES}
        if data["legal_hold"] is None and data["record_type"] == "incident":
            data["legal_hold"] = False
        line = json.dumps(data, ensure_ascii=False)
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:
            line = json.dumps(data, ensure_ascii=True)
        self.file.write(line + "\n")

    def close(self) -> None:
        self.file.close()


class _XlsxWriter:
    def __init__(self, path: Path) -> None:
        import xlsxwriter

        self.book = xlsxwriter.Workbook(
            str(path),
            {
                "constant_memory": True,
                "strings_to_numbers": False,
                "strings_to_formulas": False,
                "strings_to_urls": False,
            },
        )
        self.sheet = self.book.add_worksheet("records")
        bold = self.book.add_format({"bold": True})
        for col, (name, kind) in enumerate(FIELDS):
            width = WIDTHS.get(name, TIME_WIDTH if kind == "time" else max(10, len(name) + 2))
            self.sheet.set_column(col, col, width)
        for col, name in enumerate(FIELD_NAMES):
            self.sheet.write_string(0, col, name, bold)
        self.sheet.freeze_panes(1, 0)
        self.row = 1
        self.truncated = 0

    def write(self, row: Mapping[str, Any]) -> None:
        sheet, r = self.sheet, self.row
        for col, (name, kind) in enumerate(FIELDS):
            value = row.get(name)
            if value is None:
                continue
            if kind == "int" and abs(value) < 2**53:
                sheet.write_number(r, col, value)
            elif kind == "float":
                sheet.write_number(r, col, float(value))
            else:
                text = _encodable(_text_cell(kind, value))
                if len(text) > XLSX_MAX_CELL:
                    self.truncated += 1  # Excel's cell limit; CSV and JSONL keep the whole text
                sheet.write_string(r, col, text)
        self.row += 1

    def close(self) -> None:
        self.sheet.autofilter(0, 0, max(self.row - 1, 0), len(FIELDS) - 1)
        self.book.close()


def _writer(fmt: str, path: Path) -> Any:
    if fmt == "csv":
        return _CsvWriter(path)
    if fmt == "xlsx":
        return _XlsxWriter(path)
    if fmt == "jsonl":
        return _JsonlWriter(path)
    raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")


@dataclass
class ExportResult:
    path: Path
    format: str
    rows: int
    incidents: int
    digest: str  # "sha256:<hex>" of the file written


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


async def write_rows(rows: AsyncIterator[Mapping[str, Any]], *, path: Path, fmt: str) -> ExportResult:
    """Write chain rows to `path` in `fmt`; returns counts and the file's digest."""
    path = Path(path)
    writer = _writer(fmt, path)
    n = incidents = 0
    try:
        async for row in rows:
            writer.write(row)
            n += 1
            incidents += row["record_type"] == "incident"
    finally:
        writer.close()
    return ExportResult(path=path, format=fmt, rows=n, incidents=incidents, digest=file_digest(path))


async def export_records(
    engine: AsyncEngine,
    *,
    path: Path | str,
    fmt: str,
    chat_id: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> ExportResult:
    """Stream the chain records (all chats, or one) to a file."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    async with engine.connect() as conn:
        conn = await conn.execution_options(**_reader_connection_options(conn))
        async with conn.begin():
            rows = iter_chain_rows(conn, chat_id=chat_id, since=since, until=until)
            return await write_rows(rows, path=Path(path), fmt=fmt)


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
    """Verify an export file on its own: each record's hash, and the links between consecutive records.

    The first record of each chat is taken as given (an export may start mid-chain). `partial`: the file
    lists chosen incidents (a report batch), so gaps in seq are expected and only hashes are checked.
    """
    verifier = ChainVerifier(from_genesis=False, contiguous=not partial)
    for row in read_export(path):
        verifier.feed(row)
    return verifier.result
