"""The classifier worker (bot/classify_worker.py): its verdicts equal in-process `classify`, a killed worker
costs no message, and a reloaded model reaches it."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from botenv import BOT_ID, shared_model
from telegram import Update

from bot import admin
from bot.app import ALLOWED_UPDATES, build_application
from bot.classify_worker import WAIT_LIMIT, ClassifyWorker, raw_judged
from bot.config import Settings
from bot.emulator import Emulator
from bot.moderation import MessageRecord, Outcome, message_record

TOKEN = f"{BOT_ID}:AAworker-tests-token-0123456789abcdefghi"
GROUP = -1001700000001
ADMIN = 1301
MEMBER = 1302
SPAMMERS = range(1400, 1500)
SPAM = [
    "出冰，货真价实，量大从优，需要的加V：bing8888",
    "急招刷单员，手机操作，日结300-500，不收任何费用，加QQ 2837465910",
    "澳门首家线上赌场，百家乐真人荷官，注册即送88元彩金，日赢万元",
    "同城上门服务，学生妹兼职，全套包夜，看头像加微信 mm52099",
]
CLEAN = ["大家早上好！今天天气不错", "新闻说警方昨天破获一起贩毒案，缴获冰毒两公斤。", "明天下午三点开会"]


def _group_emulator() -> Emulator:
    emu = Emulator(TOKEN, bot_username="qinglang_worker_bot")
    emu.add_user(ADMIN, "管理员")
    emu.add_user(MEMBER, "小王")
    for uid in SPAMMERS:
        emu.add_user(uid, f"推广{uid}")
    emu.add_chat(GROUP, "工作进程测试群", admins=[ADMIN], owner=ADMIN)
    return emu


async def _settle(worker: ClassifyWorker, count: int, timeout: float = 20) -> None:
    """Until the worker's replies for `count` prefetched messages have been read."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while sum(p.fields is not None for p in worker._pending.values()) < count:
        assert loop.time() < deadline, "the worker did not answer"
        await asyncio.sleep(0.01)


async def _alive(worker: ClassifyWorker, timeout: float = 30) -> None:
    """Until the worker launched in the background (warm, then fork) is up."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not worker.alive():
        assert loop.time() < deadline, "the worker was not forked"
        await asyncio.sleep(0.02)


def test_raw_text_is_what_the_handler_judges() -> None:
    emu = _group_emulator()
    link = [{"type": "text_link", "offset": 0, "length": 2, "url": "https://t.me/spam"}]
    button = {"inline_keyboard": [[{"text": "加我", "url": "https://example.com/x"}]]}
    emu.message(GROUP, MEMBER, "你好 世界")
    emu.message(GROUP, MEMBER, "点这", entities=link, reply_markup=button)
    emu.message(GROUP, MEMBER, caption="出冰 加V", photo=True)
    sent = emu.message(GROUP, MEMBER, "原文")
    emu.edit(GROUP, sent["message_id"], "改成 加V bing8888")
    emu.message(GROUP, MEMBER, forward_origin=MEMBER, text="转发的 加QQ 2837465910")
    emu.message(GROUP, ADMIN, new_chat_members=[MEMBER])  # service: nothing to judge
    emu.message(MEMBER, MEMBER, "私聊不审")  # a private chat: not moderated
    judged = 0
    for raw in emu.pending_updates:
        record = message_record(Update.de_json(raw, None))
        found = raw_judged(raw)
        if record is None or record.is_service or record.chat_id != GROUP:
            assert found is None, raw
            continue
        judged += 1
        assert found == (record.key, record.judged_text), raw
    assert judged == 6


async def test_worker_verdicts_equal_in_process_classify() -> None:
    model = shared_model()
    emu = _group_emulator()
    texts = SPAM + CLEAN + ["一般般 出冰 吗", "加V了解一下 mm52099"]
    for i, text in enumerate(texts):
        emu.message(GROUP, MEMBER, text)
        emu.message(GROUP, SPAMMERS[i], text + " 快来")
    updates = list(emu.pending_updates)
    records = [message_record(Update.de_json(raw, None)) for raw in updates]
    worker = ClassifyWorker(model)
    assert worker.start()
    try:
        assert worker.prefetch_updates(updates, model) == len(updates)
        await _settle(worker, len(updates))
        # None: the model's thresholds; one that moves only actions; one low enough to turn "ok" messages
        # into flagged ones (review never sits above delete), which changes their label.
        lenient = {category: 0.01 for category in model.categories}
        for i, record in enumerate(records):
            assert isinstance(record, MessageRecord)
            thresholds = [None, {"drug": 0.5}, lenient][i % 3]
            verdict, source = await worker.verdict(record.key, record.judged_text, model, thresholds)
            full = model.classify(record.judged_text, thresholds=thresholds)
            assert verdict == model.classify(record.judged_text, thresholds=thresholds, reasons="flagged")
            # A pass verdict travels without reasons (nothing records them); a flagged one keeps them all.
            assert verdict == (dataclasses.replace(full, reasons={}) if full.action == "pass" else full)
            expected = model.classify(record.judged_text)
            flips = thresholds is not None and verdict.label != expected.label
            assert source == ("rejudged" if flips else "worker"), (record.judged_text, thresholds)
        assert worker.stats.rejudged > 0, "lenient thresholds flag some clean messages"
        assert worker.stats.in_process == 0
        # Not prefetched, or a different text under the same key: judged here.
        verdict, source = await worker.verdict((GROUP, 999_999, None), SPAM[0], model, None)
        assert (verdict, source) == (model.classify(SPAM[0]), "in_process")
    finally:
        worker.close()
    assert worker.pid is None


async def test_a_verdict_in_flight_is_awaited_and_a_stalled_worker_is_not() -> None:
    """Asked before the worker answered, the handler waits for it instead of judging the message twice;
    a stalled worker costs at most WAIT_LIMIT, then the message is judged in-process."""
    model = shared_model()
    model.classify(SPAM[0])  # warm, as launch() does: the fork shares the built segmenter
    emu = _group_emulator()
    for text in SPAM[:2]:
        emu.message(GROUP, MEMBER, text)
    updates = list(emu.pending_updates)
    records = [message_record(Update.de_json(raw, None)) for raw in updates]
    worker = ClassifyWorker(model)
    assert worker.start()
    pid = worker.pid
    assert pid is not None
    try:
        assert worker.prefetch_updates(updates[:1], model) == 1
        first = records[0]
        assert first is not None
        verdict, source = await worker.verdict(first.key, first.judged_text, model, None)
        assert (verdict, source) == (model.classify(first.judged_text), "worker")
        assert worker.stats.in_process == 0
        os.kill(pid, signal.SIGSTOP)
        try:
            assert worker.prefetch_updates(updates[1:], model) == 1
            second = records[1]
            assert second is not None
            loop = asyncio.get_running_loop()
            started = loop.time()
            verdict, source = await worker.verdict(second.key, second.judged_text, model, None)
            assert (verdict, source) == (model.classify(second.judged_text), "in_process")
            assert WAIT_LIMIT <= loop.time() - started < WAIT_LIMIT + 1
        finally:
            os.kill(pid, signal.SIGCONT)
    finally:
        worker.close()


async def test_killed_worker_costs_no_verdict_and_is_forked_again() -> None:
    model = shared_model()
    emu = _group_emulator()
    for text in SPAM:
        emu.message(GROUP, MEMBER, text)
    updates = list(emu.pending_updates)
    worker = ClassifyWorker(model)
    assert worker.start()
    try:
        pid = worker.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        await asyncio.sleep(0.2)
        worker.prefetch_updates(updates, model)  # finds it dead: nothing is waited for
        for raw in updates:
            record = message_record(Update.de_json(raw, None))
            assert record is not None
            verdict, source = await worker.verdict(record.key, record.judged_text, model, None)
            assert (verdict, source) == (model.classify(record.judged_text), "in_process")
        assert worker.stats.deaths == 1 and not worker.alive()
        worker._last_fork -= 3600  # the pause between forks has passed
        assert worker.prefetch_updates(updates, model) == 0, "launched: this batch is the handlers'"
        await _alive(worker)
        assert worker.pid != pid
        assert worker.prefetch_updates(updates, model) == len(updates)
    finally:
        worker.close()


@dataclass
class Running:
    app: Any
    emu: Emulator
    outcomes: list[tuple[MessageRecord, Outcome]]

    @property
    def services(self) -> Any:
        return self.app.bot_data.services

    def sources(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for _, outcome in self.outcomes:
            source = outcome.extra.get("verdict_source")
            if source:
                out[source] = out.get(source, 0) + 1
        return out

    async def stream(self, count: int, first_sender: int = 0) -> set[int]:
        """Queue `count` messages (every other one a solicitation); the ids that must be deleted."""
        flagged: set[int] = set()
        model = self.services.classifier
        judged = len(self.outcomes) + count
        for i in range(count):
            text = SPAM[i % len(SPAM)] if i % 2 == 0 else CLEAN[i % len(CLEAN)]
            sender = SPAMMERS[(first_sender + i) % len(SPAMMERS)]
            sent = self.emu.message(GROUP, sender, text)
            if model.classify(text).action == "delete":
                flagged.add(sent["message_id"])
        await self.emu.wait_for(
            lambda: len(self.outcomes) >= judged and all(self.emu.is_deleted(GROUP, m) for m in flagged),
            timeout=60,
        )
        return flagged


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    emu = _group_emulator()
    settings = Settings(
        telegram_token=TOKEN,  # type: ignore[arg-type]
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'q.db'}",
        spool_dir=tmp_path / "spool",
        metrics_port=0,
        notice_min_interval_seconds=0,
        strike_limit=0,
        telegram_retries=0,
        _env_file=None,  # type: ignore[call-arg]
    )
    outcomes: list[tuple[MessageRecord, Outcome]] = []
    app = build_application(
        settings,
        request=emu.request(),
        get_updates_request=emu.request(),
        classifier=shared_model(),
        observers=[lambda record, outcome: outcomes.append((record, outcome))],
    )
    errors: list[BaseException] = []

    async def record_error(update: object, context: Any) -> None:
        errors.append(context.error)

    app.add_error_handler(record_error)
    await app.initialize()
    await app.post_init(app)
    await app.updater.start_polling(allowed_updates=ALLOWED_UPDATES, poll_interval=0, timeout=1)
    await app.start()
    try:
        yield Running(app=app, emu=emu, outcomes=outcomes)
    finally:
        worker = app.bot_data.services.classify_worker
        emu.close()
        await app.updater.stop()
        await app.stop()
        await app.shutdown()
        await app.post_shutdown(app)
        assert worker is None or worker.pid is None, "shutdown stops the worker"
    assert not errors, errors


async def test_bot_judges_every_message_before_and_after_its_worker_is_killed(running: Running) -> None:
    worker = running.services.classify_worker
    assert worker is not None
    assert worker.pid is None, "launched by the first fetched batch, not at start"
    await running.stream(4)
    await _alive(worker)
    running.outcomes.clear()
    flagged = await running.stream(200, first_sender=4)
    assert len(running.outcomes) == 200
    assert running.sources().get("worker", 0) > 0, "a queued burst is judged ahead by the worker"
    assert {r.message_id for r, o in running.outcomes if o.status == "deleted"} == flagged

    pid = worker.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    running.outcomes.clear()
    flagged = await running.stream(100, first_sender=204)
    assert len(running.outcomes) == 100, "every message judged with the worker gone"
    assert running.sources() == {"in_process": 100}
    assert {r.message_id for r, o in running.outcomes if o.status == "deleted"} == flagged
    assert worker.stats.deaths == 1


async def test_reload_reaches_the_worker(running: Running) -> None:
    worker = running.services.classify_worker
    assert worker is not None
    await running.stream(4)
    await _alive(worker)
    old_pid, old_model = worker.pid, worker.model
    ok, _ = await admin.reload_model(running.services)
    assert ok
    new_model = running.services.classifier
    assert new_model is not old_model
    await running.stream(20)
    assert worker.model is new_model, "the next batch launched a worker with the reloaded model"
    await _alive(worker)
    assert worker.pid != old_pid
    running.outcomes.clear()
    await running.stream(200, first_sender=20)
    assert running.sources().get("worker", 0) > 0


def test_only_a_real_model_gets_a_worker() -> None:
    class Fake:
        version = "fake"

        def classify(self, text: str, thresholds: Any = None) -> Any:
            raise AssertionError

    assert not ClassifyWorker.usable(Fake())
    assert ClassifyWorker.usable(shared_model())


# --- clean messages passed before PTB parses them (bot/fast_pass.py) ---------------------------------


def _raw(message: dict[str, Any], update_id: int = 7) -> dict[str, Any]:
    base = {
        "message_id": 42,
        "date": 1_790_000_000,
        "chat": {"id": GROUP, "type": "supergroup", "title": "工作进程测试群"},
        "from": {"id": MEMBER, "is_bot": False, "first_name": "小", "last_name": "王", "username": "xw"},
        "text": "明天下午三点开会",
    }
    return {"update_id": update_id, "message": {**base, **message}}


PLAIN = [
    _raw({}),
    _raw({"from": {"id": MEMBER, "is_bot": False, "first_name": "小王"}}),
    _raw({"message_thread_id": 5, "is_topic_message": True}),
    _raw(
        {
            "text": "看这里",
            "entities": [{"type": "text_link", "offset": 0, "length": 3, "url": "https://x.example/a"}],
        }
    ),
    _raw({"reply_markup": {"inline_keyboard": [[{"text": "进群", "url": "https://t.me/joinx"}]]}}),
    _raw({"chat": {"id": -4001, "type": "group", "title": "小群"}}),
]
NOT_PLAIN = [
    _raw({"text": "/status"}),
    _raw({"text": "状态 /status", "entities": [{"type": "bot_command", "offset": 3, "length": 7}]}),
    _raw({"chat": {"id": MEMBER, "type": "private", "first_name": "小王"}}),
    _raw({"forward_origin": {"type": "hidden_user", "date": 1_790_000_000, "sender_user_name": "某人"}}),
    _raw({"sender_chat": {"id": GROUP, "type": "supergroup", "title": "工作进程测试群"}}),
    _raw({"via_bot": {"id": 77, "is_bot": True, "first_name": "inline"}}),
    _raw(
        {
            "text": None,
            "caption": "出冰 加V",
            "photo": [{"file_id": "a", "file_unique_id": "b", "width": 1, "height": 1}],
        }
    ),
    {"update_id": 8, "edited_message": _raw({"edit_date": 1_790_000_100})["message"]},
]


@pytest.mark.parametrize("raw", PLAIN)
def test_plain_text_record_is_the_handlers_record(raw: dict[str, Any]) -> None:
    from bot.moderation import plain_text_record

    assert plain_text_record(raw) == message_record(Update.de_json(raw, None))


@pytest.mark.parametrize("raw", NOT_PLAIN)
def test_anything_but_a_plain_text_message_goes_to_the_handlers(raw: dict[str, Any]) -> None:
    from bot.moderation import plain_text_record

    raw["message" if "message" in raw else "edited_message"] = {
        k: v for k, v in (raw.get("message") or raw["edited_message"]).items() if v is not None
    }
    assert plain_text_record(raw) is None


async def test_clean_messages_pass_before_ptb_and_are_still_observed(running: Running) -> None:
    worker = running.services.classify_worker
    assert worker is not None
    await running.stream(4)  # caches the chat's settings and admins, launches the worker
    await _alive(worker)
    running.outcomes.clear()
    flagged = await running.stream(200, first_sender=4)
    assert worker.stats.fast_passed > 0, "clean messages of a queued burst skip PTB's parse"
    assert len(running.outcomes) == 200, "every message is observed, passed early or not"
    assert {r.message_id for r, o in running.outcomes if o.status == "deleted"} == flagged
    clean = [(r, o) for r, o in running.outcomes if r.text in CLEAN]
    assert clean and all(o.status == "ok" for _, o in clean)
    assert all(r.sender_name and r.message_date.tzinfo is not None for r, _ in clean)


async def test_a_chats_own_threshold_keeps_a_message_from_the_fast_pass(running: Running) -> None:
    worker = running.services.classify_worker
    assert worker is not None
    await running.stream(4)
    await _alive(worker)
    text = "上班之余想搞个副业，大家有什么建议吗"
    model = running.services.classifier
    assert model.classify(text).action == "pass"
    assert model.classify(text, thresholds={"fraud": 0.02}).action != "pass", "the premise of this test"
    running.emu.message(GROUP, ADMIN, "/threshold fraud 0.02")
    await running.emu.wait_for(
        lambda: (
            running.services.chats.peek(GROUP) is None or bool(running.services.chats.peek(GROUP).thresholds)
        ),
        timeout=20,
    )
    await running.stream(4, first_sender=10)  # the chat's new settings cached again
    before = worker.stats.fast_passed
    running.outcomes.clear()
    sent = running.emu.message(GROUP, MEMBER, text)
    await running.emu.wait_for(
        lambda: any(r.message_id == sent["message_id"] for r, _ in running.outcomes), timeout=30
    )
    outcome = next(o for r, o in running.outcomes if r.message_id == sent["message_id"])
    assert outcome.status != "ok", "judged by the handler under the chat's threshold"
    assert worker.stats.fast_passed == before
