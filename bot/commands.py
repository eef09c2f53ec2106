"""Admin and member slash commands.

`bot/app.py` registers `command_handlers()` in the commands group and sends `BOT_COMMANDS` (admin
scope) and `MEMBER_COMMANDS` (all group members) to Telegram with set_my_commands in post_init.
Handlers reach the services through the typed context: `context.services` (see bot/context.py).

Every admin command is checked against the chat's administrators (AdminCache, i.e. getChatAdministrators
cached for a few minutes); anyone else gets a short refusal and the attempt goes into the audit log.
Handlers stay thin: parse (bot/admin.py), act (bot/admin.py or storage), reply.
"""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from telegram import BotCommand, Chat, InlineKeyboardMarkup, Message, Update
from telegram.ext import BaseHandler, CommandHandler, JobQueue, filters

import storage
from bot import admin
from bot.admin import UsageError
from bot.caches import ChatPolicy
from bot.context import Context, Services
from bot.i18n import DEFAULT_LANGUAGE, category_name, t
from bot.moderation import review_keyboard, review_text
from bot.telegram_io import ApiResult

log = logging.getLogger(__name__)

Scope = Literal["admin", "member", "private"]
# Seconds between two refusals to one user in one chat (the audit row is written every time).
REFUSAL_INTERVAL = 60.0
TELEGRAM_TEXT_LIMIT = 4000


# --- the request a handler works on -----------------------------------------------------------


@dataclass
class ChatState:
    """Per-chat memory of this process (kept in PTB's chat_data): member reports and refusals."""

    reports: admin.ReportTracker = field(default_factory=admin.ReportTracker)
    refused_at: dict[int, float] = field(default_factory=dict)


@dataclass
class Request:
    """One command as a handler sees it."""

    name: str
    message: Message
    chat: Chat
    user_id: int
    user_name: str
    args: list[str]
    policy: ChatPolicy
    services: Services
    state: ChatState
    job_queue: JobQueue[Any] | None = None  # for what removes itself later (deletion notices)

    @property
    def chat_id(self) -> int:
        return self.chat.id

    @property
    def lang(self) -> str:
        return self.policy.language

    @property
    def reply_to(self) -> Message | None:
        return self.message.reply_to_message

    def text(self, key: str, /, **values: Any) -> str:
        return t(key, self.lang, **values)

    async def reply(self, text: str, *, reply_markup: InlineKeyboardMarkup | None = None) -> ApiResult:
        thread = self.message.message_thread_id if self.message.is_topic_message else None
        return await self.services.tg.send_message(
            self.chat_id, text[:TELEGRAM_TEXT_LIMIT], reply_markup=reply_markup, thread_id=thread
        )

    async def private(
        self, texts: Sequence[str], markups: Sequence[InlineKeyboardMarkup | None] = ()
    ) -> bool:
        """Send `texts` to the admin's private chat; when they never started the bot, say so briefly
        in the group. Never sends the content itself into the group."""
        for i, text in enumerate(texts):
            markup = markups[i] if i < len(markups) else None
            sent = await self.services.tg.send_message(
                self.user_id, text[:TELEGRAM_TEXT_LIMIT], reply_markup=markup
            )
            if not sent.ok:
                await self.unreachable()
                return False
        if self.chat.type != Chat.PRIVATE:
            await self.reply(self.text("admin.sent_private", name=self.user_name))
        return True

    async def unreachable(self) -> None:
        bot = self.services.tg.bot.username or "qinglang_bot"
        await self.reply(self.text("admin.unreachable", name=self.user_name, bot=bot))

    async def audit(self, command: str, args: Any = None, *, chat_id: int | None = None) -> None:
        async with self.services.db.sessionmaker.begin() as session:
            await storage.log_admin_action(
                session=session,
                chat_id=self.chat_id if chat_id is None else chat_id,
                actor_id=self.user_id,
                command=command,
                args=args,
            )

    async def change_settings(self, chat_id: int | None = None, **changes: Any) -> ChatPolicy:
        """Change settings through storage (which writes the audit row), then drop the cached copy."""
        target = self.chat_id if chat_id is None else chat_id
        async with self.services.db.sessionmaker.begin() as session:
            await storage.update_chat_settings(
                session=session, chat_id=target, actor_id=self.user_id, **changes
            )
        self.services.chats.invalidate(target)
        policy = await self.services.chats.get(target)
        if target == self.chat_id:
            self.policy = policy
        return policy


Handler = Callable[[Request], Awaitable[None]]


@dataclass(frozen=True)
class Command:
    name: str
    handler: Handler
    scope: Scope
    private_ok: bool = False  # an admin command that also makes sense in the admin's private chat

    def bot_command(self) -> BotCommand:
        return BotCommand(self.name, t(f"admin.cmd.{self.name}", DEFAULT_LANGUAGE))


def _state(context: Context) -> ChatState:
    data = context.chat_data
    if data is None:  # no chat on this update: keep nothing
        return ChatState()
    state = data.get(ChatState)
    if state is None:
        state = data[ChatState] = ChatState()
    return state


async def _is_admin(services: Services, chat_id: int, message: Message) -> bool:
    sender_chat = message.sender_chat
    if sender_chat is not None and sender_chat.id == chat_id:
        return True  # an anonymous admin posts as the chat itself
    user = message.from_user
    return user is not None and await services.admins.is_admin(chat_id, user.id)


def _wrap(command: Command) -> Callable[[Update, Context], Coroutine[Any, Any, None]]:
    async def callback(update: Update, context: Context) -> None:
        message, chat = update.effective_message, update.effective_chat
        if message is None or chat is None or message.from_user is None:
            return
        services = context.services
        user = message.from_user
        policy = await services.chats.get(chat.id)
        request = Request(
            name=command.name,
            message=message,
            chat=chat,
            user_id=user.id,
            user_name=user.full_name,
            args=list(context.args or ()),
            policy=policy,
            services=services,
            state=_state(context),
            job_queue=context.job_queue,
        )
        if chat.type == Chat.PRIVATE:
            if user.language_code and user.language_code.startswith("en"):
                request.policy = _with_language(policy, "en")
            if command.scope == "admin" and not command.private_ok:
                await request.reply(request.text("admin.group_only"))
                return
        elif command.scope == "admin" and not await _is_admin(services, chat.id, message):
            await _refuse(request)
            return
        try:
            await command.handler(request)
        except UsageError as exc:
            log.info("/%s in chat %s: %s", command.name, chat.id, exc)
            await request.reply(
                request.text("admin.usage_line", usage=request.text(f"admin.usage.{command.name}"))
            )

    callback.__name__ = f"cmd_{command.name}"
    return callback


def _with_language(policy: ChatPolicy, lang: str) -> ChatPolicy:
    from dataclasses import replace

    return replace(policy, language=lang)


async def _refuse(request: Request) -> None:
    """Audit every attempt; answer at most once a minute per user, so refusals cannot flood a chat."""
    log.warning(
        "user %s tried /%s in chat %s without being its admin", request.user_id, request.name, request.chat_id
    )
    await request.audit("denied", {"command": request.name, "args": request.args})
    now = time.monotonic()
    last = request.state.refused_at.get(request.user_id)
    if last is not None and now - last < REFUSAL_INTERVAL:
        return
    request.state.refused_at[request.user_id] = now
    await request.reply(request.text("admin.refused"))


# --- help and status --------------------------------------------------------------------------


def help_text(lang: str) -> str:
    lines = [t("admin.help_header", lang)]
    for c in COMMANDS:
        if c.scope == "admin":
            lines.append(f"{t(f'admin.usage.{c.name}', lang)} — {t(f'admin.cmd.{c.name}', lang)}")
    lines += ["", t("admin.help_member", lang)]
    lines += [f"{t(f'admin.usage.{c.name}', lang)}" for c in COMMANDS if c.scope == "member"]
    lines += ["", t("admin.help_footer", lang)]
    return "\n".join(lines)


async def cmd_start(r: Request) -> None:
    await r.reply(r.text("admin.start"))


async def cmd_help(r: Request) -> None:
    await r.reply(help_text(r.lang))


async def cmd_status(r: Request) -> None:
    if r.args:
        raise UsageError("status takes no arguments")
    services = r.services
    admins = await services.admins.get(r.chat_id)
    thresholds = getattr(getattr(services.classifier, "thresholds", None), "delete", None) or {}
    async with services.db.sessionmaker() as session:
        today = await storage.incident_stats(
            session=session, chat_id=r.chat_id, since=admin.start_of_local_day()
        )
    await r.reply(
        admin.format_status(
            r.policy,
            model_version=getattr(services.classifier, "version", "?"),
            model_thresholds=dict(thresholds),
            bot_rights=admins.bot_rights,
            today=today,
        )
    )


async def cmd_stats(r: Request) -> None:
    if len(r.args) > 1:
        raise UsageError("stats [days]")
    days = admin.parse_int(r.args[0], lo=1, hi=admin.MAX_STATS_DAYS) if r.args else 7
    since = dt.datetime.now(dt.UTC) - dt.timedelta(days=days)
    async with r.services.db.sessionmaker() as session:
        stats = await storage.incident_stats(session=session, chat_id=r.chat_id, since=since)
    await r.reply("\n".join([r.text("admin.stats.header", days=days), *admin.format_counts(stats, r.lang)]))


# --- settings ---------------------------------------------------------------------------------


async def cmd_mode(r: Request) -> None:
    mode = admin.parse_mode(r.args)
    await r.change_settings(mode=mode)
    await r.reply(r.text("admin.done.mode", mode=r.text(f"admin.mode.{mode}")))


def _categories(services: Services) -> tuple[str, ...]:
    return admin.categories_of(services.classifier)


async def cmd_threshold(r: Request) -> None:
    category, value = admin.parse_threshold(r.args, _categories(r.services))
    thresholds = dict(r.policy.thresholds)
    if value is None:
        thresholds.pop(category, None)
    else:
        thresholds[category] = value
    await r.change_settings(thresholds=thresholds)
    name = category_name(category, r.lang)
    if value is None:
        await r.reply(r.text("admin.done.threshold_reset", category=name))
    else:
        await r.reply(r.text("admin.done.threshold", category=name, value=f"{value:.2f}"))


async def cmd_retention(r: Request) -> None:
    if len(r.args) != 1:
        raise UsageError("retention DAYS")
    days = admin.parse_int(r.args[0], lo=1, hi=admin.MAX_RETENTION_DAYS)
    await r.change_settings(retention_days=days)
    await r.reply(r.text("admin.done.retention", days=days))


async def cmd_strikes(r: Request) -> None:
    limit, window, mute = admin.parse_strikes(r.args)
    await r.change_settings(strike_limit=limit, strike_window_seconds=window, mute_seconds=mute)
    if limit == 0:
        await r.reply(r.text("admin.done.strikes_off"))
        return
    await r.reply(
        r.text(
            "admin.done.strikes",
            limit=limit,
            window=admin.format_seconds(window, r.lang),
            mute=admin.format_seconds(mute, r.lang),
        )
    )


async def cmd_language(r: Request) -> None:
    lang = admin.parse_language(r.args)
    await r.change_settings(language=lang)
    await r.reply(r.text("admin.done.language"))  # already in the new language


async def cmd_reportchat(r: Request) -> None:
    """No argument: explains how to choose a receiving chat (never the moderated group).
    CHAT_ID: that chat's reports come here (the caller
    must be its admin too; in private, here is the admin's private chat). `off`: back to private."""
    if len(r.args) > 1:
        raise UsageError("reportchat")
    if not r.args:
        if r.chat.type == Chat.PRIVATE:
            raise UsageError("reportchat in private needs CHAT_ID")
        # Report files carry the offending texts and senders' ids: they never go into the moderated
        # group itself. Point the admin at a separate receiving chat instead.
        await r.reply(r.text("admin.done.reportchat_self", chat=r.chat_id))
        return
    if r.args[0].lower() == "off":
        if r.chat.type == Chat.PRIVATE:
            raise UsageError("reportchat off is sent in the group")
        await r.change_settings(report_chat_id=None)
        await r.reply(r.text("admin.done.reportchat_off"))
        return
    try:
        source = int(r.args[0])
    except ValueError:
        raise UsageError(f"not a chat id: {r.args[0]!r}") from None
    if source >= 0:
        raise UsageError("group ids are negative")
    if not await r.services.admins.is_admin(source, r.user_id):
        await r.audit("denied", {"command": "reportchat", "args": r.args}, chat_id=source)
        await r.reply(r.text("admin.done.reportchat_not_admin", chat=source))
        return
    await r.change_settings(source, report_chat_id=r.chat_id)
    await r.reply(r.text("admin.done.reportchat_other", chat=source))


async def _target_user(r: Request) -> int:
    reply = r.reply_to
    if reply is not None and not r.args:
        if reply.from_user is None or reply.sender_chat is not None or reply.from_user.is_bot:
            raise UsageError("reply to a person's message")
        return reply.from_user.id
    return admin.parse_user_id(r.args)


async def cmd_trust(r: Request) -> None:
    user_id = await _target_user(r)
    trusted = set(r.policy.trusted_user_ids)
    if user_id in trusted:
        await r.reply(r.text("admin.done.already_trusted", user=user_id))
        return
    await r.change_settings(trusted_user_ids=sorted(trusted | {user_id}))
    await r.reply(r.text("admin.done.trusted", user=user_id))


async def cmd_untrust(r: Request) -> None:
    user_id = await _target_user(r)
    trusted = set(r.policy.trusted_user_ids)
    if user_id not in trusted:
        await r.reply(r.text("admin.done.not_trusted", user=user_id))
        return
    await r.change_settings(trusted_user_ids=sorted(trusted - {user_id}))
    await r.reply(r.text("admin.done.untrusted", user=user_id))


# --- flagging by hand -------------------------------------------------------------------------


async def cmd_spam(r: Request) -> None:
    reply = r.reply_to
    if reply is None or len(r.args) > 1:
        raise UsageError("spam needs a reply")
    category = None
    if r.args:
        category = r.args[0].lower()
        if category not in _categories(r.services):
            raise UsageError(f"unknown category {category!r}")
    record = admin.record_of(reply)
    admins = await r.services.admins.get(r.chat_id)
    if (
        record.sender_id in admins.user_ids
        or record.sender_id == r.services.tg.bot.id
        or (record.sender_chat_id is not None and record.sender_chat_id == r.chat_id)
    ):
        await r.reply(r.text("admin.done.target_is_admin"))
        return
    out = await admin.flag_spam(
        record, policy=r.policy, admin_id=r.user_id, category=category, services=r.services
    )
    await admin.after_admin_delete(r.services, r.job_queue, out, actor=f"admin:{r.user_id}", record=record)
    name = category_name(out.category or "", r.lang)
    if out.status == "deleted":
        await r.reply(r.text("admin.spam.done", id=out.incident_id, category=name))
    else:
        await r.reply(r.text("admin.spam.failed", id=out.incident_id, error=out.reason))


async def cmd_notspam(r: Request) -> None:
    reason: str | None
    if r.args:
        try:
            incident_id = int(r.args[0].lstrip("#"))
        except ValueError:
            raise UsageError(f"not an incident id: {r.args[0]!r}") from None
        reason = " ".join(r.args[1:]) or None
    elif r.reply_to is not None:
        async with r.services.db.sessionmaker() as session:
            found = await storage.find_incident(
                session=session, chat_id=r.chat_id, message_id=r.reply_to.message_id
            )
        if found is None:
            await r.reply(r.text("admin.notspam.not_found"))
            return
        incident_id, reason = found.id, None
    else:
        raise UsageError("notspam ID")
    status, _ = await admin.mark_not_spam(
        incident_id, chat_id=r.chat_id, admin_id=r.user_id, reason=reason, services=r.services
    )
    await r.reply(r.text(f"admin.notspam.{status}", id=incident_id))


# --- answered in private ----------------------------------------------------------------------


def _chunks(lines: Sequence[str], limit: int = TELEGRAM_TEXT_LIMIT) -> list[str]:
    out: list[str] = []
    current = ""
    for line in lines:
        if current and len(current) + 1 + len(line) > limit:
            out.append(current)
            current = ""
        current = f"{current}\n{line}" if current else line
    if current:
        out.append(current)
    return out


def _chat_name(r: Request) -> str:
    return r.chat.title or str(r.chat_id)


async def cmd_incidents(r: Request) -> None:
    if len(r.args) > 1:
        raise UsageError("incidents [N]")
    n = admin.parse_int(r.args[0], lo=1, hi=admin.MAX_INCIDENTS) if r.args else 10
    async with r.services.db.sessionmaker() as session:
        rows = await storage.list_incidents(session=session, chat_id=r.chat_id, limit=n)
    if not rows:
        await r.private([r.text("admin.incidents.none", chat=_chat_name(r))])
        return
    header = r.text("admin.incidents.header", chat=_chat_name(r), n=len(rows))
    await r.private(_chunks([header, *(admin.format_incident_line(i, r.lang) for i in rows)]))


async def cmd_review(r: Request) -> None:
    if r.args:
        raise UsageError("review takes no arguments")
    async with r.services.db.sessionmaker() as session:
        rows = await storage.list_pending_review(
            session=session, chat_id=r.chat_id, limit=admin.MAX_REVIEW_ITEMS + 1
        )
    if not rows:
        await r.private([r.text("admin.review_list.none", chat=_chat_name(r))])
        return
    shown = rows[: admin.MAX_REVIEW_ITEMS]
    texts = [r.text("admin.review_list.header", chat=_chat_name(r), n=len(rows))]
    markups: list[InlineKeyboardMarkup | None] = [None]
    for inc in shown:
        texts.append(review_text(inc, admin.verdict_of(inc), chat_title=inc.chat_title, lang=r.lang))
        markups.append(review_keyboard(inc.chat_id, inc.id, r.lang))
    if len(rows) > len(shown):
        texts.append(r.text("admin.review_list.more", n=len(rows) - len(shown)))
    await r.private(texts, markups)


async def cmd_export(r: Request) -> None:
    days, fmt = admin.parse_export(r.args)
    await r.audit("export", {"days": days, "format": fmt})
    with tempfile.TemporaryDirectory(prefix="qinglang-export-") as tmp:
        result = await admin.export_for(
            r.services, chat_id=r.chat_id, days=days, fmt=fmt, directory=Path(tmp)
        )
        caption = r.text(
            "admin.export.caption",
            chat=_chat_name(r),
            incidents=result.incidents,
            rows=result.rows,
            digest=result.digest,
        )
        # The evidence file goes to the admin's private chat only, never into the group.
        sent = await admin.send_document(r.services, r.user_id, result.path, caption=caption)
    if sent.ok:
        await r.reply(r.text("admin.sent_private", name=r.user_name))
    else:
        await r.unreachable()


async def cmd_submit(r: Request) -> None:
    if r.args:
        raise UsageError("submit takes no arguments")
    report_chat = r.policy.report_chat_id
    targets = [report_chat, r.user_id] if report_chat else [r.user_id]
    try:
        delivery = await admin.submit_report_batch(
            chat_id=r.chat_id,
            created_by=f"admin:{r.user_id}",
            targets=targets,
            caption=lambda batch, n: r.text("admin.submit.caption", batch=batch, n=n, chat=_chat_name(r)),
            services=r.services,
        )
    except admin.DeliveryFailed:
        await r.reply(r.text("admin.submit.failed"))
        return
    if delivery is None:
        await r.reply(r.text("admin.submit.none"))
        return
    key = "admin.submit.sent_report_chat" if delivery.sent_to == report_chat else "admin.submit.sent_private"
    await r.reply(r.text(key, batch=delivery.batch_id, n=delivery.incidents, name=r.user_name))


async def cmd_reload(r: Request) -> None:
    if r.args:
        raise UsageError("reload takes no arguments")
    ok, detail = await admin.reload_model(r.services)
    await r.audit("reload", {"ok": ok, "detail": detail})
    await r.reply(r.text("admin.reload.ok" if ok else "admin.reload.failed", version=detail, error=detail))


# --- members ----------------------------------------------------------------------------------


async def cmd_report(r: Request) -> None:
    """A member reports the message they reply to: admins get it with the reporter named; once several
    distinct members have reported it, it becomes a review item with Delete/Keep buttons at once."""
    if r.chat.type == Chat.PRIVATE:
        await r.reply(r.text("admin.group_only"))
        return
    reply = r.reply_to
    if reply is None:
        await r.reply(r.text("report.need_reply"))
        return
    services = r.services
    record = admin.record_of(reply)
    admins = await services.admins.get(r.chat_id)
    if (
        record.is_service
        or record.sender_id in admins.user_ids
        or record.sender_id == services.tg.bot.id
        or (record.sender_chat_id is not None and record.sender_chat_id == r.chat_id)
    ):
        await r.reply(r.text("report.not_this"))
        return
    verdict = await admin.report_message(
        record, reply, tracker=r.state.reports, reporter_id=r.user_id, reporter_name=r.user_name,
        policy=r.policy, admin_ids=admins.human_ids, services=services,
    )  # fmt: skip
    if verdict == "limited":
        log.info("chat %s: member %s is over the report limit", r.chat_id, r.user_id)
        return
    await r.reply(
        r.text({"duplicate": "report.duplicate", "review": "report.review"}.get(verdict, "report.thanks"))
    )


# --- the command table ------------------------------------------------------------------------

COMMANDS: tuple[Command, ...] = (
    Command("help", cmd_help, "admin", private_ok=True),
    Command("status", cmd_status, "admin"),
    Command("stats", cmd_stats, "admin"),
    Command("mode", cmd_mode, "admin"),
    Command("threshold", cmd_threshold, "admin"),
    Command("retention", cmd_retention, "admin"),
    Command("strikes", cmd_strikes, "admin"),
    Command("reportchat", cmd_reportchat, "admin", private_ok=True),
    Command("language", cmd_language, "admin"),
    Command("spam", cmd_spam, "admin"),
    Command("notspam", cmd_notspam, "admin"),
    Command("trust", cmd_trust, "admin"),
    Command("untrust", cmd_untrust, "admin"),
    Command("incidents", cmd_incidents, "admin"),
    Command("review", cmd_review, "admin"),
    Command("export", cmd_export, "admin"),
    Command("submit", cmd_submit, "admin"),
    Command("reload", cmd_reload, "admin"),
    Command("report", cmd_report, "member"),
    Command("start", cmd_start, "private"),
)

# Shown to the admins of every group (BotCommandScopeAllChatAdministrators).
BOT_COMMANDS: list[BotCommand] = [c.bot_command() for c in COMMANDS if c.scope == "admin"]
# Shown to every member of every group (BotCommandScopeAllGroupChats), e.g. /report.
MEMBER_COMMANDS: list[BotCommand] = [c.bot_command() for c in COMMANDS if c.scope == "member"]
# Shown in private chats with the bot (BotCommandScopeAllPrivateChats).
PRIVATE_COMMANDS: list[BotCommand] = [
    c.bot_command() for c in COMMANDS if c.scope == "private" or c.name in ("help", "reportchat")
]


def command_handlers() -> list[BaseHandler]:  # type: ignore[type-arg]
    """Every command handler, in the order they should be tried: one CommandHandler for the group and
    admin commands and one for the private-chat ones, each handing a command to its own callback.

    Two handlers rather than one per command: every group message is checked against each handler of
    the commands group, and twenty checks cost the moderation loop ~7 us a message."""
    callbacks = {c.name: _wrap(c) for c in COMMANDS}

    async def dispatch(update: Update, context: Context) -> None:
        message = update.effective_message
        entities = message.entities if message is not None else ()
        if message is None or not message.text or not entities:
            return
        # The command as CommandHandler matched it: "/Name@bot args" -> "name"
        name = message.text[1 : entities[0].length].split("@", 1)[0].lower()
        callback = callbacks.get(name)
        if callback is not None:
            await callback(update, context)

    private = [c.name for c in COMMANDS if c.scope == "private"]
    anywhere = [c.name for c in COMMANDS if c.scope != "private"]
    return [
        CommandHandler(anywhere, dispatch),
        CommandHandler(private, dispatch, filters=filters.ChatType.PRIVATE),
    ]
