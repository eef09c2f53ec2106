"""Webhook mode (bot/webhook.py): PTB's own webhook server on 127.0.0.1 with the real Application and the
emulator as the Bot API. The secret token is enforced, setWebhook is registered once (or skipped),
updates are journaled before the 200, and a POST delivered twice is handled once."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from botenv import shared_model
from click.testing import CliRunner

from bot.app import ALLOWED_UPDATES, build_application
from bot.config import Settings
from bot.emulator import Emulator
from bot.webhook import SECRET_HEADER, WebhookSettings, bot_request, use_durable_queue, webhook_options

GROUP = -1003000000001
OWNER = 7001
SPAMMER = 7002
SECRET = "s3cret-Token_for-tests"
SPAM = "出冰，货真价实，量大从优，需要的加V：bing8888"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Worker:
    emu: Emulator
    url: str
    app: Any
    errors: list[BaseException]
    spool: Path

    def update(self, text: str, user: int = SPAMMER) -> dict[str, Any]:
        message = self.emu.message(GROUP, user, text, push=False)
        return {"update_id": 1000 + message["message_id"], "message": message}

    async def post(self, update: dict[str, Any], headers: dict[str, str] | None = None) -> httpx.Response:
        async with httpx.AsyncClient() as client:
            return await client.post(
                self.url, json=update, headers={SECRET_HEADER: SECRET} if headers is None else headers
            )

    def journaled(self) -> set[int]:
        if not (self.spool / "updates-journal.sqlite3").exists():
            return set()
        with sqlite3.connect(self.spool / "updates-journal.sqlite3") as conn:
            return {row[0] for row in conn.execute("select update_id from updates")}


async def start_worker(tmp_path: Path, emu: Emulator, *, set_webhook: bool = True) -> AsyncIterator[Worker]:
    port = free_port()
    spool = tmp_path / f"spool-{port}"
    settings = Settings(
        telegram_token=emu.token,  # type: ignore[arg-type]
        base_url=emu.base_url,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'q.db'}",
        spool_dir=spool,
        _env_file=None,  # type: ignore[call-arg]
    )
    hook = WebhookSettings(
        webhook_url=f"https://bot.example.org/tg/{port}",
        webhook_listen="127.0.0.1",
        webhook_port=port,
        webhook_secret_token=SECRET,  # type: ignore[arg-type]
        webhook_set=set_webhook,
        _env_file=None,  # type: ignore[call-arg]
    )
    app = build_application(settings, request=bot_request(hook), classifier=shared_model())
    errors: list[BaseException] = []

    async def record_error(update: object, context: Any) -> None:
        errors.append(context.error)

    app.add_error_handler(record_error)
    use_durable_queue(app)
    await app.initialize()
    if app.post_init:
        await app.post_init(app)
    assert app.updater is not None
    await app.updater.start_webhook(**webhook_options(hook, allowed_updates=ALLOWED_UPDATES))
    await app.start()
    try:
        yield Worker(emu, f"http://127.0.0.1:{port}/tg/{port}", app, errors, spool)
    finally:
        await app.updater.stop()
        await app.stop()
        await app.shutdown()
        if app.post_shutdown:
            await app.post_shutdown(app)


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    emulator = Emulator()
    emulator.add_user(OWNER, "群主")
    emulator.add_user(SPAMMER, "推广")
    emulator.add_chat(GROUP, "webhook group", owner=OWNER)
    async with emulator.serve():
        yield emulator


@pytest.fixture
async def worker(tmp_path: Path, emu: Emulator) -> AsyncIterator[Worker]:
    async for w in start_worker(tmp_path, emu):
        yield w


async def test_webhook_registered_with_secret_token(worker: Worker) -> None:
    (call,) = worker.emu.calls("setWebhook")
    assert call.params["url"].startswith("https://bot.example.org/tg/")
    assert call.params["secret_token"] == SECRET
    assert worker.emu.webhook is not None


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-secret-header"),
        pytest.param({SECRET_HEADER: "wrong-token"}, id="wrong-secret"),
        pytest.param({SECRET_HEADER: SECRET[:-1]}, id="prefix-of-secret"),
        pytest.param({SECRET_HEADER.lower(): SECRET + "x"}, id="longer-secret"),
    ],
)
async def test_requests_without_the_right_secret_are_rejected(
    worker: Worker, headers: dict[str, str]
) -> None:
    update = worker.update(SPAM)
    response = await worker.post(update, headers=headers)
    assert response.status_code == 403
    await asyncio.sleep(0.3)
    mid = update["message"]["message_id"]
    assert not worker.emu.is_deleted(GROUP, mid), "a forged POST must never reach the bot"
    assert update["update_id"] not in worker.journaled()
    assert not worker.errors


async def test_right_secret_is_judged_and_journaled_before_200(worker: Worker) -> None:
    update = worker.update(SPAM)
    response = await worker.post(update)
    assert response.status_code == 200
    # The 200 means durable: the update is already in the journal file, read from another connection.
    assert update["update_id"] in worker.journaled()
    mid = update["message"]["message_id"]
    await worker.emu.wait_for(lambda: worker.emu.is_deleted(GROUP, mid), timeout=10)
    assert not worker.errors


async def test_same_update_twice_is_handled_once(worker: Worker) -> None:
    update = worker.update(SPAM)
    first, second = await asyncio.gather(worker.post(update), worker.post(update))
    assert first.status_code == second.status_code == 200
    mid = update["message"]["message_id"]
    await worker.emu.wait_for(lambda: worker.emu.is_deleted(GROUP, mid), timeout=10)
    await asyncio.sleep(0.3)
    deletes = [c for c in worker.emu.calls("deleteMessage") if int(c.params["message_id"]) == mid]
    assert len(deletes) == 1
    assert not worker.errors


async def test_no_set_webhook_leaves_registration_to_another_process(tmp_path: Path, emu: Emulator) -> None:
    async for w in start_worker(tmp_path, emu, set_webhook=False):
        assert emu.calls("setWebhook") == []
        update = w.update(SPAM)
        assert (await w.post(update)).status_code == 200
        mid = update["message"]["message_id"]
        await emu.wait_for(lambda m=mid: emu.is_deleted(GROUP, m), timeout=10)  # type: ignore[misc]


def test_run_refuses_a_webhook_without_a_valid_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("QINGLANG_WEBHOOK_SECRET_TOKEN", raising=False)
    base = ["run", "--token", "1:x", "--webhook", "https://bot.example.org/tg"]
    result = CliRunner().invoke(main, base)
    assert result.exit_code == 2 and "secret token" in result.output
    result = CliRunner().invoke(main, [*base, "--secret-token", "has space"])
    assert result.exit_code == 2 and "A-Z" in result.output


def test_webhook_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QINGLANG_WEBHOOK_URL", "https://bot.example.org/hook/abc")
    monkeypatch.setenv("QINGLANG_WEBHOOK_SECRET_TOKEN", SECRET)
    monkeypatch.setenv("QINGLANG_WEBHOOK_PORT", "9001")
    monkeypatch.setenv("QINGLANG_WEBHOOK_SET", "false")
    hook = WebhookSettings(_env_file=None)  # type: ignore[call-arg]
    assert hook.url_path() == "/hook/abc" and hook.webhook_port == 9001 and not hook.webhook_set
    assert hook.secret() == SECRET
    assert SECRET not in repr(hook)
