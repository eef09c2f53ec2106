"""The model's deletions in batches (bot/deletions.py): evidence for the whole batch first, one
deleteMessages per chat, each message's own outcome (also when Telegram refuses the batch), one notice
naming the senders, and the journal mark of an update only once its outcome is recorded."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from botenv import GROUP, MEMBERS, SPAMMER, BotEnv
from telegram import Update

from bot.emulator import ApiError
from bot.journal import UpdateJournal

SPAM = "出冰，货真价实，量大从优，需要的加V：bing8888"
CLEAN = "明天下午三点开会，地点在二楼会议室。"


async def _burst(env: BotEnv, senders: list[int], first_update: int = 500) -> list[int]:
    """Deliver one flagged message per sender back to back (one batch), then wait for the batch."""
    # A clean message first: the chat's settings and admins are cached, so the burst never waits.
    await env.send(CLEAN, sender=MEMBERS[0])
    ids = []
    for n, sender in enumerate(senders):
        msg = env.emu.message(GROUP, sender, f"{SPAM}{'!' * n}", push=False)
        ids.append(msg["message_id"])
        update = Update.de_json({"update_id": first_update + n, "message": msg}, env.app.bot)
        await env.app.process_update(update)
    await env.settle()
    return ids


def _actions(env: BotEnv) -> dict[int, tuple[str, str]]:
    database = env.db_url.split("///", 1)[1]
    with sqlite3.connect(database) as conn:
        rows = conn.execute(
            "select i.message_id, e.value, e.detail from incident_events e"
            " join incidents i on i.id = e.incident_id where e.kind = 'action'"
            " and e.value in ('deleted', 'delete_failed')"
        ).fetchall()
    return {m: (v, d or "") for m, v, d in rows}


async def test_a_burst_is_recorded_first_then_deleted_in_one_call_with_one_notice(env: BotEnv) -> None:
    env.emu.add_user(SPAMMER + 1, "另一个推广号")
    recorded_at_delete: list[int] = []

    def evidence_first(params: dict[str, Any]) -> None:
        recorded_at_delete.append(len(_actions_incidents(env)))

    env.emu.before("deleteMessages", evidence_first)
    ids = await _burst(env, [SPAMMER, SPAMMER + 1, SPAMMER])
    assert env.errors == []
    (call,) = env.calls("deleteMessages")
    assert sorted(call.params["message_ids"]) == sorted(ids)
    assert env.calls("deleteMessage") == []
    assert recorded_at_delete == [3], "every incident of the batch committed before the delete"
    assert all(env.emu.is_deleted(GROUP, m) for m in ids)
    actions = _actions(env)
    assert {m: v for m, (v, _) in actions.items()} == dict.fromkeys(ids, "deleted")
    # One notice for the chat, naming both senders once each, never the text.
    (notice,) = [t for t in env.texts_to(GROUP) if "已删除" in t]
    assert "推广达人" in notice and "另一个推广号" in notice and "3 条" in notice
    assert notice.count("推广达人") == 1 and "bing8888" not in notice
    assert all('"notice_message_id"' in d for _, d in actions.values())


def _actions_incidents(env: BotEnv) -> list[int]:
    database = env.db_url.split("///", 1)[1]
    with sqlite3.connect(database) as conn:
        return [m for (m,) in conn.execute("select message_id from incidents")]


async def test_a_refused_batch_is_retried_one_by_one_and_each_outcome_recorded(env: BotEnv) -> None:
    env.emu.fail("deleteMessages", 400, "Bad Request: message to delete not found")
    gone: set[int] = set()

    def second_is_gone(params: dict[str, Any]) -> None:
        if int(params["message_id"]) in gone:
            raise ApiError(400, "Bad Request: message to delete not found")

    env.emu.before("deleteMessage", second_is_gone)
    # the message ids the emulator will give the burst: the clean one, then three
    first = env.emu.message(GROUP, MEMBERS[1], CLEAN, push=False)["message_id"]
    gone.add(first + 3)
    ids = await _burst(env, [SPAMMER, SPAMMER, SPAMMER])
    assert ids[1] == first + 3
    assert env.errors == []
    assert len(env.calls("deleteMessages")) == 1
    assert len(env.calls("deleteMessage")) == 3, "then each message on its own"
    actions = _actions(env)
    assert actions[ids[0]][0] == "deleted" and actions[ids[2]][0] == "deleted"
    value, detail = actions[ids[1]]
    assert value == "delete_failed" and "Message to delete not found" in detail
    assert env.emu.is_deleted(GROUP, ids[0]) and env.emu.is_deleted(GROUP, ids[2])


async def test_without_the_right_to_delete_every_message_of_the_batch_fails_with_the_error(
    env: BotEnv,
) -> None:
    env.emu.set_bot_rights(GROUP, {"can_delete_messages": False})
    ids = await _burst(env, [SPAMMER, SPAMMER + 2, SPAMMER])
    assert len(env.calls("deleteMessages")) == 1 and env.calls("deleteMessage") == []
    actions = _actions(env)
    assert {m: v for m, (v, _) in actions.items()} == dict.fromkeys(ids, "delete_failed")
    assert all("can't be deleted" in d for _, d in actions.values())


async def test_an_update_is_marked_done_only_once_its_deletion_is_recorded(env: BotEnv) -> None:
    journal = env.services.journal
    assert isinstance(journal, UpdateJournal)
    await env.send(CLEAN, sender=MEMBERS[0])
    msg = env.emu.message(GROUP, SPAMMER, SPAM, push=False)
    journal.add([{"update_id": 900, "message": msg}])
    update = Update.de_json({"update_id": 900, "message": msg}, env.app.bot)
    await env.app.process_update(update)
    deletions = env.services.deletions
    assert deletions.holds(900), "queued: not done yet"
    assert [u["update_id"] for u in journal.unfinished()] == [900]
    await env.settle()
    assert not deletions.holds(900)
    assert journal.unfinished() == []
    assert _actions(env)[msg["message_id"]][0] == "deleted"


async def test_the_gate_marks_an_update_done_once_its_handlers_ran(env: BotEnv) -> None:
    """Polled updates pass ServicesGate: a clean one is marked done after its handlers, a flagged one
    only once its deletion is recorded (no handler group is needed for either)."""
    journal = env.services.journal
    assert isinstance(journal, UpdateJournal)
    await env.send(CLEAN, sender=MEMBERS[0])
    clean = env.emu.message(GROUP, MEMBERS[1], CLEAN, push=False)
    spam = env.emu.message(GROUP, SPAMMER, SPAM, push=False)
    journal.add([{"update_id": 910, "message": clean}, {"update_id": 911, "message": spam}])
    for update_id, msg in ((910, clean), (911, spam)):
        update = Update.de_json({"update_id": update_id, "message": msg}, env.app.bot)
        await env.app.update_processor.process_update(update, env.app.process_update(update))
    assert [u["update_id"] for u in journal.unfinished()] == [911], "910 done; 911 waits for its delete"
    await env.settle()
    assert journal.unfinished() == []
    assert _actions(env)[spam["message_id"]][0] == "deleted"


def test_notice_names_a_few_senders_and_counts_the_rest(tmp_path: Path) -> None:
    from bot.deletions import notice_text
    from bot.moderation import MessageRecord

    def record(uid: int, name: str) -> MessageRecord:
        return MessageRecord(
            chat_id=GROUP, chat_title=None, message_id=uid, thread_id=None, sender_id=uid,
            sender_username=None, sender_name=name, sender_chat_id=None, is_automatic_forward=False,
            message_date=None, is_edit=False, edit_date=None, text="", hidden_links=(), media_kind=None,
            media_file_unique_id=None, forward_origin=None, is_service=False,
        )  # type: ignore[arg-type]  # fmt: skip

    many = [(record(i, f"用户{i}"), "drug") for i in range(5)] + [(record(0, "用户0"), "fraud")]
    text = notice_text(many, "zh")
    assert text == "已删除 用户0、用户1、用户2 等 5 人 的 6 条消息：疑似涉毒、诈骗内容。"
    assert notice_text(many[:1], "zh") == "已删除 用户0 的一条消息：疑似涉毒内容。"
    assert "and 2 others" in notice_text(many, "en")


async def test_updates_wait_at_the_gate_until_the_services_are_up() -> None:
    # `qinglang run` polls while the model loads (defer_services): nothing is processed before it is up.
    import asyncio

    from bot.app import ServicesGate

    gate = ServicesGate()
    done: list[int] = []

    async def handle() -> None:
        done.append(1)

    waiting = asyncio.create_task(gate.process_update(object(), handle()))
    await asyncio.sleep(0.05)
    assert done == [], "held while the services start"
    gate.open()
    await waiting
    assert done == [1]
