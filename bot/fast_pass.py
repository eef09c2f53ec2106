"""Clean messages passed before PTB parses them: most of the bot's CPU for an ordinary message is PTB
building its objects (`Update.de_json`, ~0.23 ms of the ~0.45 ms a message costs the bot's process).

The getUpdates wrapper (bot/journal.py) journals a fetched batch and hands it to the classifier worker
(bot/classify_worker.py), then calls `pass_clean_updates`. A message is passed here, and PTB gets only
its `update_id` (it advances the offset, and the journal marks it done, as for any update), when all of
these hold; anything else goes to the handlers as before:
- it is a plain new text message in a group (`plain_text_record`: no edit, forward, channel sender,
  command or media);
- the chat's settings and admins are cached (no database or Telegram call is made here), its mode is
  not `off`, and the sender is one the handler would judge (not an admin, trusted, or the bot);
- the worker's verdict arrived within the wait, for this very text and model, and under the chat's
  own thresholds its action is `pass` (as `moderate` would decide it).

The observers (metrics, the demo's printout) see each passed message as the handler would report it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bot.moderation import Outcome, plain_text_record, skip_reason

if TYPE_CHECKING:
    from bot.context import Services


async def pass_clean_updates(updates: Sequence[Mapping[str, Any]], services: Services | None) -> set[int]:
    """The update ids of the batch's messages judged clean here (their outcome already observed)."""
    worker = services.classify_worker if services is not None else None
    if services is None or worker is None:
        return set()
    started = time.perf_counter()
    candidates = []
    bot_id = services.tg.bot.id
    for update in updates:
        record = plain_text_record(update)
        if record is None:
            continue
        chat = services.chats.peek(record.chat_id)
        admins = services.admins.peek(record.chat_id)
        if chat is None or admins is None or chat.mode == "off":
            continue
        if skip_reason(record, bot_id=bot_id, admin_ids=admins.user_ids, trusted_ids=chat.trusted_user_ids):
            continue
        candidates.append((int(update["update_id"]), record, chat))
    if not candidates:
        return set()
    model: Any = services.classifier  # a loaded classifier.model.Classifier (the worker runs only then)
    verdicts = await worker.ready([(r.key, r.judged_text) for _, r, _ in candidates], model)
    passed: set[int] = set()
    for update_id, record, chat in candidates:
        verdict = verdicts.get(record.key)
        if verdict is None:
            continue
        judged = worker.with_thresholds(verdict, model, chat.thresholds or None)
        if judged is None or judged.action != "pass":  # the handler takes the worker's verdict from here
            continue
        worker.discard(record.key)
        worker.stats.from_worker += 1
        worker.stats.fast_passed += 1
        passed.add(update_id)
        outcome = Outcome(
            "ok",
            category=verdict.label,
            score=verdict.score,
            extra={"verdict_source": "fast_pass", "classify_seconds": 0.0},
        )
        outcome.extra["handled_seconds"] = time.perf_counter() - started
        for observe in services.observers:
            observe(record, outcome)
    return passed
