"""The typed context every handler and job receives: `context.services` instead of string keys and casts."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from telegram.ext import Application, CallbackContext, ContextTypes, ExtBot

if TYPE_CHECKING:
    import storage
    from bot.caches import AdminCache, ChatSettingsCache
    from bot.classify_worker import ClassifyWorker
    from bot.config import Settings
    from bot.deletions import Deletions
    from bot.evidence import Evidence
    from bot.journal import UpdateJournal
    from bot.metrics import Metrics
    from bot.moderation import Classifier, MessageRecord, Outcome
    from bot.telegram_io import SafeTelegram


@dataclass
class Services:
    """Everything a handler needs, created once in `post_init` and closed in `post_shutdown`."""

    settings: Settings
    db: storage.Database
    classifier: Classifier  # replaced as a whole on /reload: handlers read it per update
    tg: SafeTelegram
    chats: ChatSettingsCache
    admins: AdminCache
    # Incidents and events: the database, or the local spool while it is unavailable.
    evidence: Evidence
    # Fetched updates journaled before polling confirms them (None: not polling through the journal).
    journal: UpdateJournal | None = None
    # Chats already told that the bot lacks a right: {(chat_id, "delete" | "restrict")}.
    rights_warned: set[tuple[int, str]] = field(default_factory=set)
    # Monotonic time of the last deletion notice per chat (notices are rate-limited per chat).
    last_notice: dict[int, float] = field(default_factory=dict)
    # Called with (record, outcome) after each group message: the demo's printout, metrics, tests.
    observers: list[Callable[[MessageRecord, Outcome], None]] = field(default_factory=list)
    # Prometheus collectors and the /metrics and /healthz server (bot/metrics.py).
    metrics: Metrics | None = None
    # The process that classifies fetched batches ahead of the handlers (None: all in-process).
    classify_worker: ClassifyWorker | None = None
    # The model's deletions, handled in batches behind the handlers (None: each in its handler).
    deletions: Deletions | None = None

    def spool_depth(self) -> int:
        """Evidence entries waiting in the spool for the database (a metrics gauge reads this)."""
        return self.evidence.depth()


class BotData:
    """`application.bot_data`: holds the services once post_init has built them."""

    def __init__(self) -> None:
        self.services: Services | None = None
        # Deferred start (`qinglang run`): the task bringing the services up, and why it failed.
        self.starting: asyncio.Task[None] | None = None
        self.startup_error: BaseException | None = None


class Context(CallbackContext[ExtBot[None], dict[Any, Any], dict[Any, Any], BotData]):
    """CallbackContext with a typed `services` property."""

    @property
    def services(self) -> Services:
        services = self.bot_data.services
        if services is None:  # only possible if a handler runs before post_init
            raise RuntimeError("services are not ready: post_init has not run")
        return services


CONTEXT_TYPES = ContextTypes(context=Context, bot_data=BotData)

QinglangApp = Application[ExtBot[None], Context, dict[Any, Any], dict[Any, Any], BotData, Any]
