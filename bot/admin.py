"""What the admin commands do, apart from Telegram plumbing: argument parsing (pure), the texts of
/status, /stats and /incidents (pure), member reports (a small in-memory tracker), and the actions that
touch storage and Telegram (/spam, /notspam, report batches, model reload).

Handlers in bot/commands.py parse the update, call these, and reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import re
import signal
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from telegram import Message, Update
from telegram.ext import JobQueue

import storage
from bot.caches import ChatPolicy
from bot.i18n import category_name, t
from bot.incidents import new_incident, record_from_incident

# The moderation core's own delete -> strike -> escalate step, reused so /spam behaves exactly like a
# model deletion (notice, strike, mute or ban). Private there; see the report of the admin-commands work.
from bot.moderation import (
    MessageRecord,
    Outcome,
    _delete_and_strike,
    message_record,
    review_keyboard,
    review_text,
)
from bot.notices import remove_notice_later
from bot.telegram_io import ApiResult
from storage.report_audit import list_member_reports

if TYPE_CHECKING:
    from bot.context import QinglangApp, Services

log = logging.getLogger(__name__)

# "Today" and the daily jobs follow the groups' clock, not the server's.
LOCAL_TZ = ZoneInfo("Asia/Shanghai")
EXPORT_FORMATS = ("csv", "xlsx", "jsonl")
DEFAULT_CATEGORIES = ("drug", "fraud", "obscene", "gambling")
MAX_STATS_DAYS = 366
MAX_RETENTION_DAYS = 3650
MAX_INCIDENTS = 50
MAX_REVIEW_ITEMS = 10


class UsageError(ValueError):
    """The command's arguments are malformed: answer with its usage line."""


# --- argument parsing (pure) ------------------------------------------------------------------

_DURATION = re.compile(r"^(\d+)\s*(s|sec|秒|m|min|分|分钟|h|小时|时|d|天)?$", re.IGNORECASE)
_UNIT_SECONDS = {
    None: 1, "s": 1, "sec": 1, "秒": 1, "m": 60, "min": 60, "分": 60, "分钟": 60,
    "h": 3600, "小时": 3600, "时": 3600, "d": 86400, "天": 86400,
}  # fmt: skip


def parse_duration(text: str) -> int:
    """Seconds from "3600", "30m", "2h", "1d" (or 30分钟, 2小时, 1天)."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise UsageError(f"not a duration: {text!r}")
    unit = match.group(2).lower() if match.group(2) else None
    return int(match.group(1)) * _UNIT_SECONDS[unit]


def parse_int(text: str, *, lo: int, hi: int) -> int:
    """An integer within lo..hi."""
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"not an integer: {text!r}") from None
    if not lo <= value <= hi:
        raise UsageError(f"{value} is not within {lo}..{hi}")
    return value


def parse_mode(args: Sequence[str]) -> str:
    if len(args) != 1 or args[0].lower() not in storage.records.MODES:
        raise UsageError("mode")
    return args[0].lower()


def parse_language(args: Sequence[str]) -> str:
    if len(args) != 1 or args[0].lower() not in storage.records.LANGUAGES:
        raise UsageError("language")
    return args[0].lower()


def parse_threshold(args: Sequence[str], categories: Sequence[str]) -> tuple[str, float | None]:
    """CATEGORY VALUE (0 < VALUE <= 1), or CATEGORY default to go back to the model's threshold."""
    if len(args) != 2:
        raise UsageError("threshold")
    category, raw = args[0].lower(), args[1].lower()
    if category not in categories:
        raise UsageError(f"unknown category {category!r}")
    if raw in ("default", "reset", "默认"):
        return category, None
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"not a number: {raw!r}") from None
    if not 0.0 < value <= 1.0:
        raise UsageError("threshold must be within (0, 1]")
    return category, value


def parse_strikes(args: Sequence[str]) -> tuple[int, int, int]:
    """K WINDOW MUTE: strikes before muting (0 disables), their window, and the mute's length."""
    if len(args) != 3:
        raise UsageError("strikes")
    limit = parse_int(args[0], lo=0, hi=100)
    window = parse_duration(args[1])
    mute = parse_duration(args[2])
    if window < 60 or window > 366 * 86400 or mute > 366 * 86400:
        raise UsageError("window must be 1 min..366 days, mute at most 366 days")
    return limit, window, mute


def parse_export(args: Sequence[str]) -> tuple[int | None, str]:
    """[DAYS] [csv|xlsx|jsonl] in either order; no DAYS means everything still retained."""
    days: int | None = None
    fmt = "csv"
    if len(args) > 2:
        raise UsageError("export")
    seen_fmt = seen_days = False
    for arg in args:
        if arg.lower() in EXPORT_FORMATS and not seen_fmt:
            fmt, seen_fmt = arg.lower(), True
        elif not seen_days:
            days, seen_days = parse_int(arg, lo=1, hi=MAX_RETENTION_DAYS), True
        else:
            raise UsageError("export")
    return days, fmt


def parse_user_id(args: Sequence[str]) -> int:
    if len(args) != 1:
        raise UsageError("user")
    try:
        user_id = int(args[0])
    except ValueError:
        raise UsageError(f"not a user id: {args[0]!r}") from None
    if user_id <= 0:
        raise UsageError("user ids are positive")
    return user_id


def start_of_local_day(now: dt.datetime | None = None) -> dt.datetime:
    """Midnight today in the groups' time zone, as an aware datetime."""
    local = (now or dt.datetime.now(dt.UTC)).astimezone(LOCAL_TZ)
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


# --- texts (pure) -----------------------------------------------------------------------------


def action_name(action: str | None, lang: str) -> str:
    return t(f"admin.action.{action or 'recorded'}", lang)


def format_counts(stats: Mapping[tuple[str, str | None], int], lang: str) -> list[str]:
    """One line per category: total, then the count of each action taken."""
    if not stats:
        return [t("admin.stats.none", lang)]
    by_category: dict[str, dict[str | None, int]] = {}
    for (category, action), n in stats.items():
        by_category.setdefault(category, {})[action] = n
    lines = []
    for category in sorted(by_category, key=lambda c: -sum(by_category[c].values())):
        actions = by_category[category]
        parts = "，".join(
            f"{action_name(a, lang)} {n}" for a, n in sorted(actions.items(), key=lambda kv: -kv[1])
        )
        lines.append(f"• {category_name(category, lang)}：{sum(actions.values())}（{parts}）")
    return lines


def format_status(
    policy: ChatPolicy,
    *,
    model_version: str,
    model_thresholds: Mapping[str, float],
    bot_rights: Mapping[str, bool],
    today: Mapping[tuple[str, str | None], int],
) -> str:
    """The /status answer."""
    lang = policy.language
    yes, no = t("admin.yes", lang), t("admin.no", lang)
    thresholds = []
    for category in sorted(set(model_thresholds) | set(policy.thresholds)):
        if category in policy.thresholds:
            value = f"{policy.thresholds[category]:.2f}*"
        else:
            value = f"{model_thresholds[category]:.2f}"
        thresholds.append(f"{category_name(category, lang)} {value}")
    lines = [
        t("admin.status.header", lang),
        t("admin.status.mode", lang, mode=t(f"admin.mode.{policy.mode}", lang)),
        t("admin.status.thresholds", lang, thresholds="，".join(thresholds) or "-"),
        t(
            "admin.status.strikes",
            lang,
            limit=policy.strike_limit,
            window=format_seconds(policy.strike_window_seconds, lang),
            then=t("admin.status.then_ban", lang)
            if policy.ban_on_limit
            else t("admin.status.then_mute", lang, mute=format_seconds(policy.mute_seconds, lang)),
        ),
        t("admin.status.retention", lang, days=policy.retention_days),
        t(
            "admin.status.report_chat",
            lang,
            chat=policy.report_chat_id if policy.report_chat_id else t("admin.status.private", lang),
        ),
        t("admin.status.trusted", lang, n=len(policy.trusted_user_ids)),
        t("admin.status.model", lang, version=model_version),
        t(
            "admin.status.rights",
            lang,
            delete=yes if bot_rights.get("can_delete_messages") else no,
            restrict=yes if bot_rights.get("can_restrict_members") else no,
        ),
        t("admin.status.today", lang),
        *format_counts(today, lang),
    ]
    return "\n".join(lines)


def format_seconds(seconds: int, lang: str) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return t(f"admin.unit.{unit}", lang, n=seconds // size)
    return t("admin.unit.s", lang, n=seconds)


def format_incident_line(incident: Any, lang: str) -> str:
    """`#id time category score action · sender · start of the text` for /incidents."""
    when = incident.received_at.astimezone(LOCAL_TZ).strftime("%m-%d %H:%M")
    sender = incident.sender_name or (f"@{incident.sender_username}" if incident.sender_username else "?")
    text = (incident.text or "").replace("\n", " ")
    if len(text) > 60:
        text = text[:60] + "…"
    state = action_name(incident.action_taken, lang)
    if incident.review_result:
        state += f"/{t(f'admin.review.{incident.review_result}', lang)}"
    return (
        f"#{incident.id} {when} {category_name(incident.category, lang)} {incident.score:.2f} "
        f"{state} · {sender} · {text}"
    )


def verdict_of(incident: Any) -> Any:
    """What moderation.review_text reads of a verdict, rebuilt from a stored incident."""
    return SimpleNamespace(label=incident.category, score=incident.score, reasons=incident.reasons or {})


# --- member reports ---------------------------------------------------------------------------


# How far back a restarted bot recalls member reports (from the audit log): bots cannot delete messages
# older than 48 hours anyway.
REPORT_MEMORY = dt.timedelta(days=2)


@dataclass
class ReportTracker:
    """Per chat: who reported which message, and each member's recent reports (for the rate limit).
    Kept in memory; a restarted bot replays the audit log's reports into it (`restore_reports`)."""

    per_member: int = 3  # reports a member may make within `window` seconds
    window: float = 600.0
    review_after: int = 3  # distinct reporters that make a message a review item at once
    clock: Callable[[], float] = time.monotonic
    reporters: dict[int, dict[int, str]] = field(default_factory=dict)  # message_id -> {reporter: name}
    recent: dict[int, list[float]] = field(default_factory=dict)  # reporter -> report times
    escalated: set[int] = field(default_factory=set)  # message ids already sent as review items
    restored: bool = False  # the reports made before this process have been replayed

    def add(
        self, *, message_id: int, reporter_id: int, reporter_name: str = "", at: float | None = None
    ) -> str:
        """ "limited", "duplicate", "noted" (below the review mark) or "review" (the mark is reached).
        `at`: when it was made, on `clock` (a replayed report); now if None."""
        now = self.clock() if at is None else at
        seen = self.reporters.setdefault(message_id, {})
        if reporter_id in seen:
            return "duplicate"
        times = [x for x in self.recent.get(reporter_id, ()) if now - x < self.window]
        if len(times) >= self.per_member:
            self.recent[reporter_id] = times
            return "limited"
        times.append(now)
        self.recent[reporter_id] = times
        seen[reporter_id] = reporter_name or str(reporter_id)
        if len(self.reporters) > 2000:  # keep memory flat in a busy chat: forget the oldest messages
            for old in sorted(self.reporters)[:1000]:
                self.reporters.pop(old, None)
                self.escalated.discard(old)
        if message_id in self.escalated:
            return "noted"
        if len(seen) >= self.review_after:
            self.escalated.add(message_id)
            return "review"
        return "noted"

    def replay(self, reports: Sequence[tuple[int, int, str, float]]) -> None:
        """Reports made before this process, oldest first: (message, reporter, name, seconds ago)."""
        now = self.clock()
        for message_id, reporter_id, name, age in reports:
            self.add(message_id=message_id, reporter_id=reporter_id, reporter_name=name, at=now - age)
        self.restored = True


async def restore_reports(tracker: ReportTracker, *, chat_id: int, services: Services) -> None:
    """Replay the chat's audited member reports of the last REPORT_MEMORY into a fresh tracker, so a
    restart neither resets the rate limit nor the count of distinct reporters of a message."""
    now = dt.datetime.now(dt.UTC)
    async with services.db.sessionmaker() as session:
        rows = await list_member_reports(session=session, chat_id=chat_id, since=now - REPORT_MEMORY)
    reports = []
    for row in rows:
        args = row.args if isinstance(row.args, dict) else {}
        message_id = args.get("message_id")
        if row.actor_id is None or not isinstance(message_id, int):
            continue
        name = str(args.get("reporter_name") or row.actor_id)
        reports.append((message_id, row.actor_id, name, (now - row.created_at).total_seconds()))
    tracker.replay(reports)


async def report_message(
    record: MessageRecord,
    message: Any,
    *,
    tracker: ReportTracker,
    reporter_id: int,
    reporter_name: str,
    policy: ChatPolicy,
    admin_ids: Sequence[int],
    services: Services,
) -> str:
    """A member's /report. Returns the tracker's answer ("limited", "duplicate", "noted", "review").

    "noted": the admins (report chat, or each admin in private) get the message with the reporter named.
    "review": enough distinct members reported it; it is recorded as kept for review, queued for the
    report, and sent with the Delete/Keep buttons, exactly like a model review."""
    if not tracker.restored:
        await restore_reports(tracker, chat_id=record.chat_id, services=services)
    status = tracker.add(message_id=record.message_id, reporter_id=reporter_id, reporter_name=reporter_name)
    if status in ("limited", "duplicate"):
        return status
    lang = policy.language
    targets = [policy.report_chat_id] if policy.report_chat_id else list(admin_ids)
    async with services.db.sessionmaker.begin() as session:
        await storage.log_admin_action(
            session=session,
            chat_id=record.chat_id,
            actor_id=reporter_id,
            command="report",
            args={"message_id": record.message_id, "result": status, "reporter_name": reporter_name},
        )
    sender = record.sender_name or (f"@{record.sender_username}" if record.sender_username else "?")
    if status == "noted":
        text = t(
            "report.notice",
            lang,
            reporter=reporter_name,
            chat=record.chat_title or record.chat_id,
            sender=sender,
            link=getattr(message, "link", None) or "",
            text=record.judged_text[:3000],
        )
        for target in targets:
            await services.tg.send_message(target, text)
        return status

    verdict = services.classifier.classify(record.judged_text, thresholds=policy.thresholds or None)
    category, score = best_category(verdict, categories_of(services.classifier))
    flagged = _as_flagged(verdict, category, score, "review")
    incident, _ = await storage.record_incident(
        sessionmaker=services.db.sessionmaker,
        incident=new_incident(record, flagged, received_at=dt.datetime.now(dt.UTC)),
    )
    reporters = tracker.reporters.get(record.message_id, {})
    names = t("report.reporters", lang, names="、".join(reporters.values()))
    pending = incident.action_taken in (None, "kept_for_review") and incident.review_result is None
    text = review_text(record, flagged, chat_title=record.chat_title, lang=lang) + "\n\n" + names
    markup = review_keyboard(record.chat_id, incident.id, lang) if pending else None
    sent: list[int] = []
    failed: list[int] = []
    for target in targets:
        result = await services.tg.send_message(target, text[:4000], reply_markup=markup)
        (sent if result.ok else failed).append(target)
    if incident.action_taken is None:
        async with services.db.sessionmaker.begin() as session:
            await storage.append_event(
                session=session,
                incident_id=incident.id,
                kind="action",
                value="kept_for_review",
                actor="members",
                detail={"reported_by": sorted(reporters), "sent_to": sent, "not_reached": failed},
            )
            if incident.report_status is None:
                await storage.append_event(
                    session=session, incident_id=incident.id, kind="report", value="queued", actor="members"
                )
    return status


# --- actions: storage and Telegram ------------------------------------------------------------


def categories_of(clf: Any) -> tuple[str, ...]:
    """The model's categories (interfaces.md: `clf.categories`)."""
    return tuple(getattr(clf, "categories", ())) or DEFAULT_CATEGORIES


def record_of(message: Message) -> MessageRecord:
    """The moderation record of a message the command replies to (an original, never an edit)."""
    record = message_record(Update(update_id=0, message=message))
    assert record is not None
    return record


def best_category(verdict: Any, categories: Sequence[str]) -> tuple[str, float]:
    """The verdict's label if it names a category, else the most likely category (for hand flags)."""
    if verdict.label in categories:
        return verdict.label, float(verdict.score)
    scores = getattr(verdict, "scores", None) or {}
    ranked = sorted(((float(scores.get(c, 0.0)), c) for c in categories), reverse=True)
    if not ranked:
        return "fraud", 0.0
    return ranked[0][1], ranked[0][0]


def _as_flagged(verdict: Any, category: str, score: float, action: str) -> Any:
    return SimpleNamespace(
        label=category,
        score=score,
        action=action,
        reasons=dict(verdict.reasons or {}),
        model_version=verdict.model_version,
    )


async def flag_spam(
    record: MessageRecord, *, policy: ChatPolicy, admin_id: int, category: str | None, services: Services
) -> Outcome:
    """/spam: record the message with the admin as decider, keep it as a training example, delete it
    and count a strike, exactly as a model deletion would."""
    verdict = services.classifier.classify(record.judged_text, thresholds=policy.thresholds or None)
    guessed, score = best_category(verdict, categories_of(services.classifier))
    category = category or guessed
    if category != guessed:
        score = float((getattr(verdict, "scores", None) or {}).get(category, score))
    actor = f"admin:{admin_id}"
    incident, created = await storage.record_incident(
        sessionmaker=services.db.sessionmaker,
        incident=new_incident(
            record,
            _as_flagged(verdict, category, score, "delete"),
            received_at=dt.datetime.now(dt.UTC),
            decided_by=actor,
        ),
    )
    label = category if created else incident.category
    async with services.db.sessionmaker.begin() as session:
        if not created:  # the model saw it first (review, dry run): the admin confirms
            await storage.append_event(
                session=session, incident_id=incident.id, kind="review", value="confirmed", actor=actor
            )
        await storage.add_training_example(
            session=session,
            text=incident.text or record.text,
            label=label,
            actor_id=admin_id,
            chat_id=record.chat_id,
            incident_id=incident.id,
        )
        if incident.report_status is None:
            await storage.append_event(
                session=session, incident_id=incident.id, kind="report", value="queued", actor=actor
            )
        await storage.log_admin_action(
            session=session,
            chat_id=record.chat_id,
            actor_id=admin_id,
            command="spam",
            args={"incident_id": incident.id, "message_id": record.message_id, "category": label},
        )
    out = Outcome("ok", category=label, score=float(incident.score), incident_id=incident.id)
    return await _delete_and_strike(record, policy, services, incident.id, out, actor=actor)


async def after_admin_delete(
    services: Services,
    job_queue: JobQueue[Any] | None,
    outcome: Outcome,
    *,
    actor: str,
    record: MessageRecord | None = None,
) -> None:
    """A delete an admin decided (a review button, /spam), once carried out: its notice removes itself
    like any other, and the observers (metrics) count it as they count the model's deletes.

    `record`: the message, when the caller has it; otherwise it is rebuilt from the stored incident."""
    if outcome.status not in ("deleted", "delete_failed"):
        return
    if record is None:
        if outcome.incident_id is None:
            return
        async with services.db.sessionmaker() as session:
            incident = await storage.get_incident(session=session, incident_id=outcome.incident_id)
        if incident is None:
            return
        record = record_from_incident(incident)
    if outcome.notice_message_id is not None:
        await remove_notice_later(services, job_queue, record.chat_id, outcome.notice_message_id)
    # Marked as an admin's decision: the observers count a delete, not a message seen again.
    outcome.extra["decided_by"] = actor
    for observe in services.observers:
        observe(record, outcome)


async def mark_not_spam(
    incident_id: int, *, chat_id: int, admin_id: int, reason: str | None, services: Services
) -> tuple[str, Any]:
    """/notspam: a false positive. Returns (status, incident): status "done", "unknown" or "already"."""
    actor = f"admin:{admin_id}"
    async with services.db.sessionmaker.begin() as session:
        incident = await storage.get_incident(session=session, incident_id=incident_id)
        if incident is None or incident.chat_id != chat_id:
            return "unknown", None
        if incident.review_result == "false_positive":
            return "already", incident
        await storage.append_event(
            session=session,
            incident_id=incident.id,
            kind="review",
            value="false_positive",
            actor=actor,
            detail={"reason": reason} if reason else None,
        )
        await storage.add_training_example(
            session=session,
            text=incident.text or "",
            label="ok",
            actor_id=admin_id,
            chat_id=chat_id,
            incident_id=incident.id,
        )
        removed = await storage.remove_strike(session=session, incident_id=incident.id)
        await storage.log_admin_action(
            session=session,
            chat_id=chat_id,
            actor_id=admin_id,
            command="notspam",
            args={"incident_id": incident.id, "reason": reason, "strikes_removed": removed},
        )
    return "done", incident


@dataclass(frozen=True, slots=True)
class BatchDelivery:
    """A report batch created and handed over: where the file went."""

    batch_id: int
    incidents: int
    file_name: str
    digest: str
    sent_to: int


class DeliveryFailed(RuntimeError):
    """No destination took the batch file; the batch was rolled back (its incidents stay queued)."""


async def send_document(
    services: Services, chat_id: int, path: Path, *, caption: str | None = None
) -> ApiResult:
    """sendDocument through SafeTelegram; the file is reopened on each attempt."""
    bot = services.tg.bot

    async def request() -> Any:
        with path.open("rb") as f:
            return await bot.send_document(
                chat_id=chat_id, document=f, filename=path.name, caption=caption[:1024] if caption else None
            )

    return await services.tg.call("sendDocument", request)


async def submit_report_batch(
    *,
    chat_id: int,
    created_by: str,
    targets: Sequence[int],
    caption: Callable[[int, int], str],
    services: Services,
    fmt: str = "csv",
) -> BatchDelivery | None:
    """Claim the chat's queued incidents into a batch, write its file, send it to the first target that
    takes it. The batch is committed only once delivered, so a failed delivery leaves them queued.
    None when nothing is queued; DeliveryFailed when no target took the file."""
    with tempfile.TemporaryDirectory(prefix="qinglang-batch-") as tmp:
        stamp = dt.datetime.now(LOCAL_TZ).strftime("%Y%m%d-%H%M%S")
        path = Path(tmp) / f"qinglang-report-{abs(chat_id)}-{stamp}.{fmt}"
        # Telegram is called inside the transaction on purpose: updates are handled one at a time, so
        # holding it blocks nothing, and a rollback keeps the incidents queued if no one got the file.
        async with services.db.sessionmaker.begin() as session:
            batch = await storage.create_report_batch(
                session=session, chat_id=chat_id, created_by=created_by, path=path, fmt=fmt
            )
            if batch is None:
                return None
            n = len(batch.incident_ids)  # type: ignore[attr-defined]
            for target in targets:
                sent = await send_document(services, target, path, caption=caption(batch.id, n))
                if sent.ok:
                    return BatchDelivery(batch.id, n, path.name, batch.file_digest or "", target)
                log.warning("report batch for chat %s: %s did not take it: %s", chat_id, target, sent.error)
            raise DeliveryFailed(f"no destination took the report batch of chat {chat_id}")


async def export_for(
    services: Services, *, chat_id: int, days: int | None, fmt: str, directory: Path
) -> storage.ExportResult:
    """The chat's incident log (optionally the last DAYS) written into `directory`."""
    since = dt.datetime.now(dt.UTC) - dt.timedelta(days=days) if days else None
    stamp = dt.datetime.now(LOCAL_TZ).strftime("%Y%m%d-%H%M%S")
    path = directory / f"qinglang-export-{abs(chat_id)}-{stamp}.{fmt}"
    return await storage.export_records(services.db.engine, path=path, fmt=fmt, chat_id=chat_id, since=since)


async def reload_model(services: Services) -> tuple[bool, str]:
    """Load the model again (off the event loop) and swap it in; on failure keep the running one.
    Returns (ok, new version or the error)."""
    import classifier

    try:
        model = await asyncio.to_thread(classifier.load, services.settings.model_path)
    except Exception as exc:  # a broken model file must never take the running model down
        log.exception("model reload failed; keeping model %s", getattr(services.classifier, "version", "?"))
        return False, f"{type(exc).__name__}: {exc}"
    old = getattr(services.classifier, "version", "?")
    services.classifier = model  # handlers read it per update: the next message uses the new model
    log.info("model reloaded: %s -> %s", old, model.version)
    return True, model.version


def install_sighup_reload(application: QinglangApp) -> None:
    """Reload the model on SIGHUP once the application is running (POSIX only)."""
    if not hasattr(signal, "SIGHUP"):
        return
    previous = application.post_init
    pending: set[asyncio.Task[Any]] = set()  # strong references to reloads in flight

    async def post_init(app: QinglangApp) -> None:
        if previous is not None:
            await previous(app)
        loop = asyncio.get_running_loop()

        def on_sighup() -> None:
            services = app.bot_data.services
            if services is not None:
                task = loop.create_task(reload_model(services))
                pending.add(task)
                task.add_done_callback(pending.discard)

        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGHUP, on_sighup)

    application.post_init = post_init
