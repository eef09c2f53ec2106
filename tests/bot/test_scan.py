"""`qinglang scan`: a small Telegram Desktop export written by the test, scanned twice, then exported."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import stat
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner

import storage
from bot.cli import main
from bot.incidents import new_incident
from bot.moderation import MessageRecord
from bot.scan import ExportError, bot_api_chat_id, export_text, parse_sender, read_export

EXPORT: dict[str, Any] = {
    "name": "测试群",
    "type": "private_supergroup",
    "id": 1234567890,
    "messages": [
        {"id": 1, "type": "message", "date": "2024-05-01T18:00:00", "date_unixtime": "1714557600",
         "from": "Alice", "from_id": "user100", "text": "大家早上好，今天天气不错"},
        {"id": 2, "type": "service", "date": "2024-05-01T18:01:00", "actor": "Bob",
         "action": "join_group_by_link", "text": ""},
        {"id": 3, "type": "message", "date": "2024-05-01T18:02:00", "date_unixtime": "1714557720",
         "from": "卖货的", "from_id": "user200",
         "text": ["出冰，货真价实，量大从优，需要的加V：", {"type": "bold", "text": "bing8888"}]},
        {"id": 4, "type": "message", "date": "2024-05-01T18:03:00", "date_unixtime": "1714557780",
         "from": "频道", "from_id": "channel555",
         "text": [{"type": "text_link", "text": "点这里", "href": "http://casino.example"},
                  " 澳门首家线上赌场，百家乐真人荷官，注册即送88元彩金，日赢万元"]},
        {"id": 5, "type": "message", "date": "2024-05-01T18:04:00", "from": "Alice", "from_id": "user100",
         "photo": "photos/p.jpg", "text": ""},
        {"id": 6, "type": "message", "date": "2024-05-01T18:05:00", "from": "Carol", "from_id": "user300",
         "text": "警方提醒：凡是让你刷单返利的都是诈骗，请大家提高警惕"},
    ],
}  # fmt: skip


@pytest.mark.parametrize(
    ("value", "text", "links"),
    [
        ("plain", "plain", ()),
        (["a", {"type": "bold", "text": "b"}, "c"], "abc", ()),
        ([{"type": "text_link", "text": "点", "href": "http://x.example"}], "点", ("http://x.example",)),
        ([{"type": "link", "text": "http://y.example"}], "http://y.example", ()),
        (None, "", ()),
        ([], "", ()),
    ],
)
def test_export_text(value: Any, text: str, links: tuple[str, ...]) -> None:
    assert export_text(value) == (text, links)


@pytest.mark.parametrize(
    ("export_id", "kind", "expected"),
    [
        (1234567890, "private_supergroup", -1001234567890),
        (1234567890, "public_supergroup", -1001234567890),
        (4567, "private_group", -4567),
        (42, "personal_chat", 42),
        (-1001234567890, "private_supergroup", -1001234567890),
    ],
)
def test_bot_api_chat_id(export_id: int, kind: str, expected: int) -> None:
    assert bot_api_chat_id(export_id, kind) == expected


def test_parse_sender() -> None:
    assert parse_sender("user100", -1) == (100, None)
    assert parse_sender("channel555", -1) == (None, -100555)
    assert parse_sender("nonsense", -1) == (None, None)
    assert parse_sender(None, -1) == (None, None)


def test_read_export_skips_service_and_empty_messages() -> None:
    messages = read_export(EXPORT)
    assert [m.message_id for m in messages] == [1, 3, 4, 6]
    assert {m.chat_id for m in messages} == {-1001234567890}
    assert messages[1].text.endswith("bing8888") and messages[1].sender_id == 200
    assert messages[2].hidden_links == ("http://casino.example",) and messages[2].sender_chat_id == -100555
    assert messages[0].message_date.isoformat() == "2024-05-01T10:00:00+00:00"  # from date_unixtime, UTC
    full = {"about": "x", "chats": {"list": [EXPORT, {"id": 9, "type": "personal_chat", "messages": []}]}}
    assert len(read_export(full)) == 4
    with pytest.raises(ExportError):
        read_export({"hello": 1})


def test_a_scanned_message_and_a_live_one_make_the_same_incident() -> None:
    """bot/incidents.new_incident builds both: same facts and verdict, same evidence record."""
    scanned = read_export(EXPORT)[2]
    live = MessageRecord(
        chat_id=scanned.chat_id, chat_title="测试群", message_id=4, thread_id=None, sender_id=None,
        sender_username=None, sender_name="频道", sender_chat_id=-100555, is_automatic_forward=False,
        message_date=scanned.message_date, is_edit=False, edit_date=None, text=scanned.text,
        hidden_links=("http://casino.example",), media_kind=None, media_file_unique_id=None,
        forward_origin=None, is_service=False,
    )  # fmt: skip
    contact = {"kind": "url", "value": "http://casino.example", "start": 0, "end": 21}
    verdict = SimpleNamespace(
        label="gambling", score=0.97, action="delete", reasons={"contacts": [contact]}, model_version="m1"
    )
    when = dt.datetime(2024, 5, 2, tzinfo=dt.UTC)
    from_scan = new_incident(scanned, verdict, received_at=when)
    assert from_scan == new_incident(live, verdict, received_at=when)
    assert from_scan.message_date == scanned.message_date and from_scan.contacts == [contact]
    assert from_scan.hidden_links == ["http://casino.example"] and from_scan.decided_by == "model"


def test_scan_records_history_once_and_exports(tmp_path: Path) -> None:
    export = tmp_path / "result.json"
    export.write_text(json.dumps(EXPORT, ensure_ascii=False), encoding="utf-8")
    url = f"sqlite+aiosqlite:///{tmp_path / 'scan.db'}"
    out = tmp_path / "incidents.csv"
    runner = CliRunner()

    first = runner.invoke(main, ["scan", str(export), "--database-url", url, "--export", str(out)])
    assert first.exit_code == 0, first.output
    assert "messages 4   flagged 2   new incidents 2   already recorded 0" in first.output
    assert "drug" in first.output and "gambling" in first.output
    assert storage.verify_export(out).ok

    again = runner.invoke(main, ["scan", str(export), "--database-url", url])
    assert again.exit_code == 0, again.output
    assert "new incidents 0   already recorded 2" in again.output

    async def stored() -> list[Any]:
        db = await storage.open_database(url)
        try:
            async with db.sessionmaker() as session:
                rows = await storage.list_incidents(session=session, chat_id=-1001234567890)
                events = [await storage.list_events(session=session, incident_id=r.id) for r in rows]
            return list(zip(rows, events, strict=True))
        finally:
            await db.close()

    rows = asyncio.run(stored())
    assert len(rows) == 2
    for incident, events in rows:
        assert incident.action_taken == "none" and incident.report_status is None
        assert [(e.kind, e.value, e.actor) for e in events] == [("action", "none", "scan")]
        assert "result.json" in (events[0].detail or "")


def test_cli_exports_are_owner_only(tmp_path: Path) -> None:
    """`qinglang scan --export` and `qinglang export -o` write 0600 files, even with a umask of 0."""
    export = tmp_path / "result.json"
    export.write_text(json.dumps(EXPORT, ensure_ascii=False), encoding="utf-8")
    url = f"sqlite+aiosqlite:///{tmp_path / 'scan.db'}"
    scanned, exported = tmp_path / "scanned.jsonl", tmp_path / "exported.xlsx"
    runner = CliRunner()
    old_umask = os.umask(0)
    try:
        first = runner.invoke(main, ["scan", str(export), "--database-url", url, "--export", str(scanned)])
        second = runner.invoke(main, ["export", "--url", url, "--format", "xlsx", "-o", str(exported)])
    finally:
        os.umask(old_umask)
    assert first.exit_code == 0, first.output
    assert second.exit_code == 0, second.output
    assert stat.S_IMODE(scanned.stat().st_mode) == 0o600
    assert stat.S_IMODE(exported.stat().st_mode) == 0o600
    assert storage.verify_export(exported).ok


def test_scan_rejects_what_is_not_an_export(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    result = CliRunner().invoke(
        main, ["scan", str(bad), "--database-url", f"sqlite+aiosqlite:///{tmp_path}/x.db"]
    )
    assert result.exit_code == 1 and "not JSON" in result.output
    good = tmp_path / "ok.json"
    good.write_text(json.dumps(EXPORT), encoding="utf-8")
    result = CliRunner().invoke(main, ["scan", str(good), "--export", str(tmp_path / "x.pdf")])
    assert result.exit_code == 2 and ".csv, .xlsx or .jsonl" in result.output
