"""Test factories: a standard group on the Bot API emulator, updates, and a running PTB app.

Update JSON is built in one place, `bot.emulator` (emu.message, emu.edit, emu.callback); this module
only names the usual cast and wraps the PTB start/stop sequence (run_polling() cannot run inside
pytest-asyncio's loop).
"""

from __future__ import annotations

import datetime as dtm
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from telegram import Update
from telegram.ext import Application, ContextTypes

from bot.emulator import DEFAULT_TOKEN, ApiError, Call, Emulator, UploadedFile, builders

__all__ = [
    "ADMIN_ID",
    "DEFAULT_TOKEN",
    "GROUP_ID",
    "OWNER_ID",
    "USER_ID",
    "ApiError",
    "Call",
    "Emulator",
    "UploadedFile",
    "builders",
    "make_emulator",
    "message_update",
    "polling",
    "record_errors",
    "update_of",
]

GROUP_ID = -1001234567890
OWNER_ID = 1000
ADMIN_ID = 1001
USER_ID = 2001
GROUP_TITLE = "测试群"


def make_emulator(token: str = DEFAULT_TOKEN, *, check_token: bool = False, **chat: Any) -> Emulator:
    """An emulator with one supergroup GROUP_ID: owner OWNER_ID, admin ADMIN_ID, member USER_ID.

    `chat` overrides add_chat's arguments (e.g. bot_rights={"can_delete_messages": False}).
    """
    emu = Emulator(token, check_token=check_token)
    emu.add_user(OWNER_ID, "群主", username="owner")
    emu.add_user(ADMIN_ID, "管理员", username="admin")
    emu.add_user(USER_ID, "小明", username="xiaoming")
    options: dict[str, Any] = {"admins": [ADMIN_ID], "owner": OWNER_ID, "members": [USER_ID], **chat}
    emu.add_chat(GROUP_ID, GROUP_TITLE, **options)
    return emu


def record_errors(application: Application[Any, Any, Any, Any, Any, Any]) -> list[BaseException]:
    """Collect every exception PTB hands to error handlers; tests assert the list stays empty."""
    errors: list[BaseException] = []

    async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        if context.error is not None:
            errors.append(context.error)

    application.add_error_handler(on_error)
    return errors


@asynccontextmanager
async def polling(
    application: Application[Any, Any, Any, Any, Any, Any], *, timeout: float = 1.0
) -> AsyncIterator[Application[Any, Any, Any, Any, Any, Any]]:
    """initialize, start, updater.start_polling; on exit the reverse (updater.stop, stop, shutdown)."""
    await application.initialize()
    try:
        await application.start()
        try:
            assert application.updater is not None
            await application.updater.start_polling(poll_interval=0.0, timeout=dtm.timedelta(seconds=timeout))
            try:
                yield application
            finally:
                await application.updater.stop()
        finally:
            await application.stop()
    finally:
        await application.shutdown()


def update_of(application: Application[Any, Any, Any, Any, Any, Any], data: dict[str, Any]) -> Update:
    """A PTB Update from an emulator update dict, for calling a handler directly."""
    update = Update.de_json(data, application.bot)
    assert update is not None
    return update


def message_update(
    application: Application[Any, Any, Any, Any, Any, Any],
    text: str | None = None,
    *,
    emu: Emulator | None = None,
    chat_id: int = GROUP_ID,
    user_id: int | None = USER_ID,
    edited: bool = False,
    **kwargs: Any,
) -> Update:
    """A PTB Update carrying one message built by the emulator (not queued), for calling a handler directly.

    `kwargs` go to Emulator.message (caption=, photo=True, entities=, forward_origin=, sender_chat=, ...);
    `edited=True` delivers it as edited_message.
    """
    emu = emu if emu is not None else make_emulator()
    message = emu.message(chat_id, user_id, text, push=False, **kwargs)
    if edited:
        message["edit_date"] = message["date"]
    key = "edited_message" if edited else "message"
    return update_of(application, {"update_id": 1, key: message})
