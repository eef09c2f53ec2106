"""A local Telegram Bot API for tests, `qinglang demo` and `qinglang bench e2e`.

The real python-telegram-bot client talks to it in-process (`emu.application_builder()` or
`emu.make_bot()`: httpx ASGITransport, no sockets) or over 127.0.0.1 (`async with emu.serve() as
base_url`, then `emu.application_builder(loopback=True)`). Tests set up chats and members
(`add_user`, `add_chat`, `set_admin`, `set_bot_rights`, `kick_bot`), inject updates (`message`,
`edit`, `callback`, `channel_post`, `command`), script failures (`fail`, `fail_randomly`, `delay`,
`before`) and read what the bot did (`calls`, `wait_calls`, `wait_for`, `sent`, `is_deleted`,
`deleted_at`, `files`). Update JSON is built here and in `builders` only.
"""

from bot.emulator import builders
from bot.emulator.core import DEFAULT_TOKEN, Emulator
from bot.emulator.state import ApiError, Call, ChatState, StoredMessage, UploadedFile

__all__ = [
    "DEFAULT_TOKEN",
    "ApiError",
    "Call",
    "ChatState",
    "Emulator",
    "StoredMessage",
    "UploadedFile",
    "builders",
]
