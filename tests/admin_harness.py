"""The real PTB Application against a Bot API answered in-process, for the bot's tests.

The `env` fixture (import `env_fixture`) runs the application against the project's emulator
(bot/emulator, httpx ASGITransport) through `EmulatedApi`. Messages are injected with the emulator (so it
knows them, e.g. for deleteMessage) and handed straight to `application.process_update`: they pass
through the real handlers, filters and error handlers, with no polling loop to wait for.

`FakeBotApi` is a smaller stand-in (a PTB `BaseRequest` answering the methods the bot uses), kept for
tests that script their own answers.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from telegram import Update
from telegram.request import BaseRequest, RequestData

from bot.emulator import Emulator, UploadedFile

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


def user(uid: int) -> dict[str, Any]:
    return {"id": uid, "is_bot": False, "first_name": NAMES.get(uid, f"u{uid}"), "language_code": "zh-hans"}


BOT_USER = {"id": BOT_ID, "is_bot": True, "first_name": "清朗", "username": BOT_USERNAME}
_RIGHTS = dict.fromkeys(
    (
        "can_manage_chat", "can_delete_messages", "can_manage_video_chats", "can_restrict_members",
        "can_change_info", "can_invite_users", "can_post_stories", "can_edit_stories",
        "can_delete_stories", "can_pin_messages",
    ),
    True,
)  # fmt: skip


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    files: dict[str, Any]

    @property
    def chat_id(self) -> int | None:
        value = self.params.get("chat_id")
        return int(value) if value is not None else None


@dataclass
class FakeBotApi(BaseRequest):
    """Answers the Bot API methods the bot uses; `unreachable` users never started the bot privately."""

    admins: dict[int, list[int]] = field(default_factory=dict)  # chat -> admin user ids (owner first)
    unreachable: set[int] = field(default_factory=set)
    calls: list[Call] = field(default_factory=list)
    _ids: Any = field(default_factory=lambda: itertools.count(50_000))

    @property
    def read_timeout(self) -> float | None:
        return 1.0

    async def initialize(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    def of(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def texts_to(self, chat_id: int) -> list[str]:
        return [str(c.params.get("text", "")) for c in self.of("sendMessage") if c.chat_id == chat_id]

    def clear(self) -> None:
        self.calls.clear()

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: Any = None,
        write_timeout: Any = None,
        connect_timeout: Any = None,
        pool_timeout: Any = None,
    ) -> tuple[int, bytes]:
        name = url.rsplit("/", 1)[-1]
        params = dict(request_data.parameters) if request_data is not None else {}
        files = (
            dict(request_data.multipart_data)
            if request_data is not None and request_data.contains_files
            else {}
        )
        self.calls.append(Call(name, params, files))
        status, result = self.answer(name, params)
        if status != 200:
            body = {"ok": False, "error_code": status, "description": result}
        else:
            body = {"ok": True, "result": result}
        return status, json.dumps(body).encode()

    def answer(self, name: str, p: dict[str, Any]) -> tuple[int, Any]:
        chat_id = int(p["chat_id"]) if "chat_id" in p else None
        if name == "getMe":
            return 200, {**BOT_USER, "can_join_groups": True, "can_read_all_group_messages": True}
        if name in ("setMyCommands", "deleteMessage", "restrictChatMember", "banChatMember"):
            return 200, True
        if name == "answerCallbackQuery":
            return 200, True
        if name == "getChatAdministrators":
            members = [
                {"status": "creator" if i == 0 else "administrator", "user": user(uid), "is_anonymous": False,
                 **({} if i == 0 else {**_RIGHTS, "can_be_edited": False, "can_promote_members": False})}
                for i, uid in enumerate(self.admins.get(chat_id or 0, []))
            ]  # fmt: skip
            members.append(
                {"status": "administrator", "user": BOT_USER, "is_anonymous": False, "can_be_edited": False,
                 "can_promote_members": False, **_RIGHTS}
            )  # fmt: skip
            return 200, members
        if name in ("sendMessage", "sendDocument", "editMessageText"):
            if chat_id is not None and chat_id > 0 and chat_id in self.unreachable:
                return 403, "Forbidden: bot can't initiate conversation with a user"
            chat = {"id": chat_id, "type": "private" if (chat_id or 0) > 0 else "supergroup"}
            message: dict[str, Any] = {
                "message_id": int(p.get("message_id") or next(self._ids)),
                "date": int(dt.datetime.now(dt.UTC).timestamp()),
                "chat": chat,
                "from": BOT_USER,
            }
            if name == "sendDocument":
                message["document"] = {"file_id": "f1", "file_unique_id": "u1", "file_name": "x"}
                if p.get("caption"):
                    message["caption"] = p["caption"]
            else:
                message["text"] = p.get("text", "")
            return 200, message
        return 400, f"Bad Request: method {name} is not supported by the fake"


# --- updates ----------------------------------------------------------------------------------

_update_ids = itertools.count(1)
_message_ids = itertools.count(100)


def message_json(
    text: str,
    *,
    sender: int,
    chat_id: int = GROUP,
    reply_to: dict[str, Any] | None = None,
    message_id: int | None = None,
) -> dict[str, Any]:
    """A group (or, for a positive chat_id, private) message; a leading /command gets its entity."""
    chat: dict[str, Any] = (
        {"id": chat_id, "type": "private", "first_name": NAMES.get(chat_id, "x")}
        if chat_id > 0
        else {"id": chat_id, "type": "supergroup", "title": "测试群" if chat_id == GROUP else "报告群"}
    )
    msg: dict[str, Any] = {
        "message_id": message_id if message_id is not None else next(_message_ids),
        "date": int(dt.datetime.now(dt.UTC).timestamp()),
        "chat": chat,
        "from": user(sender),
        "text": text,
    }
    if text.startswith("/"):
        msg["entities"] = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
    if reply_to is not None:
        msg["reply_to_message"] = reply_to
    return msg


class EmulatedApi:
    """The emulator, with the look-ups of FakeBotApi; `unreachable` users get 403 in private."""

    def __init__(self) -> None:
        self.emu = Emulator(TOKEN, bot_username=BOT_USERNAME)
        for uid, name in NAMES.items():
            self.emu.add_user(uid, name)
        self.emu.add_chat(GROUP, "测试群", admins=[ADMIN], owner=OWNER, members=[*MEMBERS, SPAMMER])
        self.emu.add_chat(REPORT_CHAT, "报告群", owner=OWNER)
        self.unreachable = self.emu.blocked

    def request(self) -> Any:
        return self.emu.request()

    def set_admin(self, chat_id: int, user_id: int) -> None:
        self.emu.set_admin(chat_id, user_id)

    @property
    def calls(self) -> list[Call]:
        return [self._wrap(c) for c in self.emu.calls()]

    def of(self, method: str) -> list[Call]:
        return [self._wrap(c) for c in self.emu.calls(method)]

    def texts_to(self, chat_id: int) -> list[str]:
        return [str(c.params.get("text", "")) for c in self.of("sendMessage") if c.chat_id == chat_id]

    def clear(self) -> None:
        self.emu.clear_calls()

    @staticmethod
    def _wrap(call: Any) -> Call:
        files = {k: (v.filename, v.content) for k, v in call.params.items() if isinstance(v, UploadedFile)}
        return Call(call.method, dict(call.params), files)


@dataclass
class BotEnv:
    """A running application (post_init done) with its fake API and a record of handler errors."""

    app: Any
    api: EmulatedApi
    errors: list[BaseException]
    db_url: str

    @property
    def services(self) -> Any:
        return self.app.bot_data.services

    async def send(
        self, text: str, *, sender: int, chat_id: int = GROUP, reply_to: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Deliver one message update; returns the message JSON (to reply to it later)."""
        msg = self.api.emu.message(chat_id, sender, text, reply_to=reply_to)
        await self._process({"message": msg})
        return msg

    async def press(self, data: str, *, sender: int, chat_id: int) -> None:
        """An inline-button press on the last message the bot sent to `chat_id`."""
        message = self.api.emu.sent(chat_id)[-1]
        await self._process({"callback_query": self.api.emu.callback(sender, message, data)})

    async def _process(self, payload: dict[str, Any]) -> None:
        update = Update.de_json({"update_id": next(_update_ids), **payload}, self.app.bot)
        await self.app.process_update(update)

    def context(self) -> Any:
        """A context like the one a job gets, for running a job function directly."""
        return self.app.context_types.context(self.app)


@functools.cache
def shared_model() -> Any:
    """The shipped classifier, loaded once for all tests of the session."""
    import classifier

    return classifier.load()


@pytest.fixture(name="env")
async def env_fixture(tmp_path: Path) -> AsyncIterator[BotEnv]:
    """The application with services up; import `env_fixture` into a test module to use `env`."""
    from bot.app import build_application
    from bot.config import Settings

    api = EmulatedApi()
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'qinglang.db'}"
    settings = Settings(
        telegram_token=TOKEN,  # type: ignore[arg-type]
        database_url=db_url,
        notice_min_interval_seconds=0,
        telegram_retries=0,
        _env_file=None,  # type: ignore[call-arg]
    )
    app = build_application(
        settings, request=api.request(), get_updates_request=api.request(), classifier=shared_model()
    )
    errors: list[BaseException] = []

    async def record_error(update: object, context: Any) -> None:
        errors.append(context.error)

    app.add_error_handler(record_error)
    await app.initialize()
    assert app.post_init is not None
    await app.post_init(app)  # run_polling would; the tests drive the application themselves
    try:
        yield BotEnv(app=app, api=api, errors=errors, db_url=db_url)
        assert api.emu.internal_errors == []
    finally:
        await app.shutdown()
        if app.post_shutdown is not None:
            await app.post_shutdown(app)
