"""Admin and member slash commands (filled in by the admin-commands work).

`bot/app.py` registers `command_handlers()` in the commands group and sends `BOT_COMMANDS` (admin
scope) and `MEMBER_COMMANDS` (all group members) to Telegram with set_my_commands in post_init.
Handlers reach the services through the typed context: `context.services` (see bot/context.py).
"""

from __future__ import annotations

from telegram import BotCommand
from telegram.ext import BaseHandler

# Shown to the admins of every group (BotCommandScopeAllChatAdministrators).
BOT_COMMANDS: list[BotCommand] = []
# Shown to every member of every group (BotCommandScopeAllGroupChats), e.g. /report.
MEMBER_COMMANDS: list[BotCommand] = []


def command_handlers() -> list[BaseHandler]:  # type: ignore[type-arg]
    """Every command handler, in the order they should be tried."""
    return []
