"""A second, smaller fake Bot API, left only for tests/bot/test_moderation.py (its FaultyApi subclass).

Every other bot test runs against the package's own emulator (bot/emulator) through tests/botenv.py and
the `env` fixture of tests/bot/conftest.py. Once test_moderation.py moves onto the emulator (whose
`fail`, `delay` and `before` script the same faults), this file goes.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from botenv import BOT_ID, BOT_USERNAME, GROUP, NAMES, OWNER, REPORT_CHAT, shared_model
from telegram.request import BaseRequest, RequestData


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


__all__ = [
    "BOT_ID", "BOT_USER", "GROUP", "OWNER", "REPORT_CHAT", "Call", "FakeBotApi", "shared_model", "user",
]  # fmt: skip
