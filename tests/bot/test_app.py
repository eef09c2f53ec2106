"""The composition root and settings: handler groups, services lifecycle, configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from botenv import BOT_ID, shared_model
from telegram.ext import CallbackQueryHandler, MessageHandler

from bot import commands
from bot.app import COMMANDS, MODERATION, build_application, on_group_message, on_review_button
from bot.config import Settings
from bot.emulator import Emulator

TOKEN = f"{BOT_ID}:AAapp-tests-token-0123456789abcdefghij"


def settings(tmp_path: Path, **extra: Any) -> Settings:
    return Settings(
        telegram_token=TOKEN,  # type: ignore[arg-type]
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'q.db'}",
        _env_file=None,  # type: ignore[call-arg]
        **extra,
    )


def test_handler_groups_in_order(tmp_path: Path) -> None:
    app = build_application(settings(tmp_path), classifier=shared_model())
    assert sorted(app.handlers) == [MODERATION, COMMANDS], "done-marks need no group (ServicesGate)"
    (moderation,) = app.handlers[MODERATION]
    assert isinstance(moderation, MessageHandler) and moderation.callback is on_group_message
    first, *rest = app.handlers[COMMANDS]
    assert isinstance(first, CallbackQueryHandler) and first.callback is on_review_button
    assert len(rest) == 2, "two command handlers: each group message is checked against every one"
    assert set().union(*(h.commands for h in rest)) == {c.name for c in commands.COMMANDS}
    assert app.error_handlers, "an error handler logs and carries on"


def test_no_token_is_a_clear_error(tmp_path: Path) -> None:
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="QINGLANG_TELEGRAM_TOKEN"):
        build_application(s)


async def test_services_live_from_post_init_to_post_shutdown(tmp_path: Path) -> None:
    emu = Emulator(TOKEN)
    request = emu.request()
    app = build_application(
        settings(tmp_path), request=request, get_updates_request=emu.request(), classifier=shared_model()
    )
    assert app.bot_data.services is None
    await app.initialize()
    await app.post_init(app)  # type: ignore[misc]
    services = app.bot_data.services
    assert services is not None and services.classifier is shared_model()
    assert (tmp_path / "q.db").exists()
    assert services.db.dialect == "sqlite"
    await app.shutdown()
    await app.post_shutdown(app)  # type: ignore[misc]
    assert app.bot_data.services is None
    assert emu.internal_errors == []


def test_settings_from_environment_and_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(
        "QINGLANG_TELEGRAM_TOKEN=1:from-dotenv\nQINGLANG_DEFAULT_MODE=dry_run\nQINGLANG_LANGUAGE=en\n"
    )
    monkeypatch.setenv("QINGLANG_NOTICE_TTL_SECONDS", "15")
    s = Settings()
    assert s.telegram_token is not None and s.telegram_token.get_secret_value() == "1:from-dotenv"
    assert "from-dotenv" not in repr(s), "the token is a SecretStr"
    assert (s.default_mode, s.language, s.notice_ttl_seconds) == ("dry_run", "en", 15)


def test_settings_defaults() -> None:
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert (s.default_mode, s.language, s.notice_ttl_seconds) == ("enforce", "zh", 60)
