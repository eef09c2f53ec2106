"""The composition root: builds the Application, wires the services, registers every handler.

Read `build_application` top to bottom: it is the whole bot.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from telegram import (
    BotCommandScopeAllChatAdministrators,
    BotCommandScopeAllGroupChats,
    BotCommandScopeAllPrivateChats,
    Chat,
    Update,
)
from telegram.ext import (
    ApplicationBuilder,
    BaseUpdateProcessor,
    CallbackQueryHandler,
    JobQueue,
    MessageHandler,
    filters,
)
from telegram.request import BaseRequest

import storage
from bot import commands, jobs
from bot.admin import after_admin_delete
from bot.caches import AdminCache, ChatSettingsCache
from bot.classify_worker import ClassifyWorker
from bot.config import Settings
from bot.context import CONTEXT_TYPES, Context, QinglangApp, Services
from bot.deletions import Deletions
from bot.evidence import Evidence, default_spool_dir
from bot.http_client import AiohttpRequest
from bot.journal import JournalingRequest, UpdateJournal, replay_unfinished
from bot.logs import add_secret
from bot.metrics import Metrics, check_health
from bot.moderation import (
    REVIEW_PREFIX,
    Classifier,
    MessageRecord,
    Outcome,
    is_service_message,
    message_record,
    moderate,
    parse_review_data,
    review_decision,
)
from bot.notices import remove_notice_later
from bot.telegram_io import SafeTelegram
from storage.spool import Spool

log = logging.getLogger(__name__)

# Handler groups run in this order; within a group the first matching handler wins, and every group
# sees every update. Moderation comes first so evidence is taken before any command reacts.
# Fetched updates are journaled by the getUpdates request itself (bot/journal.py), before any group, and
# marked done by `ServicesGate` once every group has run.
MODERATION = 0
COMMANDS = 1

# What the bot asks Telegram for. chat_member updates (admin changes) need the bot to be an admin.
ALLOWED_UPDATES = [
    Update.MESSAGE,
    Update.EDITED_MESSAGE,
    Update.CALLBACK_QUERY,
    Update.MY_CHAT_MEMBER,
    Update.CHAT_MEMBER,
]

GROUP_CHAT_TYPES = frozenset({Chat.GROUP, Chat.SUPERGROUP})


class _GroupMessages(filters.UpdateFilter):
    """Group and supergroup messages and their edits: text, captions, forwards, via-bot messages.
    Service messages (joins, pins, title changes…) are never judged.

    One plain check instead of PTB's composed filters (`ChatType.GROUPS & (UpdateType.MESSAGE |
    UpdateType.EDITED_MESSAGE) & ~StatusUpdate.ALL`, the same set): every update passes here."""

    __slots__ = ()

    def filter(self, update: Update) -> bool:
        message = update.message or update.edited_message
        return (
            message is not None and message.chat.type in GROUP_CHAT_TYPES and not is_service_message(update)
        )


GROUP_MESSAGES = _GroupMessages(name="group_messages")

Observer = Callable[[MessageRecord, Outcome], None]


# --- handlers: parse, call the pipeline, act --------------------------------------------------


async def on_group_message(update: Update, context: Context) -> None:
    """Judge every group message and edit; schedule the removal of any deletion notice."""
    record = message_record(update)
    if record is None:
        return
    services = context.services
    started = time.perf_counter()
    try:
        outcome = await moderate(record, services, update_id=update.update_id)
    finally:
        if services.classify_worker is not None:  # a verdict prefetched but never asked for (skipped)
            services.classify_worker.discard(record.key)
    outcome.extra["started"] = started
    if outcome.status != "queued":  # queued: bot/deletions.py calls message_done with the outcome
        await message_done(services, context.job_queue, record, outcome)


async def message_done(
    services: Services, job_queue: JobQueue[Any] | None, record: MessageRecord, outcome: Outcome
) -> None:
    """A group message's final outcome: its notice removes itself later; observers and the log see it."""
    started = outcome.extra.pop("started", None)
    if isinstance(started, float):
        outcome.extra["handled_seconds"] = time.perf_counter() - started  # for the observers (metrics)
    if outcome.notice_message_id is not None:
        await remove_notice_later(services, job_queue, record.chat_id, outcome.notice_message_id)
    for observe in services.observers:
        observe(record, outcome)
    if outcome.status not in ("ok", "skipped", "off"):
        log.info(
            "chat %s message %s: %s (incident %s)",
            record.chat_id,
            record.message_id,
            outcome.summary(),
            outcome.incident_id,
            # structured fields (bot/logfmt.py); never the message's text
            extra={
                "event": "moderated",
                "chat_id": record.chat_id,
                "message_id": record.message_id,
                "status": outcome.status,
                "category": outcome.category,
                "incident_id": outcome.incident_id,
            },
        )


async def on_review_button(update: Update, context: Context) -> None:
    """An admin pressed 删除/Delete or 忽略/Keep under a review message."""
    query = update.callback_query
    if query is None:
        return
    services = context.services
    choice = parse_review_data(query.data)
    if choice is None:
        await services.tg.answer_callback(query.id)
        return
    result = await review_decision(
        choice, admin_id=query.from_user.id, admin_name=query.from_user.full_name, services=services
    )
    await services.tg.answer_callback(query.id, result.answer)
    if result.outcome is not None:  # a delete: counted like the model's, its notice removed later
        actor = f"admin:{query.from_user.id}"
        await after_admin_delete(services, context.job_queue, result.outcome, actor=actor)
    message = query.message
    if result.new_text is not None and message is not None:
        original = getattr(message, "text", None) or ""
        await services.tg.edit_message_text(
            message.chat.id, message.message_id, f"{original}\n\n{result.new_text}"[:4096]
        )


def update_finished(application: QinglangApp) -> Callable[[object], None]:
    """Called once every handler group has run for an update (`ServicesGate`, journal replay): it need
    not be replayed after a crash."""

    def finished(update: object) -> None:
        services = application.bot_data.services
        if services is None or services.journal is None or not isinstance(update, Update):
            return
        if services.deletions is not None and services.deletions.holds(update.update_id):
            return  # marked once its deletion's outcome is recorded (bot/deletions.py)
        mark_done(services.journal, update.update_id, idle=application.update_queue.empty())

    return finished


def mark_done(journal: UpdateJournal, update_id: int, *, idle: bool) -> None:
    """An update need not be replayed after a crash: the mark is written with the next fetched batch's
    commit (bot/journal.py) or, `idle` (no update queued), shortly after in a thread."""
    journal.mark_done([update_id], flush=False)
    if idle:
        journal.flush_soon(asyncio.get_running_loop())


async def job_drain_spool(context: Context) -> None:
    """Evidence spooled while the database was unavailable goes into it as soon as it answers."""
    if context.bot_data.services is not None:  # None while still starting (deferred services)
        await context.services.evidence.drain()


async def on_error(update: object, context: Context) -> None:
    """Log and carry on: one bad update must never stop the bot."""
    log.error("error while handling an update", exc_info=context.error)


# --- services: created in post_init, closed in post_shutdown ------------------------------------


def spool_dir(settings: Settings) -> Path:
    """Where spooled evidence and the update journal live."""
    return settings.spool_dir or default_spool_dir(settings.database_url)


class ServicesGate(BaseUpdateProcessor):
    """PTB's update processing, one update at a time, held until the services are up: with deferred
    services, polling starts while the model loads, and no update is judged before it can be.

    `finished` is called with each update once all its handler groups have run (the journal's
    done-mark): here rather than in a last handler group, which every update would pay to dispatch."""

    def __init__(self, finished: Callable[[object], None] | None = None) -> None:
        super().__init__(max_concurrent_updates=1)
        self._open = asyncio.Event()
        self.finished = finished

    def open(self) -> None:
        self._open.set()

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        if not self._open.is_set():
            await self._open.wait()
        await coroutine  # PTB's process_update: handler errors went to the error handlers
        if self.finished is not None:
            self.finished(update)

    async def initialize(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass


def _post_init(
    settings: Settings,
    preloaded: Classifier | None,
    observers: list[Observer],
    journal: UpdateJournal | None,
    fetcher: JournalingRequest | None,
    gate: ServicesGate,
    defer: bool,
) -> Callable[[QinglangApp], Any]:
    async def post_init(application: QinglangApp) -> None:
        if not defer:
            await start_services(application, None)
            gate.open()
            return
        # Polling starts now; the updates it fetches are journaled and wait at the gate until the
        # services are up. The journal's unfinished updates are read first: those fetched from here on
        # are processed by polling, not replayed.
        pending = await asyncio.to_thread(journal.unfinished) if journal is not None else None
        application.bot_data.starting = asyncio.get_running_loop().create_task(
            _start_deferred(application, pending), name="qinglang-services"
        )

    async def _start_deferred(application: QinglangApp, pending: list[dict[str, Any]] | None) -> None:
        try:
            await start_services(application, pending)
        except Exception as exc:
            log.error("the bot could not start its services", exc_info=exc)
            application.bot_data.startup_error = exc
            while not application.running:  # stop_running acts on a running application only
                await asyncio.sleep(0.05)
            application.stop_running()
            return
        gate.open()

    async def start_services(application: QinglangApp, pending: list[dict[str, Any]] | None) -> None:
        # The model loads (~1.3 s, mostly unpickling) in a thread while the database opens.
        loading: asyncio.Future[Classifier] | None = None
        if preloaded is None:
            import classifier

            loading = asyncio.ensure_future(asyncio.to_thread(classifier.load, settings.model_path))
        try:
            db = await storage.open_database(settings.database_url)
        except BaseException:
            if loading is not None:
                await asyncio.gather(loading, return_exceptions=True)
            raise
        try:
            await storage.check_schema(db.engine)
            model: Classifier
            if loading is None:
                assert preloaded is not None  # loading started exactly when nothing was preloaded
                model = preloaded
            else:
                model = await loading
        except BaseException:
            if loading is not None:
                await asyncio.gather(loading, return_exceptions=True)
            await db.close()
            raise
        metrics = Metrics()
        tg = SafeTelegram(
            application.bot,
            retries=settings.telegram_retries,
            max_retry_after=settings.max_retry_after_seconds,
            backoff=settings.telegram_backoff_seconds,
            on_api_error=metrics.api_error,
        )
        # Launched by the first fetched batch (bot/classify_worker.py): not on the way to the first
        # getUpdates, and never with webhooks, where no batch is fetched.
        worker = None
        if settings.classify_worker and ClassifyWorker.usable(model) and fetcher is not None:
            worker = ClassifyWorker(model)
        application.bot_data.services = Services(
            settings=settings,
            db=db,
            classifier=model,
            tg=tg,
            chats=ChatSettingsCache(
                db, default_mode=settings.default_mode, ttl=settings.chat_settings_cache_seconds
            ),
            admins=AdminCache(tg, ttl=settings.admin_cache_seconds),
            evidence=Evidence(db, Spool(spool_dir(settings)), retry_seconds=settings.spool_retry_seconds),
            journal=journal,
            observers=[*observers, metrics.observe],
            metrics=metrics,
            classify_worker=worker,
        )
        services = application.bot_data.services
        if settings.batch_deletions:

            async def finished(record: MessageRecord, outcome: Outcome, update_id: int | None) -> None:
                await message_done(services, application.job_queue, record, outcome)
                if update_id is not None and services.journal is not None:
                    mark_done(services.journal, update_id, idle=application.update_queue.empty())

            services.deletions = Deletions(services, finished)
        if worker is not None and fetcher is not None:
            # Each fetched batch goes to the worker before PTB parses it; it judges with whatever model
            # the services hold then (a /reload forks a new worker).
            fetcher.on_batch = lambda updates: worker.prefetch_updates(updates, services.classifier)
        metrics.read_spool_depth(services.spool_depth)
        await metrics.serve(
            lambda: check_health(application.bot_data.services),
            host=settings.metrics_host,
            port=settings.metrics_port,
        )
        # After a crash: spooled evidence first (in order), then the updates fetched but never finished.
        await services.evidence.drain()
        if journal is not None:
            await replay_unfinished(application, journal, pending, update_finished(application))
        # The three scopes are independent: one round trip's wait instead of three.
        await asyncio.gather(
            *(
                tg.call(
                    "setMyCommands", functools.partial(application.bot.set_my_commands, listed, scope=scope)
                )
                for scope, listed in (
                    (BotCommandScopeAllChatAdministrators(), commands.BOT_COMMANDS),
                    (BotCommandScopeAllGroupChats(), commands.MEMBER_COMMANDS),
                    (BotCommandScopeAllPrivateChats(), commands.PRIVATE_COMMANDS),  # admin-commands work
                )
                if listed
            )
        )
        log.info("ready: model %s, database %s", getattr(model, "version", "?"), db.dialect)

    return post_init


async def _post_stop(application: QinglangApp) -> None:
    # Updates are no longer processed: finish the deletions they queued while Telegram still answers.
    services = application.bot_data.services
    if services is not None and services.deletions is not None:
        await services.deletions.close()


async def _post_shutdown(application: QinglangApp) -> None:
    starting = application.bot_data.starting
    if starting is not None and not starting.done():  # stopped while still starting
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
    services = application.bot_data.services
    if services is not None:
        application.bot_data.services = None
        if services.deletions is not None:
            services.deletions.cancel()  # unfinished: replayed from the journal at the next start
        if services.classify_worker is not None:
            services.classify_worker.close()
        if services.metrics is not None:
            await services.metrics.close()
        await services.db.close()
        if services.journal is not None:
            services.journal.close()


# --- the composition root --------------------------------------------------------------------


def build_application(
    settings: Settings,
    *,
    request: BaseRequest | None = None,
    get_updates_request: BaseRequest | None = None,
    classifier: Classifier | None = None,
    observers: list[Observer] | None = None,
    defer_services: bool = False,
) -> QinglangApp:
    """The bot, ready for `run_polling()` (or initialize/start/updater.start_polling in tests).

    `request`/`get_updates_request` replace the HTTP clients (aiohttp; tests route them to the emulator);
    `classifier` skips loading the model (tests and benchmarks share one already loaded);
    `observers` are called with (record, outcome) after each group message;
    `defer_services`: post_init returns at once and the model and database come up while polling
    starts (`qinglang run`); updates wait for them (`ServicesGate`).
    """
    if settings.telegram_token is None:
        raise ValueError("no bot token: set QINGLANG_TELEGRAM_TOKEN or pass --token")
    # Whatever the entry point, the token is scrubbed from every log record from here on.
    add_secret(settings.telegram_token.get_secret_value())
    journal = (
        UpdateJournal(spool_dir(settings) / "updates-journal.sqlite3") if settings.journal_updates else None
    )
    # The Bot API over aiohttp (bot/http_client.py): a third of httpx's CPU per call.
    request = request or AiohttpRequest(connection_pool_size=256)
    get_updates_request = get_updates_request or AiohttpRequest(connection_pool_size=1)
    fetcher: JournalingRequest | None = None
    if journal is not None or settings.classify_worker:
        # Journal each fetched batch before PTB can confirm it to Telegram (bot/journal.py), and hand it
        # to the classifier worker.
        fetcher = JournalingRequest(get_updates_request, journal)
        get_updates_request = fetcher
    gate = ServicesGate()
    builder = (
        ApplicationBuilder()
        .token(settings.telegram_token.get_secret_value())
        .context_types(CONTEXT_TYPES)
        # Sequential on purpose: for handlers this cheap, PTB runs 3-4x slower with concurrent updates.
        .concurrent_updates(gate)
        .post_init(_post_init(settings, classifier, observers or [], journal, fetcher, gate, defer_services))
        .post_stop(_post_stop)
        .post_shutdown(_post_shutdown)
    )
    if settings.base_url:
        builder = builder.base_url(settings.base_url)
    builder = builder.request(request).get_updates_request(get_updates_request)
    application: QinglangApp = builder.build()  # type: ignore[assignment]
    gate.finished = update_finished(application)

    # Order matters: groups run in ascending order; within a group the first match wins.
    # 0 · moderation: every group message and edit (commands too: "/x 出冰 加V" is judged like any text)
    application.add_handler(MessageHandler(GROUP_MESSAGES, on_group_message), group=MODERATION)
    # 1 · admins' review buttons, then the slash commands (bot/commands.py)
    application.add_handler(
        CallbackQueryHandler(on_review_button, pattern=f"^{REVIEW_PREFIX}:"), group=COMMANDS
    )
    for handler in commands.command_handlers():
        application.add_handler(handler, group=COMMANDS)
    # (then the update is finished: ServicesGate marks it done in the journal, with no handler group)
    # Errors: log and carry on
    application.add_error_handler(on_error)
    # Scheduled jobs (bot/jobs.py): digest, retention purge, admin-cache refresh
    jobs.schedule_jobs(application)
    if application.job_queue is not None:
        application.job_queue.run_repeating(
            job_drain_spool, interval=settings.spool_retry_seconds, name="drain_spool"
        )
    return application
