"""The moderation core: Telegram message -> plain record -> verdict -> decision -> evidence -> action.

The steps that decide are pure functions (`message_record`, `skip_reason`, `decide`, `parse_review_data`);
`moderate` and `review_decision` run them and then act, always in this order: the incident is recorded
durably *first*, then Telegram is asked to act, then the outcome is appended to the incident's events.
Nothing here raises on a Telegram failure: `SafeTelegram` turns failures into recorded errors.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Message, MessageEntity, Update
from telegram.ext import filters

import storage
from bot.caches import ChatPolicy
from bot.evidence import IncidentRef
from bot.i18n import category_name, t
from bot.incidents import new_incident, record_from_incident
from bot.telegram_io import ApiResult

if TYPE_CHECKING:
    from bot.context import Services

log = logging.getLogger(__name__)

MEDIA_KINDS = ("photo", "video", "animation", "document", "audio", "voice", "video_note", "sticker")
REVIEW_PREFIX = "rv"
MAX_REVIEW_TEXT = 3000  # Telegram allows 4096 characters a message; leave room for the header


# --- narrow interfaces, as used here ----------------------------------------------------------


class VerdictLike(Protocol):
    """What moderation reads of a classifier Verdict (docs/interfaces.md); read-only, as a frozen
    Verdict is."""

    @property
    def label(self) -> str: ...
    @property
    def score(self) -> float: ...
    @property
    def action(self) -> str: ...  # delete | review | pass
    @property
    def reasons(self) -> Mapping[str, Any]: ...
    @property
    def model_version(self) -> str: ...


class Classifier(Protocol):
    """Something that judges text: `classifier.load()` gives one."""

    version: str

    def classify(self, text: str, thresholds: Mapping[str, float] | None = None) -> Any: ...


# --- the plain request ------------------------------------------------------------------------


class MessageRecord(NamedTuple):
    """Everything moderation needs to know about one message, without Telegram types.

    Immutable, as a frozen dataclass would be, but built per message at a fifth of the cost (a frozen
    dataclass sets each of its 18 fields through object.__setattr__)."""

    chat_id: int
    chat_title: str | None
    message_id: int
    thread_id: int | None
    sender_id: int | None
    sender_username: str | None
    sender_name: str | None
    sender_chat_id: int | None
    is_automatic_forward: bool
    message_date: dt.datetime
    is_edit: bool
    edit_date: dt.datetime | None
    text: str  # the text, or the caption of a photo, video or document
    hidden_links: tuple[str, ...]  # text_link URLs and URL buttons (button text and URL)
    media_kind: str | None
    media_file_unique_id: str | None
    forward_origin: dict[str, Any] | None  # where a forward came from; also names an inline bot used
    is_service: bool

    @property
    def key(self) -> tuple[int, int, int | None]:
        """(chat, message, edit date in unix seconds): what the classifier worker files its verdict under."""
        edit = int(self.edit_date.timestamp()) if self.is_edit and self.edit_date is not None else None
        return (self.chat_id, self.message_id, edit)

    @property
    def judged_text(self) -> str:
        """What the classifier reads: the text, then each hidden link on a line of its own."""
        return "\n".join((self.text, *self.hidden_links)) if self.hidden_links else self.text


def _hidden_links(message: Message) -> tuple[str, ...]:
    links: list[str] = []
    for entity in (*(message.entities or ()), *(message.caption_entities or ())):
        if entity.type == MessageEntity.TEXT_LINK and entity.url:
            links.append(entity.url)
    markup = message.reply_markup
    if markup is not None:
        for row in markup.inline_keyboard:
            for button in row:
                if button.url:
                    links.append(f"{button.text} {button.url}")
    return tuple(links)


def _origin(message: Message) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    origin = message.forward_origin
    if origin is not None:
        out["type"] = origin.type
        out["date"] = origin.date.isoformat()
        user = getattr(origin, "sender_user", None)
        chat = getattr(origin, "sender_chat", None) or getattr(origin, "chat", None)
        if user is not None:
            out.update(id=user.id, name=user.full_name, username=user.username)
        elif chat is not None:
            out.update(id=chat.id, name=chat.title, username=chat.username)
        elif getattr(origin, "sender_user_name", None):
            out["name"] = origin.sender_user_name  # type: ignore[attr-defined]
    if message.via_bot is not None:
        out["via_bot"] = message.via_bot.username or message.via_bot.id
    return out or None


def _media(message: Message) -> tuple[str | None, str | None]:
    for kind in MEDIA_KINDS:
        value = getattr(message, kind, None)
        if value:
            item = value[-1] if isinstance(value, Sequence) else value  # photo: largest size last
            return kind, getattr(item, "file_unique_id", None)
    return None, None


def is_service_message(update: Update) -> bool:
    """A join, pin, title change or other service message (never judged).

    Service messages never carry text or a caption, so messages that do skip PTB's check of some 45
    attributes, which would otherwise be the costliest step of dispatching an ordinary message."""
    message = update.effective_message
    if message is None or message.text or message.caption:
        return False
    return bool(filters.StatusUpdate.ALL.check_update(update))


def message_record(update: Update) -> MessageRecord | None:
    """The plain record of the message (or edit) an update carries, None if it carries none (pure)."""
    message = update.effective_message
    if message is None:
        return None
    is_edit = update.edited_message is not None
    user = message.from_user
    sender_chat = message.sender_chat
    if user is not None and sender_chat is None:
        name: str | None = user.full_name
    else:
        name = sender_chat.title if sender_chat is not None else None
    media_kind, media_id = _media(message)
    return MessageRecord(
        chat_id=message.chat.id,
        chat_title=message.chat.title,
        message_id=message.message_id,
        thread_id=message.message_thread_id if message.is_topic_message else None,
        sender_id=user.id if user is not None else None,
        sender_username=(user.username if user is not None else None)
        or (sender_chat.username if sender_chat is not None else None),
        sender_name=name,
        sender_chat_id=sender_chat.id if sender_chat is not None else None,
        is_automatic_forward=bool(message.is_automatic_forward),
        message_date=message.date,
        is_edit=is_edit,
        edit_date=message.edit_date if is_edit else None,
        text=message.text or message.caption or "",
        hidden_links=_hidden_links(message),
        media_kind=media_kind,
        media_file_unique_id=media_id,
        forward_origin=_origin(message),
        is_service=is_service_message(update),
    )


def raw_hidden_links(message: Mapping[str, Any]) -> list[str]:
    """`_hidden_links` of a raw message (as getUpdates sends it): text_link URLs, then URL buttons."""
    links = [
        e["url"]
        for e in (*(message.get("entities") or ()), *(message.get("caption_entities") or ()))
        if e.get("type") == "text_link" and e.get("url")
    ]
    markup = message.get("reply_markup")
    if isinstance(markup, dict):
        for row in markup.get("inline_keyboard") or ():
            for button in row:
                if button.get("url"):
                    links.append(f"{button.get('text')} {button['url']}")
    return links


GROUP_TYPES = ("group", "supergroup")  # chats moderation watches, as a raw update names them
_NOT_PLAIN = ("forward_origin", "via_bot", "sender_chat", "is_automatic_forward", "caption")


def plain_text_record(update: Mapping[str, Any]) -> MessageRecord | None:
    """`message_record` of a raw update (as getUpdates sends it) when it is a plain text message in a
    group: a new message, not an edit, forward, channel post, command or media; None for anything else.

    For bot/fast_pass.py, which passes clean messages without PTB building its objects; a test holds it
    equal to `message_record` of the parsed update."""
    message = update.get("message")
    if not isinstance(message, dict) or len(update) != 2:  # update_id + message, nothing else
        return None
    text = message.get("text")
    chat = message.get("chat")
    user = message.get("from")
    if not isinstance(text, str) or not text or text.startswith("/") or not isinstance(chat, dict):
        return None
    if chat.get("type") not in GROUP_TYPES or not isinstance(user, dict):
        return None
    if any(message.get(k) for k in _NOT_PLAIN):
        return None
    if any(e.get("type") == "bot_command" for e in message.get("entities") or ()):
        return None
    try:
        first, last = user.get("first_name") or "", user.get("last_name")
        return MessageRecord(
            chat_id=int(chat["id"]),
            chat_title=chat.get("title"),
            message_id=int(message["message_id"]),
            thread_id=message.get("message_thread_id") if message.get("is_topic_message") else None,
            sender_id=int(user["id"]),
            sender_username=user.get("username"),
            sender_name=f"{first} {last}" if last else first,
            sender_chat_id=None,
            is_automatic_forward=False,
            message_date=dt.datetime.fromtimestamp(int(message["date"]), dt.UTC),
            is_edit=False,
            edit_date=None,
            text=text,
            hidden_links=tuple(raw_hidden_links(message)),
            media_kind=None,
            media_file_unique_id=None,
            forward_origin=None,
            is_service=False,
        )
    except (KeyError, TypeError, ValueError):
        return None


# --- pure decisions ---------------------------------------------------------------------------

SkipReason = Literal["service", "empty", "anonymous_admin", "linked_channel", "self", "admin", "trusted"]


def skip_reason(
    record: MessageRecord, *, bot_id: int, admin_ids: frozenset[int], trusted_ids: frozenset[int]
) -> SkipReason | None:
    """Why this message is not judged at all, or None if it is."""
    if record.is_service:
        return "service"
    if not record.judged_text.strip():
        return "empty"
    if record.sender_chat_id is not None and record.sender_chat_id == record.chat_id:
        return "anonymous_admin"
    if record.is_automatic_forward:
        return "linked_channel"  # the group's own linked channel, run by its admins
    if record.sender_id == bot_id:
        return "self"
    if record.sender_id in admin_ids:
        return "admin"
    if record.sender_id in trusted_ids:
        return "trusted"
    return None


class Decision(NamedTuple):
    """What to do with a judged message: `action` is what the verdict asks, `act` whether to do it."""

    action: Literal["delete", "review", "pass"]
    act: bool


def decide(verdict: VerdictLike, *, mode: str) -> Decision:
    """Combine the verdict (already judged against the chat's thresholds) with the chat's mode."""
    action = verdict.action if verdict.action in ("delete", "review") else "pass"
    return Decision(action=action, act=mode == "enforce")  # type: ignore[arg-type]


# --- outcomes ---------------------------------------------------------------------------------

Status = Literal[
    "off", "skipped", "ok", "queued", "duplicate", "deleted", "delete_failed", "review", "dry_run", "error"
]


@dataclass(slots=True)
class Outcome:
    """What moderation did with one message (for logs, the demo and tests)."""

    status: Status
    reason: str | None = None  # skip reason, error text, or what dry_run would have done
    category: str | None = None
    score: float | None = None
    incident_id: int | None = None
    escalation: str | None = None  # "muted" | "banned" | "mute_failed" | "ban_failed"
    notice_message_id: int | None = None  # the deletion notice, to be removed after a while
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        parts: list[str] = [self.status]
        if self.category:
            parts.append(f"{self.category} {self.score:.2f}" if self.score is not None else self.category)
        if self.reason:
            parts.append(self.reason)
        if self.escalation:
            parts.append(self.escalation)
        return " · ".join(parts)


# --- the pipeline -----------------------------------------------------------------------------


async def _append(
    services: Services, incident_id: IncidentRef, events: Sequence[tuple[str, str, str, Any]]
) -> None:
    # Through Evidence: the database, or the spool while it is unavailable (bot/evidence.py).
    await services.evidence.append(incident_id, events)


async def moderate(record: MessageRecord, services: Services, *, update_id: int | None = None) -> Outcome:
    """Judge one group message and act on it according to the chat's settings.

    A message the model deletes is queued (status "queued") when the services batch deletions
    (bot/deletions.py): its final outcome then goes to the observers from there."""
    received_at = dt.datetime.now(dt.UTC)
    if record.is_service:
        return Outcome("skipped", reason="service")
    chat = await services.chats.get(record.chat_id)
    if chat.mode == "off":
        return Outcome("off")
    admins = await services.admins.get(record.chat_id)
    skip = skip_reason(
        record, bot_id=services.tg.bot.id, admin_ids=admins.user_ids, trusted_ids=chat.trusted_user_ids
    )
    if skip is not None:
        return Outcome("skipped", reason=skip)

    # The classifier worker (bot/classify_worker.py) has usually judged it already, or is about to (then
    # its answer is awaited briefly); if not, it is classified here on the event loop.
    started = time.perf_counter()
    worker = services.classify_worker
    if worker is not None:
        verdict, source = await worker.verdict(
            record.key, record.judged_text, services.classifier, chat.thresholds or None
        )
    else:
        verdict = services.classifier.classify(record.judged_text, thresholds=chat.thresholds or None)
        source = "in_process"
    # for the observers (metrics)
    timing = {"classify_seconds": time.perf_counter() - started, "verdict_source": source}
    decision = decide(verdict, mode=chat.mode)
    if decision.action == "pass":
        return Outcome("ok", category=verdict.label, score=verdict.score, extra=timing)
    if decision.action == "delete" and decision.act and services.deletions is not None:
        # Evidence, delete, notice and outcome in the next batch, while the next updates are judged.
        queued = Outcome("queued", category=verdict.label, score=float(verdict.score), extra=timing)
        incident = new_incident(record, verdict, received_at=received_at)
        services.deletions.submit(record, chat, incident, queued, update_id)
        return queued

    # Evidence first: committed (or, with the database down, spooled to disk) before anything is done
    # to the message.
    recorded = await services.evidence.record(new_incident(record, verdict, received_at=received_at))
    incident_ref = recorded.ref
    base = Outcome(
        "ok",
        category=verdict.label,
        score=float(verdict.score),
        incident_id=recorded.incident_id,
        extra=timing,
    )
    if await services.evidence.handled_elsewhere(recorded):
        base.status = "duplicate"  # seen again: handled already, or being handled by another worker now
        return base
    if not recorded.created:
        # Recorded before a crash, but its action never was: complete it now (journal replay).
        base.extra["resumed"] = True

    if not decision.act:  # dry_run: record what would have happened, touch nothing
        would = "deleted" if decision.action == "delete" else "kept_for_review"
        await _append(
            services,
            incident_ref,
            [
                ("action", "none", "model", {"dry_run": True, "would": would}),
                ("report", "queued", "model", None),
            ],
        )
        base.status, base.reason = "dry_run", f"would {decision.action}"
        return base

    if decision.action == "delete":
        return await delete_and_strike(record, chat, services, incident_ref, base, actor="model")
    return await _send_for_review(record, chat, services, incident_ref, verdict, base)


async def delete_and_strike(
    record: MessageRecord,
    chat: ChatPolicy,
    services: Services,
    incident_id: IncidentRef,
    out: Outcome,
    *,
    actor: str,
) -> Outcome:
    """Delete a recorded message, post the notice, append the outcome, count the strike, escalate."""
    deleted = await services.tg.delete_message(record.chat_id, record.message_id)
    if out.extra.get("resumed") and deleted.kind == "gone":
        # Resumed after a crash: the delete sent before it most likely went through.
        deleted = ApiResult(True, attempts=deleted.attempts, note=f"resumed after restart: {deleted.error}")
    events: list[tuple[str, str, str, Any]] = [
        ("action", "deleted" if deleted.ok else "delete_failed", actor, deleted.detail())
    ]
    out.status = "deleted" if deleted.ok else "delete_failed"
    if not deleted.ok:
        out.reason = deleted.error
        out.extra["delete_error_kind"] = deleted.kind
        log.warning("chat %s: delete of %s failed: %s", record.chat_id, record.message_id, deleted.error)
        if deleted.kind in ("no_rights", "forbidden"):
            await warn_missing_right(services, chat, "delete")
    elif out.category:
        # The notice is part of the "deleted" outcome, not an action of its own: the incident's
        # final action stays "deleted".
        notice = await _post_notice(record, chat, services, out.category)
        if notice is not None:
            out.notice_message_id = notice
            events[0][3]["notice_message_id"] = notice
    if actor == "model":
        events.append(("report", "queued", "model", None))

    strikes = await services.evidence.append(
        incident_id,
        events,
        # a channel posting as itself cannot be muted
        strike=(record.sender_id, chat.strike_window_seconds) if record.sender_id is not None else None,
    )
    out.extra["strikes"] = strikes
    if record.sender_id is not None and chat.strike_limit > 0 and strikes >= chat.strike_limit:
        await escalate(record, chat, services, incident_id, out, strikes=strikes)
    return out


_delete_and_strike = delete_and_strike  # the name bot/admin.py imports


async def escalate(
    record: MessageRecord,
    chat: ChatPolicy,
    services: Services,
    incident_id: IncidentRef,
    out: Outcome,
    *,
    strikes: int,
) -> None:
    """K strikes in the window: mute (or ban, if the chat says so). Only a success becomes an event,
    so a failed mute never hides the message's own outcome in the incident's state."""
    assert record.sender_id is not None
    if chat.ban_on_limit:
        result = await services.tg.ban(record.chat_id, record.sender_id)
        done, key = "banned", "notice.banned"
    else:
        result = await services.tg.mute(record.chat_id, record.sender_id, chat.mute_seconds)
        done, key = "muted", "notice.muted"
    if not result.ok:
        out.escalation = f"{done} failed: {result.error}"
        log.warning("chat %s: %s of user %s failed: %s", record.chat_id, done, record.sender_id, result.error)
        if result.kind in ("no_rights", "forbidden"):
            await warn_missing_right(services, chat, "restrict")
        return
    out.escalation = done
    detail = {**result.detail(), "strikes": strikes, "message": out.status}
    if not chat.ban_on_limit:
        detail["seconds"] = chat.mute_seconds
    await _append(services, incident_id, [("action", done, "model", detail)])
    name = record.sender_name or str(record.sender_id)
    text = t(key, chat.language, name=name, minutes=max(1, round(chat.mute_seconds / 60)))
    await services.tg.send_message(record.chat_id, text, thread_id=record.thread_id)


async def _post_notice(
    record: MessageRecord, chat: ChatPolicy, services: Services, category: str
) -> int | None:
    """A short notice naming the sender and category (never the content); rate-limited per chat."""
    now = time.monotonic()
    last = services.last_notice.get(record.chat_id)
    if last is not None and now - last < services.settings.notice_min_interval_seconds:
        return None
    services.last_notice[record.chat_id] = now
    name = record.sender_name or (f"@{record.sender_username}" if record.sender_username else "?")
    text = t("notice.deleted", chat.language, name=name, category=category_name(category, chat.language))
    sent = await services.tg.send_message(record.chat_id, text, thread_id=record.thread_id)
    return sent.value.message_id if sent.ok else None


async def warn_missing_right(services: Services, chat: ChatPolicy, right: str) -> None:
    """Tell the chat (and its report chat) once per process that the bot lacks a right it needs."""
    key = (chat.chat_id, right)
    if key in services.rights_warned:
        return
    services.rights_warned.add(key)
    text = t(f"rights.missing_{right}", chat.language)
    targets = [chat.chat_id] + ([chat.report_chat_id] if chat.report_chat_id else [])
    for target in targets:
        await services.tg.send_message(target, text)


# --- review -----------------------------------------------------------------------------------


def review_keyboard(chat_id: int, incident_id: int, lang: str) -> InlineKeyboardMarkup:
    """Buttons 删除/Delete and 忽略/Keep; the data names the chat so only its admins can press."""
    return InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton(
                    t("review.button_delete", lang),
                    callback_data=f"{REVIEW_PREFIX}:{chat_id}:{incident_id}:d",
                ),
                InlineKeyboardButton(
                    t("review.button_keep", lang), callback_data=f"{REVIEW_PREFIX}:{chat_id}:{incident_id}:k"
                ),
            ]
        ]
    )


@dataclass(frozen=True, slots=True)
class ReviewChoice:
    chat_id: int
    incident_id: int
    delete: bool


def parse_review_data(data: str | None) -> ReviewChoice | None:
    """Parse a review button's callback data; None if it is not one of ours (or forged garbage)."""
    if not data:
        return None
    parts = data.split(":")
    if len(parts) != 4 or parts[0] != REVIEW_PREFIX or parts[3] not in ("d", "k"):
        return None
    try:
        return ReviewChoice(chat_id=int(parts[1]), incident_id=int(parts[2]), delete=parts[3] == "d")
    except ValueError:
        return None


def review_text(record_like: Any, verdict_like: Any, *, chat_title: str | None, lang: str) -> str:
    """The message admins get for a review: text, category, score and reasons."""
    reasons = verdict_like.reasons or {}
    lines = [t("review.header", lang, chat=chat_title or record_like.chat_id)]
    if record_like.is_edit:
        lines.append(t("review.edited", lang))
    sender = record_like.sender_name or "?"
    if record_like.sender_username:
        sender += f" (@{record_like.sender_username})"
    lines.append(t("review.sender", lang, name=sender))
    lines.append(
        t(
            "review.category",
            lang,
            category=category_name(verdict_like.label, lang),
            score=f"{float(verdict_like.score):.2f}",
        )
    )
    terms = sorted({str(x.get("term")) for x in reasons.get("terms", ()) if x.get("term")})
    if terms:
        lines.append(t("review.terms", lang, terms="、".join(terms[:10])))
    contacts = [f"{c.get('kind')}:{c.get('value')}" for c in reasons.get("contacts", ())]
    if contacts:
        lines.append(t("review.contacts", lang, contacts=", ".join(contacts[:5])))
    features = [str(f.get("feature")) for f in reasons.get("features", ())][:5]
    if features:
        lines.append(t("review.features", lang, features=" ".join(features)))
    body = record_like.text
    if record_like.hidden_links:
        body = "\n".join((body, *record_like.hidden_links))
    if len(body) > MAX_REVIEW_TEXT:
        body = body[:MAX_REVIEW_TEXT] + "…"
    lines += ["", t("review.text", lang), body]
    return "\n".join(lines)


async def _send_for_review(
    record: MessageRecord,
    chat: ChatPolicy,
    services: Services,
    incident_id: IncidentRef,
    verdict: VerdictLike,
    out: Outcome,
) -> Outcome:
    """Keep the message; send it to the report chat, or to each admin who has started the bot."""
    text = review_text(record, verdict, chat_title=record.chat_title, lang=chat.language)
    # A spooled incident has no id yet: its review goes out without buttons (/review lists it later).
    markup = (
        review_keyboard(record.chat_id, incident_id, chat.language) if isinstance(incident_id, int) else None
    )
    if chat.report_chat_id:
        targets: Sequence[int] = [chat.report_chat_id]
    else:
        targets = (await services.admins.get(record.chat_id)).human_ids
    sent: list[int] = []
    failed: list[int] = []
    for target in targets:
        result = await services.tg.send_message(target, text, reply_markup=markup)
        # Forbidden here means the admin never started the bot in private: expected, not an error.
        (sent if result.ok else failed).append(target)
    await _append(
        services,
        incident_id,
        [
            ("action", "kept_for_review", "model", {"sent_to": sent, "not_reached": failed}),
            ("report", "queued", "model", None),
        ],
    )
    out.status = "review"
    out.extra["sent_to"] = sent
    if not sent:
        out.reason = "no admin reachable"
        log.warning("chat %s: review of incident %s reached no admin", record.chat_id, incident_id)
    return out


@dataclass(slots=True)
class ReviewResult:
    """What a review button press came to; `answer` is shown to the admin who pressed."""

    answer: str
    new_text: str | None = None  # replaces the review message's text (and removes its buttons)
    outcome: Outcome | None = None


async def review_decision(
    choice: ReviewChoice, *, admin_id: int, admin_name: str, services: Services
) -> ReviewResult:
    """Carry out an admin's review choice: only that chat's admins, only incidents still pending."""
    chat = await services.chats.get(choice.chat_id)
    lang = chat.language
    if not await services.admins.is_admin(choice.chat_id, admin_id):
        log.warning(
            "user %s pressed a review button of chat %s without being its admin", admin_id, choice.chat_id
        )
        return ReviewResult(answer=t("review.not_admin", lang))
    async with services.db.sessionmaker.begin() as session:
        incident = await storage.get_incident(session=session, incident_id=choice.incident_id)
    if incident is None or incident.chat_id != choice.chat_id:
        return ReviewResult(answer=t("review.unknown", lang))
    if incident.action_taken != "kept_for_review" or incident.review_result is not None:
        return ReviewResult(answer=t("review.already", lang))
    actor = f"admin:{admin_id}"
    label = incident.category if choice.delete else "ok"
    async with services.db.sessionmaker.begin() as session:
        await storage.append_event(
            session=session,
            incident_id=incident.id,
            kind="review",
            value="confirmed" if choice.delete else "false_positive",
            actor=actor,
        )
        # The admin's choice is a labelled example for `qinglang train --with-feedback`.
        await storage.add_training_example(
            session=session,
            text=incident.text or "",
            label=label,
            actor_id=admin_id,
            chat_id=incident.chat_id,
            incident_id=incident.id,
        )
    if not choice.delete:
        text = t("review.decided_keep", lang, admin=admin_name)
        return ReviewResult(answer=text, new_text=text, outcome=Outcome("ok", incident_id=incident.id))

    record = record_from_incident(incident)
    out = Outcome("ok", category=incident.category, score=incident.score, incident_id=incident.id)
    out = await delete_and_strike(record, chat, services, incident.id, out, actor=actor)
    if out.status == "deleted":
        text = t("review.decided_delete", lang, admin=admin_name)
    else:
        text = t("review.decided_delete_failed", lang, admin=admin_name, error=out.reason)
    return ReviewResult(answer=text, new_text=text, outcome=out)


__all__ = [
    "ApiResult",
    "Classifier",
    "Decision",
    "MessageRecord",
    "Outcome",
    "ReviewChoice",
    "ReviewResult",
    "decide",
    "delete_and_strike",
    "message_record",
    "moderate",
    "parse_review_data",
    "review_decision",
    "review_keyboard",
    "review_text",
    "skip_reason",
]
