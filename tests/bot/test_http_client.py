"""The Bot API client on aiohttp (bot/http_client.py): the real PTB Bot over it, against the emulator on
127.0.0.1; answers, uploads, Telegram's errors, timeouts and a server that is gone."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from botenv import shared_model
from factories import ADMIN_ID, GROUP_ID, USER_ID, make_emulator
from telegram import Bot
from telegram.error import BadRequest, NetworkError, TimedOut

from bot.app import build_application
from bot.config import Settings
from bot.http_client import AiohttpRequest


def _bot(emu: object, base_url: str, **timeouts: float) -> Bot:
    return Bot(
        emu.token,  # type: ignore[attr-defined]
        base_url=base_url,
        request=AiohttpRequest(8, **timeouts),
        get_updates_request=AiohttpRequest(1, **timeouts),
    )


async def test_calls_uploads_and_errors_go_through_aiohttp() -> None:
    emu = make_emulator()
    async with emu.serve() as base_url, _bot(emu, base_url) as bot:
        me = await bot.get_me()
        assert me.is_bot and me.username
        sent = await bot.send_message(GROUP_ID, "你好，群友")
        assert emu.sent(GROUP_ID)[-1]["text"] == "你好，群友"
        first = emu.message(GROUP_ID, USER_ID, "一")
        second = emu.message(GROUP_ID, USER_ID, "二")
        assert await bot.delete_messages(GROUP_ID, [first["message_id"], second["message_id"]])
        assert all(emu.is_deleted(GROUP_ID, m["message_id"]) for m in (first, second))
        updates = await bot.get_updates(timeout=0)
        assert [u.message.text for u in updates if u.message] == ["一", "二"]
        document = await bot.send_document(ADMIN_ID, b"\x00\xff" * 5000, filename="导出.xlsx")
        assert emu.files[document.document.file_id].content == b"\x00\xff" * 5000
        with pytest.raises(BadRequest, match="not found"):
            await bot.delete_message(GROUP_ID, sent.message_id + 999)
    assert emu.internal_errors == []


async def test_a_slow_answer_is_timed_out() -> None:
    emu = make_emulator()
    emu.delay("getChat", 1.0)
    async with emu.serve() as base_url, _bot(emu, base_url, read_timeout=0.2) as bot:
        with pytest.raises(TimedOut):
            await bot.get_chat(GROUP_ID)


async def test_no_server_is_a_network_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    request = AiohttpRequest(1)
    await request.initialize()
    try:
        with pytest.raises(NetworkError, match="aiohttp"):
            await request.do_request(f"http://127.0.0.1:{port}/botx/getMe", "POST")
    finally:
        await request.shutdown()
    with pytest.raises(RuntimeError, match="not initialized"):
        await request.do_request(f"http://127.0.0.1:{port}/botx/getMe", "POST")


def test_proxies_come_from_the_environment_once_per_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    monkeypatch.setenv("no_proxy", "localhost,127.0.0.1")
    request = AiohttpRequest()
    assert request._proxy("https://api.telegram.org/botT/getMe") == "http://proxy.example:3128"
    assert request._proxy("http://127.0.0.1:8081/botT/getMe") is None, "NO_PROXY"
    monkeypatch.delenv("https_proxy")
    assert request._proxy("https://api.telegram.org/botT/sendMessage") is not None, "read once per host"


def test_the_bot_talks_to_telegram_through_aiohttp(tmp_path: Path) -> None:
    settings = Settings(
        telegram_token="123:abc",  # type: ignore[arg-type]
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'q.db'}",
        _env_file=None,  # type: ignore[call-arg]
    )
    app = build_application(settings, classifier=shared_model())
    assert isinstance(app.bot.request, AiohttpRequest)
