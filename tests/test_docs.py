"""Docs are tested: every command the bot handles is in a command menu and in the README, and back."""

from __future__ import annotations

import re
from pathlib import Path

from telegram.ext import CommandHandler

from bot import commands

README = Path(__file__).resolve().parents[1] / "README.md"


def handled() -> set[str]:
    names: set[str] = set()
    for handler in commands.command_handlers():
        assert isinstance(handler, CommandHandler)
        names |= set(handler.commands)
    return names


def menus() -> set[str]:
    return {
        c.command for c in (*commands.BOT_COMMANDS, *commands.MEMBER_COMMANDS, *commands.PRIVATE_COMMANDS)
    }


def admin_section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("### Admin commands")
    end = text.find("\n## ", start)
    return text[start : end if end != -1 else len(text)]


def test_every_handled_command_is_in_a_menu_and_back() -> None:
    assert handled() == menus()


def test_admin_menu_matches_the_admin_handlers() -> None:
    admin = {c.name for c in commands.COMMANDS if c.scope == "admin"}
    assert {c.command for c in commands.BOT_COMMANDS} == admin
    assert {c.command for c in commands.MEMBER_COMMANDS} == {"report"}


def test_every_handled_command_is_in_the_readme() -> None:
    section = admin_section()
    documented: set[str] = set()
    for row in re.findall(r"^\|([^|\n]*)\|", section, flags=re.MULTILINE):  # first cell of each row
        documented |= set(re.findall(r"`/([a-z]+)", row))
    assert handled() == documented


def test_menu_descriptions_fit_telegram_limits() -> None:
    for c in (*commands.BOT_COMMANDS, *commands.MEMBER_COMMANDS, *commands.PRIVATE_COMMANDS):
        assert re.fullmatch(r"[a-z0-9_]{1,32}", c.command)
        assert 1 <= len(c.description) <= 256
