"""A local Telegram Bot API for tests, `qinglang demo` and `qinglang bench e2e`.

The real python-telegram-bot client talks to it in-process (`emu.application_builder()`, httpx
ASGITransport) or over 127.0.0.1 (`async with emu.serve() as base_url`). Tests inject updates
(`emu.message(...)`), script failures (`emu.fail(...)`) and read what the bot did (`emu.calls(...)`).
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
