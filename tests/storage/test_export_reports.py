"""Exports in three formats that verify on their own; the report queue; the schema version check."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import openpyxl
import pytest
from sqlalchemy import text
from storage_helpers import CHAT, new_incident, record_many

import storage
from storage.chain import FIELD_NAMES


async def _fill(db: storage.Database) -> list[int]:
    ids = await record_many(db, 5)
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
    await _fill(db)
    out = tmp_path / f"export.{fmt}"
    result = await storage.export_records(db.engine, path=out, fmt=fmt)
    assert result.rows == 12 and result.incidents == 6 and result.digest.startswith("sha256:")
    verified = storage.verify_export(out)
    assert verified.ok, verified.problems
    rows = list(storage.read_export(out))
    assert list(rows[0]) == list(FIELD_NAMES)
    odd = next(r for r in rows if r["message_id"] == 50 and r["record_type"] == "incident")
    assert odd["text"] == '=HYPERLINK("x")\n换行,逗号"引号\x00\u200b'
    first = next(r for r in rows if r["record_type"] == "incident")
    assert first["action_taken"] == "delete_failed" and first["chat_id"] == CHAT


async def test_csv_has_bom_and_xlsx_opens_in_openpyxl(db: storage.Database, tmp_path: Path) -> None:
    await _fill(db)
    csv_path, xlsx_path = tmp_path / "e.csv", tmp_path / "e.xlsx"
    await storage.export_records(db.engine, path=csv_path, fmt="csv")
    await storage.export_records(db.engine, path=xlsx_path, fmt="xlsx")
    raw = csv_path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") and "刷单".encode() in raw
    book = openpyxl.load_workbook(xlsx_path, read_only=False)
    sheet = book.active
    assert sheet.freeze_panes == "A2"
    header = [c.value for c in sheet[1]]
    assert header == list(FIELD_NAMES)
    assert sheet.column_dimensions["P"].width and sheet.column_dimensions["P"].width > 30  # text column
    assert sheet.cell(2, header.index("text") + 1).value.startswith("急招刷单")


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
async def test_edited_export_fails_verification(db: storage.Database, tmp_path: Path, fmt: str) -> None:
    await _fill(db)
    out = tmp_path / f"export.{fmt}"
    await storage.export_records(db.engine, path=out, fmt=fmt)
    content = out.read_text(encoding="utf-8-sig" if fmt == "csv" else "utf-8")
    out.write_text(content.replace("abc3", "abc9", 1), encoding="utf-8-sig" if fmt == "csv" else "utf-8")
    result = storage.verify_export(out)
    assert not result.ok and "message 3" in result.problems[0]
    lines = content.splitlines(keepends=True)
    del lines[4]  # a row dropped from the middle
    out.write_text("".join(lines), encoding="utf-8-sig" if fmt == "csv" else "utf-8")
    assert not storage.verify_export(out).ok


async def test_filtered_export_by_chat(db: storage.Database, tmp_path: Path) -> None:
    await _fill(db)
    await record_many(db, 3, chat_id=-100777)
    out = tmp_path / "one.jsonl"
    result = await storage.export_records(db.engine, path=out, fmt="jsonl", chat_id=-100777)
    assert result.rows == 3
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
