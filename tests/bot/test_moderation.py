"""The moderation core through the real PTB Application: every action path, skips, edits, captions,
hidden links, review buttons and failed deletes, on a real SQLite file with the shipped model.

The Bot API is the package's own emulator, in-process (tests/botenv.py), with its scripted faults;
the wire protocol over 127.0.0.1 is covered by tests/bot/test_app.py.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from botenv import ADMIN, GROUP, MEMBERS, NAMES, OWNER, REPORT_CHAT, SPAMMER, BotEnv, chat_of, running_env
from telegram import Update

import storage
from bot.moderation import Outcome
from bot.notices import job_remove_notice

MEMBER = MEMBERS[0]
SPAM = "出冰，货真价实，量大从优，需要的加V：bing8888"
FRAUD = "急招刷单员，手机操作，日结300-500，加QQ 2837465910"
CLEAN = "大家早上好！今天天气不错，周末有人一起去爬山吗？"


@dataclass
class Env:
    """The running bot (tests/botenv.py) and the outcomes its observer saw, one per group message."""

    bot: BotEnv
    outcomes: list[Outcome]

    @property
    def app(self) -> Any:
        return self.bot.app

    @property
    def emu(self) -> Any:
        return self.bot.emu

    @property
    def services(self) -> Any:
        return self.bot.services

    async def feed(self, kind: str, message: dict[str, Any]) -> Outcome | None:
        """Hand one message update to the bot; the outcome it produced, if any."""
        before = len(self.outcomes)
        await self.bot.process({kind: message})
        return self.outcomes[-1] if len(self.outcomes) > before else None

    def message(
        self, text: str | None, *, sender: int = SPAMMER, chat_id: int = GROUP, **extra: Any
    ) -> dict[str, Any]:
        """A message the emulator knows (so it can be deleted); `extra` as for Emulator.message."""
        return self.emu.message(chat_id, sender, text, push=False, **extra)

    async def say(
        self, text: str | None, *, sender: int = SPAMMER, chat_id: int = GROUP, **extra: Any
    ) -> Outcome | None:
        return await self.feed("message", self.message(text, sender=sender, chat_id=chat_id, **extra))

    async def settings(self, **changes: Any) -> None:
        async with self.services.db.sessionmaker.begin() as session:
            await storage.update_chat_settings(session=session, chat_id=GROUP, actor_id=OWNER, **changes)
        self.services.chats.invalidate(GROUP)

    async def incident(self, incident_id: int) -> Any:
        async with self.services.db.sessionmaker() as session:
            return await storage.get_incident(session=session, incident_id=incident_id)

    async def events(self, incident_id: int) -> list[tuple[str, str, str]]:
        async with self.services.db.sessionmaker() as session:
            rows = await storage.list_events(session=session, incident_id=incident_id)
        return [(e.kind, e.value, e.actor) for e in rows]

    async def event_detail(self, incident_id: int, value: str) -> dict[str, Any]:
        async with self.services.db.sessionmaker() as session:
            rows = await storage.list_events(session=session, incident_id=incident_id)
        return json.loads(next(e.detail for e in rows if e.value == value) or "{}")

    async def press(self, data: str, *, presser: int, chat_id: int) -> None:
        """`presser` presses a button carrying `data` on the bot's last message to `chat_id`."""
        await self.bot.press(data, sender=presser, chat_id=chat_id)

    def methods(self) -> list[str]:
        return [c.method for c in self.emu.calls()]

    def of(self, method: str) -> list[Any]:
        return self.bot.calls(method)

    def texts_to(self, chat_id: int) -> list[str]:
        return self.bot.texts_to(chat_id)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    outcomes: list[Outcome] = []
    async with running_env(
        tmp_path, telegram_retries=1, observers=[lambda record, outcome: outcomes.append(outcome)]
    ) as running:
        yield Env(bot=running, outcomes=outcomes)
        assert not running.errors, running.errors


# --- enforce: delete, notice, strikes ---------------------------------------------------------


async def test_solicitation_is_recorded_then_deleted_with_a_notice(env: Env) -> None:
    incidents_at_delete: list[int] = []

    def count_incidents(params: dict[str, Any]) -> None:
        # Evidence first: the incident must already be committed when the delete is asked for.
        with sqlite3.connect(env.bot.db_url.removeprefix("sqlite+aiosqlite:///")) as conn:
            found = conn.execute(
                "select count(*) from incidents where chat_id=? and message_id=?",
                (int(params["chat_id"]), int(params["message_id"])),
            ).fetchone()[0]
        incidents_at_delete.append(found)

    env.emu.before("deleteMessage", count_incidents)
    out = await env.say(SPAM)
    assert out is not None and out.status == "deleted" and out.category == "drug"
    assert incidents_at_delete == [1], "the incident was committed before deleteMessage"
    notices = env.texts_to(GROUP)
    assert len(notices) == 1
    assert NAMES[SPAMMER] in notices[0]
    assert "涉毒" in notices[0] and "bing8888" not in notices[0], "names the category, never the content"
    inc = await env.incident(out.incident_id)  # type: ignore[arg-type]
    assert (inc.action_taken, inc.report_status, inc.text) == ("deleted", "queued", SPAM)
    assert inc.reasons["contacts"] and inc.contacts[0]["value"] == "bing8888"
    assert await env.events(inc.id) == [
        ("action", "deleted", "model"),
        ("report", "queued", "model"),
    ]
    detail = await env.event_detail(inc.id, "deleted")
    assert detail["notice_message_id"] == out.notice_message_id


async def test_notice_removes_itself_after_the_ttl(env: Env) -> None:
    out = await env.say(SPAM)
    assert out is not None and out.notice_message_id is not None
    jobs = env.app.job_queue.get_jobs_by_name(f"notice:{GROUP}:{out.notice_message_id}")
    assert len(jobs) == 1
    delay = jobs[0].job.trigger.run_date - dt.datetime.now(dt.UTC)
    assert delay.total_seconds() == pytest.approx(60, abs=2)
    env.emu.clear_calls()
    context = env.app.context_types.context.from_job(jobs[0], env.app)
    await job_remove_notice(context)
    deletes = env.of("deleteMessage")
    assert [int(c.params["message_id"]) for c in deletes] == [out.notice_message_id]


async def test_clean_message_passes_and_records_nothing(env: Env) -> None:
    out = await env.say(CLEAN, sender=MEMBER)
    assert out is not None and out.status == "ok" and out.incident_id is None
    assert "deleteMessage" not in env.methods()


async def test_third_strike_mutes(env: Env) -> None:
    outs = [await env.say(t) for t in (SPAM, FRAUD, SPAM + "！")]
    assert [o.status for o in outs if o] == ["deleted"] * 3
    assert [o.escalation for o in outs if o] == [None, None, "muted"]
    (mute,) = env.of("restrictChatMember")
    assert int(mute.params["user_id"]) == SPAMMER
    permissions = mute.params["permissions"]
    permissions = json.loads(permissions) if isinstance(permissions, str) else permissions
    assert permissions["can_send_messages"] is False
    until = int(mute.params["until_date"])
    assert until - dt.datetime.now(dt.UTC).timestamp() == pytest.approx(3600, abs=10)
    last = outs[-1]
    assert last is not None
    assert (await env.incident(last.incident_id)).action_taken == "muted"  # type: ignore[arg-type]
    assert any("禁言" in t for t in env.texts_to(GROUP))


async def test_ban_on_limit(env: Env) -> None:
    await env.settings(strike_limit=2, ban_on_limit=True)
    outs = [await env.say(t) for t in (SPAM, FRAUD)]
    assert [o.escalation for o in outs if o] == [None, "banned"]
    (ban,) = env.of("banChatMember")
    assert int(ban.params["user_id"]) == SPAMMER
    assert not env.of("restrictChatMember")


# --- modes ------------------------------------------------------------------------------------


async def test_dry_run_records_what_it_would_do_and_touches_nothing(env: Env) -> None:
    await env.settings(mode="dry_run")
    out = await env.say(SPAM)
    assert out is not None and (out.status, out.reason) == ("dry_run", "would delete")
    assert not {"deleteMessage", "sendMessage", "restrictChatMember"} & set(env.methods())
    inc = await env.incident(out.incident_id)  # type: ignore[arg-type]
    assert (inc.action_taken, inc.report_status) == ("none", "queued")
    assert await env.event_detail(inc.id, "none") == {"dry_run": True, "would": "deleted"}


async def test_off_ignores_the_chat(env: Env) -> None:
    await env.settings(mode="off")
    out = await env.say(SPAM)
    assert out is not None and out.status == "off"
    assert "deleteMessage" not in env.methods()
    async with env.services.db.sessionmaker() as session:
        assert await storage.list_incidents(session=session, chat_id=GROUP) == []


async def test_new_chat_starts_in_the_configured_default_mode(env: Env) -> None:
    policy = await env.services.chats.get(-100777)
    assert policy.mode == "enforce"


# --- what is judged ---------------------------------------------------------------------------


async def test_edit_turning_clean_into_solicitation_is_deleted(env: Env) -> None:
    original = env.message("明天下午三点开会，地点在二楼会议室。", sender=MEMBER)
    first = await env.feed("message", original)
    assert first is not None and first.status == "ok"
    edited = env.emu.edit(GROUP, original["message_id"], SPAM)
    out = await env.feed("edited_message", edited)
    assert out is not None and out.status == "deleted"
    inc = await env.incident(out.incident_id)  # type: ignore[arg-type]
    assert inc.is_edit and inc.edit_date is not None and inc.message_id == original["message_id"]


@pytest.mark.parametrize("media", ["photo", "video", "document"])
async def test_captions_are_judged(env: Env, media: str) -> None:
    message = env.message(None, caption=FRAUD, **{media: True})
    # A photo comes in several sizes, smallest first: it is known by its largest.
    largest = message["photo"][-1] if media == "photo" else message[media]
    if media == "photo":
        assert message["photo"][0]["file_unique_id"] != largest["file_unique_id"]
    out = await env.feed("message", message)
    assert out is not None and out.status == "deleted" and out.category == "fraud"
    inc = await env.incident(out.incident_id)  # type: ignore[arg-type]
    assert inc.media_kind == media and inc.text == FRAUD
    assert inc.media_file_unique_id == largest["file_unique_id"]


async def test_text_link_url_is_judged(env: Env) -> None:
    text = "点这里了解详情"
    url = "https://t.me/bing8888?出冰货真价实量大从优加V"
    alone = await env.say(text)
    assert alone is not None and alone.status == "ok"
    out = await env.say(text, entities=[{"type": "text_link", "offset": 0, "length": 3, "url": url}])
    assert out is not None and out.status == "deleted"
    inc = await env.incident(out.incident_id)  # type: ignore[arg-type]
    assert inc.hidden_links == [url] and inc.text == text


async def test_url_button_via_bot_is_judged(env: Env) -> None:
    markup = {"inline_keyboard": [[{"text": "澳门赌场注册送88元彩金", "url": "http://bc.example/reg"}]]}
    via = {"id": 999, "is_bot": True, "first_name": "inline", "username": "promo_bot"}
    out = await env.say("今日推荐", reply_markup=markup, via_bot=via)
    assert out is not None and out.status == "deleted" and out.category == "gambling"
    inc = await env.incident(out.incident_id)  # type: ignore[arg-type]
    assert inc.hidden_links == ["澳门赌场注册送88元彩金 http://bc.example/reg"]
    assert inc.forward_origin == {"via_bot": "promo_bot"}


async def test_forward_from_channel_is_judged_and_origin_kept(env: Env) -> None:
    channel = {"id": -100555, "type": "channel", "title": "福利频道", "username": "fuli"}
    origin = {"type": "channel", "chat": channel, "message_id": 7, "date": 1_700_000_000}
    out = await env.say(FRAUD, sender=MEMBER, forward_origin=origin)
    assert out is not None and out.status == "deleted"
    inc = await env.incident(out.incident_id)  # type: ignore[arg-type]
    assert inc.forward_origin["type"] == "channel" and inc.forward_origin["name"] == "福利频道"


# --- skips ------------------------------------------------------------------------------------


async def test_admin_is_skipped(env: Env) -> None:
    out = await env.say(SPAM, sender=OWNER)
    assert out is not None and (out.status, out.reason) == ("skipped", "admin")
    assert "deleteMessage" not in env.methods()


async def test_trusted_user_is_skipped(env: Env) -> None:
    await env.settings(trusted_user_ids=[MEMBER])
    out = await env.say(SPAM, sender=MEMBER)
    assert out is not None and (out.status, out.reason) == ("skipped", "trusted")


async def test_anonymous_admin_is_skipped(env: Env) -> None:
    out = await env.say(SPAM, sender_chat=GROUP)  # from GroupAnonymousBot, on behalf of the group
    assert out is not None and (out.status, out.reason) == ("skipped", "anonymous_admin")


async def test_the_bot_itself_is_skipped(env: Env) -> None:
    out = await env.say(SPAM, **{"from": env.emu.bot_user})
    assert out is not None and (out.status, out.reason) == ("skipped", "self")


async def test_service_message_is_not_judged(env: Env) -> None:
    newcomer = env.emu.user(SPAMMER) | {"first_name": "出冰加V bing8888"}
    joined = env.message(None, new_chat_members=[newcomer])
    assert await env.feed("message", joined) is None
    assert "deleteMessage" not in env.methods()


async def test_private_chat_is_not_moderated(env: Env) -> None:
    assert await env.say(SPAM, chat_id=SPAMMER) is None


# --- failures ---------------------------------------------------------------------------------


async def test_delete_not_found_is_recorded(env: Env) -> None:
    env.emu.fail("deleteMessage", 400, "Bad Request: message to delete not found")
    out = await env.say(SPAM)
    assert out is not None and out.status == "delete_failed"
    inc = await env.incident(out.incident_id)  # type: ignore[arg-type]
    assert inc.action_taken == "delete_failed" and inc.report_status == "queued"
    detail = await env.event_detail(inc.id, "delete_failed")
    assert detail["kind"] == "gone" and "not found" in detail["error"]
    assert not any("权限" in t for t in env.texts_to(GROUP)), "a vanished message is not a rights problem"
    # the bot carries on
    assert (await env.say(FRAUD)).status == "deleted"  # type: ignore[union-attr]


async def test_forbidden_delete_is_recorded_and_admins_told_once(env: Env) -> None:
    env.emu.fail("deleteMessage", 403, "Forbidden: bot is not a member of the supergroup chat", times=2)
    first = await env.say(SPAM)
    second = await env.say(FRAUD)
    assert first is not None and second is not None
    assert (first.status, second.status) == ("delete_failed", "delete_failed")
    detail = await env.event_detail(first.incident_id, "delete_failed")  # type: ignore[arg-type]
    assert detail["kind"] == "forbidden"
    warnings = [t for t in env.texts_to(GROUP) if "删除消息" in t]
    assert len(warnings) == 1, warnings


async def test_no_rights_to_delete_is_recorded(env: Env) -> None:
    env.emu.fail("deleteMessage", 400, "Bad Request: message can't be deleted")
    out = await env.say(SPAM)
    assert out is not None and out.status == "delete_failed"
    assert any("删除消息" in t for t in env.texts_to(GROUP))


async def test_flood_control_is_waited_out(env: Env) -> None:
    env.emu.fail("deleteMessage", 429, retry_after=1)  # the least Telegram sends
    out = await env.say(SPAM)
    assert out is not None and out.status == "deleted"
    assert len(env.of("deleteMessage")) == 2


# --- review -----------------------------------------------------------------------------------


async def _review(env: Env, *, report_chat: bool = True) -> Outcome:
    thresholds = {c: 0.9999 for c in ("drug", "fraud", "obscene", "gambling")}
    await env.settings(thresholds=thresholds, report_chat_id=REPORT_CHAT if report_chat else None)
    out = await env.say(SPAM)
    assert out is not None and out.status == "review", out
    return out


async def test_review_keeps_the_message_and_asks_the_report_chat(env: Env) -> None:
    out = await _review(env)
    assert "deleteMessage" not in env.methods()
    (sent,) = env.bot.calls("sendMessage", chat_id=REPORT_CHAT)
    text = str(sent.params["text"])
    assert SPAM in text and "涉毒" in text and "bing8888" in text and "出冰" in text
    markup = sent.params["reply_markup"]
    markup = json.loads(markup) if isinstance(markup, str) else markup
    buttons = [b["text"] for b in markup["inline_keyboard"][0]]
    assert buttons == ["删除", "忽略"]
    inc = await env.incident(out.incident_id)  # type: ignore[arg-type]
    assert (inc.action_taken, inc.report_status) == ("kept_for_review", "queued")


async def test_review_without_report_chat_goes_to_admins_in_private(env: Env) -> None:
    await _review(env, report_chat=False)
    assert sorted(chat_of(c) for c in env.of("sendMessage")) == sorted([OWNER, ADMIN])


async def test_review_delete_button(env: Env) -> None:
    out = await _review(env)
    data = f"rv:{GROUP}:{out.incident_id}:d"
    await env.press(data, presser=MEMBER, chat_id=REPORT_CHAT)  # not an admin: refused
    assert "deleteMessage" not in env.methods()
    await env.press(data, presser=OWNER, chat_id=REPORT_CHAT)
    (delete,) = env.of("deleteMessage")
    assert int(delete.params["message_id"]) > 0
    inc = await env.incident(out.incident_id)  # type: ignore[arg-type]
    assert (inc.action_taken, inc.review_result) == ("deleted", "confirmed")
    assert ("review", "confirmed", f"admin:{OWNER}") in await env.events(inc.id)
    async with env.services.db.sessionmaker() as session:
        examples = await storage.list_training_examples(session=session)
    assert [(e.label, e.text) for e in examples] == [("drug", SPAM)]
    edits = env.of("editMessageText")
    assert edits and "删除" in str(edits[-1].params["text"])
    await env.press(data, presser=OWNER, chat_id=REPORT_CHAT)  # a second press changes nothing
    assert len(env.of("deleteMessage")) == 1


async def test_review_keep_button(env: Env) -> None:
    out = await _review(env)
    await env.press(f"rv:{GROUP}:{out.incident_id}:k", presser=OWNER, chat_id=REPORT_CHAT)
    assert "deleteMessage" not in env.methods()
    inc = await env.incident(out.incident_id)  # type: ignore[arg-type]
    assert (inc.action_taken, inc.review_result) == ("kept_for_review", "false_positive")
    async with env.services.db.sessionmaker() as session:
        examples = await storage.list_training_examples(session=session)
    assert [e.label for e in examples] == ["ok"]


@pytest.mark.parametrize(
    "data",
    ["rv:{group}:999999:d", "rv:-100424242:{incident}:d", "rv:{group}:{incident}:x", "garbage", "rv:::"],
)
async def test_forged_review_buttons_do_nothing(env: Env, data: str) -> None:
    out = await _review(env)
    await env.press(data.format(group=GROUP, incident=out.incident_id), presser=OWNER, chat_id=REPORT_CHAT)
    assert "deleteMessage" not in env.methods()
    inc = await env.incident(out.incident_id)  # type: ignore[arg-type]
    assert inc.review_result is None


async def test_evidence_chain_verifies_after_a_mixed_run(env: Env) -> None:
    for text in (CLEAN, SPAM, FRAUD, CLEAN, SPAM + "。"):
        await env.say(text)
    result = await storage.verify_database(env.services.db.engine)
    assert result.ok and result.records > 0, result.problems


def test_group_message_filter_is_ptbs_composed_filter() -> None:
    """The one-check filter selects exactly what `ChatType.GROUPS & (UpdateType.MESSAGE |
    UpdateType.EDITED_MESSAGE) & ~StatusUpdate.ALL` does."""
    from telegram.ext import filters

    from bot.app import GROUP_MESSAGES
    from bot.emulator import Emulator

    composed = (
        filters.ChatType.GROUPS
        & (filters.UpdateType.MESSAGE | filters.UpdateType.EDITED_MESSAGE)
        & ~filters.StatusUpdate.ALL
    )
    emu = Emulator()
    emu.add_user(OWNER, "群主")
    emu.add_user(5001, "小王")
    emu.add_chat(GROUP, "过滤群", owner=OWNER)
    emu.add_chat(-5002, "普通群", owner=OWNER, type="group")
    sent = emu.message(GROUP, 5001, "你好")
    emu.edit(GROUP, sent["message_id"], "改了")
    emu.message(-5002, 5001, "普通群的消息")
    emu.message(GROUP, 5001, caption="出冰", photo=True)
    emu.message(GROUP, 5001, photo=True)  # no text: the status check runs, and it is not a service message
    emu.message(GROUP, OWNER, new_chat_members=[5001])
    emu.message(GROUP, 5001, left_chat_member=emu.user(5001))
    emu.message(GROUP, OWNER, new_chat_title="新名字")
    emu.message(GROUP, OWNER, pinned_message=sent)
    emu.message(5001, 5001, "私聊")
    updates = [Update.de_json(raw, None) for raw in emu.pending_updates]
    chosen = [GROUP_MESSAGES.check_update(u) for u in updates]
    assert chosen == [bool(composed.check_update(u)) for u in updates]
    assert chosen.count(True) == 5 and chosen.count(False) == 5
