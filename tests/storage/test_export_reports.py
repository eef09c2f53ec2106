"""Exports in three formats that verify on their own; the report queue; the schema version check."""

from __future__ import annotations

import asyncio
import csv
import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from sqlalchemy import text
from storage_helpers import CHAT, new_incident, record_many

import storage
from storage.chain import EVENT_KEYS, FIELD_NAMES


async def _fill(db: storage.Database, *, odd: bool = True) -> list[int]:
    ids = await record_many(db, 5)
    if odd:  # text that spreadsheets and CSV readers stumble over
        await storage.record_incident(
            sessionmaker=db.sessionmaker,
            incident=new_incident(50, text='=HYPERLINK("x")\n换行,逗号"引号\x00\u200b', sender_id=None),
        )
    async with db.sessionmaker.begin() as s:
        for i in ids:
            await storage.append_event(
                session=s, incident_id=i, kind="action", value="deleted", actor="model"
            )
        await storage.append_event(
            session=s,
            incident_id=ids[0],
            kind="action",
            value="delete_failed",
            actor="model",
            detail="错误: 400",
        )
    return ids


@pytest.mark.parametrize("fmt", ["csv", "xlsx", "jsonl"])
async def test_export_round_trip_verifies_on_its_own(db: storage.Database, tmp_path: Path, fmt: str) -> None:
    ids = await _fill(db)
    out = tmp_path / f"export.{fmt}"
    result = await storage.export_records(db.engine, path=out, fmt=fmt)
    # one row per incident; the 6 events ride inside their incidents' rows
    assert (result.rows, result.incidents, result.records) == (6, 6, 12)
    assert result.digest.startswith("sha256:")
    verified = storage.verify_export(out)
    assert verified.ok, verified.problems
    assert verified.records == 12 and verified.chats == 1
    rows = list(storage.read_export(out))
    assert len(rows) == 6 and all(r["record_type"] == "incident" for r in rows)
    assert list(rows[0]) == list(FIELD_NAMES)
    assert [r["message_id"] for r in rows] == [1, 2, 3, 4, 5, 50]
    assert [r["incident_id"] for r in rows[:5]] == ids
    odd = next(r for r in rows if r["message_id"] == 50)
    assert odd["text"] == '=HYPERLINK("x")\n换行,逗号"引号\x00\u200b'
    assert odd["events"] == [] and odd["action_taken"] in (None, "")
    first = rows[0]
    assert first["action_taken"] == "delete_failed" and first["chat_id"] == CHAT
    assert first["legal_hold"] is False and first["is_edit"] is False
    assert [(e["kind"], e["value"], e["detail"]) for e in first["events"]] == [
        ("action", "deleted", None),
        ("action", "delete_failed", "错误: 400"),
    ]
    assert all(tuple(e) == EVENT_KEYS for r in rows for e in r["events"])
    seqs = sorted([r["seq"] for r in rows] + [e["seq"] for r in rows for e in r["events"]])
    assert seqs == list(range(1, 13))


@pytest.mark.parametrize("fmt", ["csv", "xlsx", "jsonl"])
async def test_text_that_looks_like_markup_survives(db: storage.Database, tmp_path: Path, fmt: str) -> None:
    tricky = [
        "<r><t>不是富文本</t></r>",  # xlsxwriter would write this shape raw
        " _x0041_ 字面转义 \r\n",  # a literal escape, a carriage return, edge spaces
        "&amp; <b>\x01\x1f\ufffe",
    ]
    for i, value in enumerate(tricky):
        await storage.record_incident(
            sessionmaker=db.sessionmaker, incident=new_incident(i + 1, text=value, sender_name=value)
        )
    out = tmp_path / f"tricky.{fmt}"
    await storage.export_records(db.engine, path=out, fmt=fmt)
    rows = list(storage.read_export(out))
    assert [r["text"] for r in rows] == tricky and [r["sender_name"] for r in rows] == tricky
    assert storage.verify_export(out).ok
    if fmt == "xlsx":
        sheet = openpyxl.load_workbook(out).active
        assert sheet.cell(2, FIELD_NAMES.index("text") + 1).value == tricky[0]


async def test_csv_has_bom_and_xlsx_opens_in_openpyxl(db: storage.Database, tmp_path: Path) -> None:
    await _fill(db)
    csv_path, xlsx_path = tmp_path / "e.csv", tmp_path / "e.xlsx"
    await storage.export_records(db.engine, path=csv_path, fmt="csv")
    await storage.export_records(db.engine, path=xlsx_path, fmt="xlsx")
    raw = csv_path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") and "刷单".encode() in raw
    with open(csv_path, encoding="utf-8-sig", newline="") as f:
        assert len(list(csv.reader(f))) == 1 + 6  # header + one row per incident
    book = openpyxl.load_workbook(xlsx_path, read_only=False)
    sheet = book.active
    assert sheet.freeze_panes == "A2" and sheet.max_row == 1 + 6
    header = [c.value for c in sheet[1]]
    assert header == list(FIELD_NAMES)
    assert sheet.column_dimensions["P"].width and sheet.column_dimensions["P"].width > 30  # text column
    assert sheet.cell(2, header.index("text") + 1).value.startswith("急招刷单")
    assert sheet.cell(2, header.index("action_taken") + 1).value == "delete_failed"
    assert sheet.cell(2, header.index("message_id") + 1).value == 1  # a number, not text


def _edit_export(path: Path, fmt: str, change: Callable[[list[dict[str, Any]]], None]) -> None:
    """Edit an export as someone with a text editor or Excel would: rows of cells, written back."""
    if fmt == "jsonl":
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        change(rows)
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    elif fmt == "csv":
        with open(path, encoding="utf-8-sig", newline="") as f:
            rows = list(csv.DictReader(f))
        change(rows)
        with open(path, "w", encoding="utf-8-sig", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(FIELD_NAMES))
            writer.writeheader()
            writer.writerows(rows)
    else:
        sheet = openpyxl.load_workbook(path).active
        values = [list(r) for r in sheet.iter_rows(values_only=True)]
        rows = [dict(zip(values[0], r, strict=True)) for r in values[1:]]
        change(rows)
        book = openpyxl.Workbook()
        out = book.active
        out.append(list(FIELD_NAMES))
        for r in rows:
            out.append([r[name] for name in FIELD_NAMES])
        book.save(path)


def _events(row: dict[str, Any]) -> list[dict[str, Any]]:
    return row["events"] if isinstance(row["events"], list) else json.loads(row["events"])


def _set_events(row: dict[str, Any], events: list[dict[str, Any]]) -> None:
    row["events"] = events if isinstance(row["events"], list) else json.dumps(events, ensure_ascii=False)


def _row_of(rows: list[dict[str, Any]], message_id: int) -> dict[str, Any]:
    return next(r for r in rows if int(r["message_id"]) == message_id)


def _tamper_text(rows: list[dict[str, Any]]) -> None:
    row = _row_of(rows, 3)
    row["text"] = row["text"].replace("abc3", "abc9")


def _tamper_event(rows: list[dict[str, Any]]) -> None:
    row = _row_of(rows, 1)
    events = _events(row)
    events[1]["detail"] = "已删除"  # the failed delete made to look like it went through
    _set_events(row, events)


def _tamper_state(rows: list[dict[str, Any]]) -> None:
    _row_of(rows, 2)["action_taken"] = "none"


def _drop_event(rows: list[dict[str, Any]]) -> None:
    row = _row_of(rows, 1)
    _set_events(row, _events(row)[1:])  # its first event, from the middle of the chain


@pytest.mark.parametrize("fmt", ["csv", "xlsx", "jsonl"])
@pytest.mark.parametrize(
    ("change", "named"),
    [
        (_tamper_text, ["incident", "(message 3)", "altered"]),
        (_tamper_event, ["event action=delete_failed of incident", "(message 1)", "altered"]),
        (_tamper_state, ["(message 2)", "action_taken says 'none' but its events say 'deleted'"]),
        (lambda rows: rows.pop(2), ["missing: records deleted"]),
        (_drop_event, ["missing: records deleted"]),
        (lambda rows: rows.insert(4, dict(rows[1])), ["out of order"]),
    ],
    ids=["incident-field", "event-field", "state-column", "row-deleted", "event-deleted", "row-copied"],
)
async def test_edited_export_fails_verification(
    db: storage.Database,
    tmp_path: Path,
    fmt: str,
    change: Callable[[list[dict[str, Any]]], None],
    named: list[str],
) -> None:
    await _fill(db, odd=False)  # openpyxl cannot write the NUL character back
    out = tmp_path / f"export.{fmt}"
    await storage.export_records(db.engine, path=out, fmt=fmt)
    _edit_export(out, fmt, lambda rows: None)  # written back untouched by the other program: still fine
    assert storage.verify_export(out).ok, storage.verify_export(out).problems
    _edit_export(out, fmt, change)
    result = storage.verify_export(out)
    assert not result.ok
    assert all(part in result.problems[0] for part in named), result.problems


async def test_export_across_a_purge_has_an_anchor_row_and_verifies(
    db: storage.Database, tmp_path: Path
) -> None:
    ids = await _fill(db)
    async with db.sessionmaker.begin() as s:
        await storage.append_event(
            session=s, incident_id=ids[3], kind="legal_hold", value="on", actor="admin:1"
        )
    async with db.sessionmaker.begin() as s:
        settings = await storage.get_chat_settings(session=s, chat_id=CHAT)
        settings.retention_days = 1
    async with db.sessionmaker.begin() as s:
        purged = await storage.purge_expired(session=s, now=storage.records.utcnow() + timedelta(days=2))
    assert purged.incidents == 5
    for fmt in ("csv", "xlsx", "jsonl"):
        out = tmp_path / f"after.{fmt}"
        result = await storage.export_records(db.engine, path=out, fmt=fmt)
        rows = list(storage.read_export(out))
        kinds = [r["record_type"] for r in rows]
        assert kinds.count("incident") == result.incidents == 1 and "anchor" in kinds
        held = next(r for r in rows if r["record_type"] == "incident")
        assert held["legal_hold"] is True and held["action_taken"] == "deleted"
        verified = storage.verify_export(out)
        assert verified.ok, verified.problems


async def test_export_since_is_a_selection(db: storage.Database, tmp_path: Path) -> None:
    await _fill(db)
    cut = storage.records.utcnow()
    later = await record_many(db, 1, start=200)
    async with db.sessionmaker.begin() as s:
        old = await storage.find_incident(session=s, chat_id=CHAT, message_id=2)
        assert old is not None
        await storage.append_event(session=s, incident_id=old.id, kind="review", value="confirmed", actor="a")
    later += await record_many(db, 1, start=201)
    async with db.sessionmaker.begin() as s:
        await storage.append_event(session=s, incident_id=later[0], kind="action", value="deleted", actor="m")
    out = tmp_path / "since.jsonl"
    result = await storage.export_records(db.engine, path=out, fmt="jsonl", since=cut)
    assert result.incidents == result.rows == 2
    assert [r["message_id"] for r in storage.read_export(out)] == [200, 201]
    # an event of an older incident sits between them in the chain: a selection verifies with --partial
    assert storage.verify_export(out, partial=True).ok
    assert "missing" in storage.verify_export(out).problems[0]


async def test_filtered_export_by_chat(db: storage.Database, tmp_path: Path) -> None:
    await _fill(db)
    await record_many(db, 3, chat_id=-100777)
    out = tmp_path / "one.jsonl"
    result = await storage.export_records(db.engine, path=out, fmt="jsonl", chat_id=-100777)
    assert result.rows == result.incidents == 3
    assert {json.loads(line)["chat_id"] for line in out.read_text().splitlines()} == {-100777}


async def test_report_batches_claim_each_incident_once(db: storage.Database, tmp_path: Path) -> None:
    ids = await record_many(db, 12)
    other = await record_many(db, 3, chat_id=-100777)
    async with db.sessionmaker.begin() as s:
        for i in [*ids, *other]:
            await storage.append_event(session=s, incident_id=i, kind="report", value="queued", actor="model")

    async def claim(n: int) -> storage.ReportBatch | None:
        async with db.sessionmaker.begin() as s:
            return await storage.create_report_batch(
                session=s, chat_id=None, created_by=f"worker:{n}", path=tmp_path / f"b{n}.csv", limit=5
            )

    batches = [b for b in await asyncio.gather(*(claim(n) for n in range(5))) if b is not None]
    claimed = [i for b in batches for i in b.incident_ids]
    assert sorted(claimed) == sorted([*ids, *other])  # none twice, none left out
    for b in batches:
        assert b.file_digest == storage.export.file_digest(tmp_path / b.file_name)
        assert storage.verify_export(tmp_path / b.file_name, partial=True).ok
        rows = list(storage.read_export(tmp_path / b.file_name))
        assert [r["incident_id"] for r in rows] == sorted(b.incident_ids)  # one row per claimed incident
        assert all(r["report_status"] == "reported" for r in rows)
        assert all(r["events"][-1]["batch_id"] == b.id for r in rows)
    async with db.sessionmaker.begin() as s:
        assert await storage.list_pending_reports(session=s, chat_id=None) == []
        assert await storage.create_report_batch(session=s, chat_id=CHAT, created_by="w") is None
        got = await storage.get_incident(session=s, incident_id=ids[0])
        assert got is not None and got.report_status == "reported"
    assert (await storage.verify_database(db.engine)).ok


async def test_out_of_date_schema_is_refused(database_url: str) -> None:
    db = await storage.open_database(database_url)
    try:
        await storage.check_schema(db.engine)
        async with db.engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = '0000'"))
        with pytest.raises(storage.SchemaOutOfDate, match="run: qinglang db upgrade"):
            await storage.check_schema(db.engine)
    finally:
        await db.close()


async def test_non_empty_database_is_not_upgraded_silently(database_url: str) -> None:
    engine = storage.engine.make_engine(database_url)
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE something_else (id INTEGER)"))
    await engine.dispose()
    db = await storage.open_database(database_url)
    try:
        with pytest.raises(storage.SchemaOutOfDate, match="no qinglang schema"):
            await storage.check_schema(db.engine)
    finally:
        await db.close()
    await asyncio.to_thread(storage.upgrade_database, database_url)
    db = await storage.open_database(database_url)
    try:
        await storage.check_schema(db.engine)
    finally:
        await db.close()
