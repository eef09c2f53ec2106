"""The model's deletions, carried out in batches while the handlers go on with the next updates.

Handlers run one update at a time, so a message the model deletes used to hold every update behind it
for two durable commits (its incident, then its outcome) and a Bot API round trip. Here the handler
only judges and queues it; whatever queued up during the previous batch is then handled together:

1. every incident recorded durably in one transaction (database or spool: bot/evidence.py), *before*
   anything is deleted;
2. the messages deleted, one `deleteMessages` call per chat (up to 100 ids), or `deleteMessage` for
   one; a batch Telegram refuses is retried one message at a time when that can tell the messages
   apart, so each message's outcome (deleted / delete_failed with Telegram's error) is its own;
3. one notice per chat, naming the senders (rate-limited per chat as before);
4. each message's outcome event and strike appended, all in one transaction; then mutes or bans.

An update whose message waits here is not marked done in the journal until its outcome is recorded
(`holds`): a crash in between replays it, and the incident it finds recorded is completed then.
At low rates a batch is one message and nothing waits: the batch starts at the next event-loop turn.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import storage
from bot.caches import ChatPolicy
from bot.evidence import EventSpec, IncidentRef
from bot.i18n import category_name, t
from bot.moderation import MessageRecord, Outcome, escalate, warn_missing_right
from bot.telegram_io import ApiResult

if TYPE_CHECKING:
    from bot.context import Services

log = logging.getLogger(__name__)

MAX_BATCH = 100  # messages handled together (also Telegram's limit for one deleteMessages call)
NOTICE_NAMES = 3  # senders named in a coalesced notice; the rest are counted
# A refused deleteMessages whose error may concern only some of its messages: ask one message at a time.
_ONE_BY_ONE = ("gone", "bad_request")

Finished = Callable[[MessageRecord, Outcome, int | None], Awaitable[None]]


@dataclass(slots=True)
class Queued:
    """One message the model decided to delete, waiting for its batch."""

    record: MessageRecord
    chat: ChatPolicy
    incident: storage.NewIncident
    out: Outcome
    update_id: int | None
    ref: IncidentRef | None = None
    deleted: ApiResult | None = None
    events: list[EventSpec] = field(default_factory=list)


class Deletions:
    """The queue of model deletions and the task that works through it, one batch at a time."""

    def __init__(self, services: Services, finished: Finished) -> None:
        self.services = services
        self.finished = finished  # called once per message with its final outcome (observers, journal)
        self._queue: list[Queued] = []
        self._held: set[int] = set()  # update ids not to be marked done yet
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    def submit(
        self,
        record: MessageRecord,
        chat: ChatPolicy,
        incident: storage.NewIncident,
        out: Outcome,
        update_id: int | None,
    ) -> None:
        """Queue a message; its batch starts at the next event-loop turn (or after the running one)."""
        item = Queued(record, chat, incident, out, update_id)
        self._queue.append(item)
        if item.update_id is not None:
            self._held.add(item.update_id)
        if self._task is None:
            self._idle.clear()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="qinglang-deletions")

    def holds(self, update_id: int) -> bool:
        """Whether this update's message still waits for its outcome (its journal mark waits too)."""
        return update_id in self._held

    async def wait_idle(self) -> None:
        """Until every queued message has its outcome."""
        await self._idle.wait()

    async def close(self) -> None:
        """Finish what is queued (at stop, while Telegram and the database are still there)."""
        await self.wait_idle()

    def cancel(self) -> None:
        """Stop at once (at shutdown): what did not finish is replayed from the journal at the next start."""
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                try:
                    await self._handle(batch)
                except Exception:
                    # Not marked done: the journal replays these updates at the next start, and the
                    # incidents already recorded are completed then.
                    log.exception("a batch of %d deletions failed", len(batch))
                finally:
                    for item in batch:
                        if item.update_id is not None:
                            self._held.discard(item.update_id)
        finally:
            self._task = None
            self._idle.set()

    async def _handle(self, batch: list[Queued]) -> None:
        services = self.services
        evidence = services.evidence
        # 1. Evidence first, for the whole batch.
        recorded = await evidence.record_many([item.incident for item in batch])
        acting: list[Queued] = []
        for item, rec in zip(batch, recorded, strict=True):
            item.ref = rec.ref
            item.out.incident_id = rec.incident_id
            if await evidence.handled_elsewhere(rec):
                item.out.status = "duplicate"
                await self.finished(item.record, item.out, item.update_id)
                continue
            if not rec.created:
                item.out.extra["resumed"] = True  # recorded before a crash: complete its action now
            acting.append(item)
        if not acting:
            return
        # 2. Deletes, per chat.
        by_chat: dict[int, list[Queued]] = {}
        for item in acting:
            by_chat.setdefault(item.record.chat_id, []).append(item)
        for chat_items in by_chat.values():
            await self._delete(chat_items)
        # 3. One notice per chat for what was deleted.
        for chat_items in by_chat.values():
            await self._notice(chat_items)
        # 4. Outcomes and strikes, together.
        strikes = await evidence.append_many(
            [
                (
                    item.ref,
                    item.events,
                    (item.record.sender_id, item.chat.strike_window_seconds)
                    if item.record.sender_id is not None
                    else None,
                )
                for item in acting
                if item.ref is not None
            ]
        )
        for item, count in zip(acting, strikes, strict=True):
            item.out.extra["strikes"] = count
            record, chat = item.record, item.chat
            if record.sender_id is not None and chat.strike_limit > 0 and count >= chat.strike_limit:
                assert item.ref is not None
                await escalate(record, chat, services, item.ref, item.out, strikes=count)
            await self.finished(record, item.out, item.update_id)

    async def _delete(self, items: list[Queued]) -> None:
        """Delete one chat's messages and note each one's outcome."""
        tg = self.services.tg
        chat_id = items[0].record.chat_id
        results: list[ApiResult] = []
        for start in range(0, len(items), MAX_BATCH):
            chunk = items[start : start + MAX_BATCH]
            if len(chunk) == 1:
                results.append(await tg.delete_message(chat_id, chunk[0].record.message_id))
                continue
            together = await tg.delete_messages(chat_id, [i.record.message_id for i in chunk])
            if together.ok:
                note = f"deleteMessages: {len(chunk)} in one call"
                results += [ApiResult(True, attempts=together.attempts, note=note)] * len(chunk)
            elif together.kind in _ONE_BY_ONE:
                for item in chunk:
                    results.append(await tg.delete_message(chat_id, item.record.message_id))
            else:  # no right, flood, network…: the same for every message of the chat
                results += [together] * len(chunk)
        for item, deleted in zip(items, results, strict=True):
            out = item.out
            if out.extra.get("resumed") and deleted.kind == "gone":
                # Resumed after a crash: the delete sent before it most likely went through.
                note = f"resumed after restart: {deleted.error}"
                deleted = ApiResult(True, attempts=deleted.attempts, note=note)
            item.deleted = deleted
            out.status = "deleted" if deleted.ok else "delete_failed"
            item.events = [("action", out.status, "model", deleted.detail())]
            if not deleted.ok:
                out.reason = deleted.error
                out.extra["delete_error_kind"] = deleted.kind
                log.warning(
                    "chat %s: delete of %s failed: %s", chat_id, item.record.message_id, deleted.error
                )
                if deleted.kind in ("no_rights", "forbidden"):
                    await warn_missing_right(self.services, item.chat, "delete")
            item.events.append(("report", "queued", "model", None))

    async def _notice(self, items: list[Queued]) -> None:
        """One notice for the chat's deleted messages, naming their senders (never the content)."""
        deleted = [i for i in items if i.out.status == "deleted" and i.out.category]
        if not deleted:
            return
        services = self.services
        chat_id = deleted[0].record.chat_id
        now = time.monotonic()
        last = services.last_notice.get(chat_id)
        if last is not None and now - last < services.settings.notice_min_interval_seconds:
            return
        services.last_notice[chat_id] = now
        lang = deleted[0].chat.language
        text = notice_text([(i.record, str(i.out.category)) for i in deleted], lang)
        sent = await services.tg.send_message(chat_id, text, thread_id=deleted[-1].record.thread_id)
        if not sent.ok:
            return
        notice_id = sent.value.message_id
        deleted[0].out.notice_message_id = notice_id  # its removal is scheduled once
        for item in deleted:
            item.events[0][3]["notice_message_id"] = notice_id


def _display_name(record: MessageRecord) -> str:
    return record.sender_name or (f"@{record.sender_username}" if record.sender_username else "?")


def notice_text(deleted: Sequence[tuple[MessageRecord, str]], lang: str) -> str:
    """The deletion notice for one or more messages of a chat: who and which category, never the text."""
    if len(deleted) == 1:
        record, category = deleted[0]
        return t("notice.deleted", lang, name=_display_name(record), category=category_name(category, lang))
    people: dict[tuple[Any, ...], str] = {}
    for record, _ in deleted:
        who = (record.sender_id, record.sender_chat_id, record.sender_name)
        people.setdefault(who, _display_name(record))
    names = list(people.values())
    sep = "、" if lang != "en" else ", "
    shown = sep.join(names[:NOTICE_NAMES])
    if len(names) > NOTICE_NAMES:
        more = len(names) - NOTICE_NAMES
        shown = t("notice.names_more", lang, names=shown, people=len(names), more=more)
    categories = sep.join(dict.fromkeys(category_name(c, lang) for _, c in deleted))
    return t("notice.deleted_many", lang, names=shown, count=len(deleted), categories=categories)
