"""The real PTB Application against the package's own Bot API emulator (bot/emulator), in-process.

`tests/bot/conftest.py` provides the `env` fixture: build_application with the emulator's httpx ASGI
transport, post_init run, a real SQLite file. Messages are injected with the emulator (so it knows
them, e.g. for deleteMessage) and handed straight to `application.process_update`: they pass through
the real handlers, filters and error handlers, with no polling loop to wait for; `process` also waits
for the deletions they queued (bot/deletions.py). What the bot did is
read from the emulator's own call log (`env.emu.calls(...)`, `env.texts_to(...)`).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from telegram import Update

from bot.emulator import Call, Emulator, UploadedFile

BOT_ID = 777000111
BOT_USERNAME = "qinglang_test_bot"
TOKEN = f"{BOT_ID}:AAtest-token-for-the-admin-commands-tests"
GROUP = -1001234567890
REPORT_CHAT = -1009876543210
OWNER = 1001
ADMIN = 1002
MEMBERS = (2001, 2002, 2003, 2004)
SPAMMER = 3001
NAMES = {
    OWNER: "群主",
    ADMIN: "管理员小王",
    SPAMMER: "推广达人",
    **{m: f"成员{i}" for i, m in enumerate(MEMBERS, 1)},
}

_update_ids = itertools.count(1)


@functools.cache
def shared_model() -> Any:
    """The shipped classifier, loaded once for all tests of the session."""
    import classifier

    return classifier.load()


def make_emulator() -> Emulator:
    """The test group (owner, one admin, members, a spammer) and a report chat."""
    emu = Emulator(TOKEN, bot_username=BOT_USERNAME)
    for uid, name in NAMES.items():
        emu.add_user(uid, name)
    emu.add_chat(GROUP, "测试群", admins=[ADMIN], owner=OWNER, members=[*MEMBERS, SPAMMER])
    emu.add_chat(REPORT_CHAT, "报告群", owner=OWNER)
    return emu


def chat_of(call: Call) -> int | None:
    """The chat a recorded call was addressed to."""
    value = call.params.get("chat_id")
    return int(value) if value is not None else None


def uploaded(call: Call) -> UploadedFile:
    """The file a sendDocument call carried, exactly as uploaded."""
    (file,) = [v for v in call.params.values() if isinstance(v, UploadedFile)]
    return file


@dataclass
class BotEnv:
    """A running application (post_init done), its emulator and a record of handler errors."""

    app: Any
    emu: Emulator
    errors: list[BaseException]
    db_url: str

    @property
    def services(self) -> Any:
        return self.app.bot_data.services

    def calls(self, method: str, *, chat_id: int | None = None) -> list[Call]:
        """The emulator's record of one method's calls (to one chat, if given), oldest first."""
        return [c for c in self.emu.calls(method) if chat_id is None or chat_of(c) == chat_id]

    def texts_to(self, chat_id: int) -> list[str]:
        """The texts the bot sent to a chat, oldest first."""
        return [str(c.params.get("text", "")) for c in self.calls("sendMessage", chat_id=chat_id)]

    async def send(
        self, text: str, *, sender: int, chat_id: int = GROUP, reply_to: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Deliver one message update; returns the message JSON (to reply to it later)."""
        msg = self.emu.message(chat_id, sender, text, reply_to=reply_to)
        await self.process({"message": msg})
        return msg

    async def press(self, data: str, *, sender: int, chat_id: int) -> None:
        """An inline-button press on the last message the bot sent to `chat_id`."""
        message = self.emu.sent(chat_id)[-1]
        await self.process({"callback_query": self.emu.callback(sender, message, data)})

    async def process(self, payload: dict[str, Any]) -> None:
        """Hand one update (without its update_id) to the application."""
        update = Update.de_json({"update_id": next(_update_ids), **payload}, self.app.bot)
        await self.app.process_update(update)
        await self.settle()

    async def settle(self) -> None:
        """Until the deletions the handlers queued (bot/deletions.py) have their outcomes."""
        services = self.app.bot_data.services
        if services is not None and services.deletions is not None:
            await services.deletions.wait_idle()

    def context(self) -> Any:
        """A context like the one a job gets, for running a job function directly."""
        return self.app.context_types.context(self.app)


@contextlib.asynccontextmanager
async def running_env(
    tmp_path: Path | None,
    *,
    emu: Emulator | None = None,
    observers: list[Any] | None = None,
    database_url: str | None = None,
    **settings: Any,
) -> AsyncIterator[BotEnv]:
    """The application with services up, its database in tmp_path (the `env` fixture) or at
    `database_url`. Entered again with the same tmp_path and emulator, it is the same bot restarted.
    `settings` override (any of them, telegram_retries included); `observers` see each group
    message's (record, outcome)."""
    from bot.app import build_application
    from bot.config import Settings

    emu = emu or make_emulator()
    if database_url is None:
        assert tmp_path is not None, "a database: tmp_path or database_url"
        database_url = f"sqlite+aiosqlite:///{tmp_path / 'qinglang.db'}"
    db_url = database_url
    defaults: dict[str, Any] = {"notice_min_interval_seconds": 0, "telegram_retries": 0}
    config = Settings(
        telegram_token=TOKEN,  # type: ignore[arg-type]
        database_url=db_url,
        _env_file=None,  # type: ignore[call-arg]
        **(defaults | settings),
    )
    app = build_application(
        config,
        request=emu.request(),
        get_updates_request=emu.request(),
        classifier=shared_model(),
        observers=observers,
    )
    errors: list[BaseException] = []

    async def record_error(update: object, context: Any) -> None:
        errors.append(context.error)

    app.add_error_handler(record_error)
    await app.initialize()
    assert app.post_init is not None
    await app.post_init(app)  # run_polling would; the tests drive the application themselves
    try:
        yield BotEnv(app=app, emu=emu, errors=errors, db_url=db_url)
        assert emu.internal_errors == []
    finally:
        await app.shutdown()
        if app.post_shutdown is not None:
            await app.post_shutdown(app)
