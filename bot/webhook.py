"""Webhook workers: `qinglang run --webhook URL` serves Telegram's POSTs with python-telegram-bot's own
webhook server (tornado), so several worker processes can share one PostgreSQL database behind a
reverse proxy.

- The secret token: PTB's webhook handler answers 403 to any POST whose
  `X-Telegram-Bot-Api-Secret-Token` header is missing or wrong; the token is registered with setWebhook.
- Durable before 200: PTB's handler awaits `update_queue.put(update)` before it answers. This module
  gives the Updater a `DurableUpdateQueue` whose `put` commits the update to the update journal
  (bot/journal.py, fsync'd) and only then hands it to the Application; an update delivered twice to the
  same worker is journaled once and handled once. Concurrent POSTs share one journal commit.
- Only one process should call setWebhook: the others run with `--no-set-webhook`, which answers
  PTB's bootstrap setWebhook locally (`SkipSetWebhookRequest`) instead of sending it to Telegram.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from telegram import Update
from telegram.ext import Updater
from telegram.request import BaseRequest, RequestData

from bot.journal import DelegatingRequest

if TYPE_CHECKING:
    from bot.context import QinglangApp

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
# Telegram's rule for secret_token: 1-256 characters A-Z, a-z, 0-9, _ and -.
SECRET_PATTERN = r"^[A-Za-z0-9_-]{1,256}$"


class WebhookSettings(BaseSettings):
    """Webhook settings: QINGLANG_WEBHOOK_* in the environment or .env, or `qinglang run` options."""

    model_config = SettingsConfigDict(
        env_prefix="QINGLANG_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    webhook_url: str | None = Field(
        default=None, description="Public HTTPS URL Telegram posts to (the reverse proxy); unset: polling"
    )
    webhook_listen: str = Field(default="127.0.0.1", description="Address the worker listens on")
    webhook_port: int = Field(default=8443, ge=1, le=65535, description="Port the worker listens on")
    webhook_path: str | None = Field(
        default=None, description="Path the worker serves; default: the path of webhook_url"
    )
    webhook_secret_token: SecretStr | None = Field(
        default=None, description="Secret Telegram sends in X-Telegram-Bot-Api-Secret-Token (required)"
    )
    webhook_set: bool = Field(
        default=True, description="Register the URL with setWebhook on start (false on extra workers)"
    )
    webhook_max_connections: int = Field(
        default=40, ge=1, le=100, description="setWebhook max_connections: Telegram's parallel POSTs"
    )

    def url_path(self) -> str:
        """The path PTB's server answers on."""
        if self.webhook_path is not None:
            return self.webhook_path
        return urlsplit(self.webhook_url or "").path or "/"

    def secret(self) -> str:
        """The secret token, checked against Telegram's rule."""
        import re

        if self.webhook_secret_token is None:
            raise ValueError("a webhook needs a secret token: set QINGLANG_WEBHOOK_SECRET_TOKEN")
        value = self.webhook_secret_token.get_secret_value()
        if not re.match(SECRET_PATTERN, value):
            raise ValueError("the secret token must be 1-256 characters of A-Z, a-z, 0-9, _ and -")
        return value


class DurableUpdateQueue(asyncio.Queue):  # type: ignore[type-arg]
    """The Updater's queue: `put` journals the update durably, then passes it to the Application.

    PTB's webhook handler answers 200 only after `put` returns, so Telegram (or the proxy) retries any
    update this worker has not made durable. Without a journal (journal_updates=false) it just passes on.
    """

    def __init__(self, application: QinglangApp) -> None:
        super().__init__()
        self.application = application
        self._pending: list[tuple[Update, asyncio.Future[bool]]] = []
        self._flushing = False

    def _journal(self) -> Any:
        services = self.application.bot_data.services
        return getattr(services, "journal", None) if services is not None else None

    async def put(self, item: Any) -> None:
        journal = self._journal()
        if journal is None or not isinstance(item, Update):
            await self.application.update_queue.put(item)
            return
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((item, fut))
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().create_task(self._flush(journal))
        if await fut:
            await self.application.update_queue.put(item)

    async def _flush(self, journal: Any) -> None:
        # Group commit: every POST waiting while a commit runs goes into the next one (one fsync each).
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    new = await asyncio.to_thread(journal.add, [u.to_dict() for u, _ in batch])
                except BaseException as exc:  # the POSTs fail with 500: Telegram retries them
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                seen: set[int] = set()
                for update, fut in batch:
                    uid = update.update_id
                    fresh = uid in new and uid not in seen  # twice in one batch: the first one only
                    seen.add(uid)
                    if not fut.done():
                        fut.set_result(fresh)
        finally:
            self._flushing = False


class SkipSetWebhookRequest(DelegatingRequest):
    """Wraps the bot's `BaseRequest`; answers setWebhook locally (success) so this worker never
    re-registers the URL: only one process behind the proxy should call setWebhook."""

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: Any = BaseRequest.DEFAULT_NONE,
        write_timeout: Any = BaseRequest.DEFAULT_NONE,
        connect_timeout: Any = BaseRequest.DEFAULT_NONE,
        pool_timeout: Any = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        if url.endswith("/setWebhook"):
            log.info("setWebhook skipped (--no-set-webhook): another process registers the URL")
            return 200, json.dumps({"ok": True, "result": True}).encode()
        return await super().do_request(
            url,
            method,
            request_data,
            read_timeout=read_timeout,
            write_timeout=write_timeout,
            connect_timeout=connect_timeout,
            pool_timeout=pool_timeout,
        )


def bot_request(webhook: WebhookSettings) -> BaseRequest | None:
    """The bot's request for `build_application(request=...)`: None keeps PTB's default."""
    if webhook.webhook_set:
        return None
    from bot.http_client import AiohttpRequest

    return SkipSetWebhookRequest(AiohttpRequest(connection_pool_size=256))


def use_durable_queue(application: QinglangApp) -> None:
    """Give the application an Updater over `DurableUpdateQueue` (call before initialize)."""
    application.updater = Updater(application.bot, DurableUpdateQueue(application))


def webhook_options(webhook: WebhookSettings, *, allowed_updates: list[str]) -> dict[str, Any]:
    """Keyword arguments for PTB's `run_webhook` / `Updater.start_webhook`."""
    if not webhook.webhook_url:
        raise ValueError("no webhook URL")
    return {
        "listen": webhook.webhook_listen,
        "port": webhook.webhook_port,
        "url_path": webhook.url_path(),
        "webhook_url": webhook.webhook_url,
        "secret_token": webhook.secret(),
        "allowed_updates": allowed_updates,
        "max_connections": webhook.webhook_max_connections,
    }


def run_webhook(application: QinglangApp, webhook: WebhookSettings, *, allowed_updates: list[str]) -> None:
    """Serve the webhook until interrupted (PTB's `run_webhook`: signals, start-up and shutdown)."""
    options = webhook_options(webhook, allowed_updates=allowed_updates)
    use_durable_queue(application)
    # bootstrap_retries=-1: keep trying setWebhook while Telegram is unreachable
    application.run_webhook(**options, bootstrap_retries=-1)
