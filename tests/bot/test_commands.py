"""Admin and member commands through the real PTB Application, a fake Bot API and a real SQLite file."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

import pytest
from botenv import (
    ADMIN,
    BOT_ID,
    GROUP,
    MEMBERS,
    OWNER,
    REPORT_CHAT,
    SPAMMER,
    BotEnv,
    chat_of,
    make_emulator,
    running_env,
    uploaded,
)
from sqlalchemy import select

import storage
from bot import commands
from storage.models import Strike
from storage.notices import list_pending_deletions

SPAM = "出冰，货真价实，量大从优，需要的加V：bing8888"
SPAM2 = "澳门首家线上赌场，百家乐真人荷官，注册即送88元彩金，日赢万元"
BENIGN = "周末大家一起去爬山吗？早上八点地铁站集合"

# Every admin command with well-formed arguments (what a non-admin tries).
ADMIN_CALLS = [
    "/help", "/status", "/stats 3", "/mode dry_run", "/threshold fraud 0.8", "/retention 30",
    "/strikes 2 1h 10m", "/reportchat", "/language en", "/spam", "/notspam 1", "/trust 4242",
    "/untrust 4242", "/incidents 5", "/review", "/export 7 csv", "/submit", "/reload",
]  # fmt: skip

MALFORMED = [
    "/stats -1", "/stats many", "/mode bogus", "/mode", "/threshold fraud 2", "/threshold nope 0.5",
    "/threshold fraud", "/retention x", "/retention 0", "/strikes 3 1d", "/strikes a b c",
    "/strikes 3 10s 1h", "/language fr", "/export 5 pdf", "/export 1 2 3", "/notspam abc", "/notspam",
    "/incidents 0", "/incidents 51", "/trust abc", "/untrust -5", "/spam", "/reportchat 123",
    "/status now", "/submit all", "/review x",
]  # fmt: skip


async def audit(env: BotEnv, chat_id: int = GROUP) -> list[Any]:
    async with env.services.db.sessionmaker() as session:
        return await storage.list_audit_log(session=session, chat_id=chat_id)


async def incident(env: BotEnv, incident_id: int) -> Any:
    async with env.services.db.sessionmaker() as session:
        return await storage.get_incident(session=session, incident_id=incident_id)


async def incidents(env: BotEnv) -> list[Any]:
    async with env.services.db.sessionmaker() as session:
        return await storage.list_incidents(session=session, chat_id=GROUP)


async def examples(env: BotEnv) -> list[Any]:
    async with env.services.db.sessionmaker() as session:
        return await storage.list_training_examples(session=session)


def last_text(env: BotEnv, chat_id: int = GROUP) -> str:
    texts = env.texts_to(chat_id)
    assert texts, f"nothing was sent to {chat_id}"
    return texts[-1]


async def test_menus_are_sent_for_admins_members_and_private_chats(env: BotEnv) -> None:
    sent = env.calls("setMyCommands")
    scopes = {json.dumps(c.params.get("scope"), sort_keys=True): c for c in sent}
    assert len(scopes) == 3
    names = [{cmd["command"] for cmd in c.params["commands"]} for c in sent]
    assert {"spam", "export", "mode"} <= names[0]
    assert names[1] == {"report"}
    assert {"start", "help"} <= names[2]


@pytest.mark.parametrize("text", ADMIN_CALLS)
async def test_non_admin_is_refused_and_the_attempt_audited(env: BotEnv, text: str) -> None:
    await env.send(text, sender=MEMBERS[0])
    assert env.errors == []
    assert last_text(env) == "只有本群管理员可以使用这个命令。"
    rows = await audit(env)
    assert rows[0].command == "denied" and rows[0].actor_id == MEMBERS[0]
    assert rows[0].args["command"] == text.split()[0][1:]
    # nothing else happened: no settings change, no file, no private message
    assert all(r.command == "denied" for r in rows)
    assert not env.calls("sendDocument") and not env.texts_to(MEMBERS[0])


async def test_refusals_are_rate_limited_but_always_audited(env: BotEnv) -> None:
    for _ in range(3):
        await env.send("/mode off", sender=MEMBERS[1])
    assert len(env.texts_to(GROUP)) == 1
    assert len([r for r in await audit(env) if r.command == "denied"]) == 3
    assert (await env.services.chats.get(GROUP)).mode == "enforce"


@pytest.mark.parametrize("text", MALFORMED)
async def test_malformed_arguments_get_the_usage_line(env: BotEnv, text: str) -> None:
    await env.send(text, sender=ADMIN)
    assert env.errors == []
    reply = last_text(env)
    assert reply.startswith("用法：/") or reply.startswith("用法：回复"), reply
    assert "Traceback" not in reply


async def test_settings_commands_change_storage_audit_and_cache(env: BotEnv) -> None:
    await env.services.chats.get(GROUP)  # cached before the change: must not stay stale
    await env.send("/mode dry_run", sender=ADMIN)
    assert "dry_run" in last_text(env)
    await env.send("/threshold fraud 0.8", sender=ADMIN)
    await env.send("/retention 30", sender=OWNER)
    await env.send("/strikes 2 1h 10m", sender=ADMIN)
    policy = await env.services.chats.get(GROUP)
    assert policy.mode == "dry_run"
    assert policy.thresholds == {"fraud": 0.8}
    assert policy.retention_days == 30
    assert (policy.strike_limit, policy.strike_window_seconds, policy.mute_seconds) == (2, 3600, 600)
    await env.send("/threshold fraud default", sender=ADMIN)
    assert (await env.services.chats.get(GROUP)).thresholds == {}
    changes = [r for r in await audit(env) if r.command == "settings"]
    assert len(changes) == 5
    assert {"mode": {"old": "enforce", "new": "dry_run"}} in [r.args for r in changes]
    assert {r.actor_id for r in changes} == {ADMIN, OWNER}
    assert env.errors == []


async def test_language_en_switches_replies(env: BotEnv) -> None:
    await env.send("/mode off", sender=ADMIN)
    assert last_text(env).startswith("模式已改为")
    await env.send("/language en", sender=ADMIN)
    assert last_text(env) == "Replies are now in English."
    await env.send("/mode enforce", sender=ADMIN)
    assert last_text(env).startswith("Mode is now")
    await env.send("/mode", sender=ADMIN)
    assert last_text(env).startswith("Usage: /mode")
    await env.send("/mode off", sender=MEMBERS[0])
    assert last_text(env) == "Only this group's admins can use this command."
    await env.send("/language zh", sender=ADMIN)
    assert last_text(env) == "回复语言已改为中文。"


async def test_help_status_and_stats(env: BotEnv) -> None:
    await env.send(SPAM, sender=SPAMMER)  # deleted by moderation: one incident today
    await env.send("/help", sender=ADMIN)
    help_text = last_text(env)
    for c in commands.BOT_COMMANDS:
        assert f"/{c.command}" in help_text
    await env.send("/status", sender=ADMIN)
    status = last_text(env)
    assert env.services.classifier.version in status
    assert "删除消息 有" in status and "涉毒：1（已删除 1）" in status
    await env.send("/stats 7", sender=ADMIN)
    assert "最近 7 天" in last_text(env) and "涉毒：1" in last_text(env)
    assert env.errors == []


async def test_help_and_start_in_private(env: BotEnv) -> None:
    await env.send("/start", sender=ADMIN, chat_id=ADMIN)
    assert "清朗" in last_text(env, ADMIN)
    await env.send("/help", sender=ADMIN, chat_id=ADMIN)
    assert "/export" in last_text(env, ADMIN)
    await env.send("/mode off", sender=ADMIN, chat_id=ADMIN)
    assert last_text(env, ADMIN).startswith("请在群里使用")
    await env.send("/start", sender=ADMIN)  # /start in a group is not ours to answer
    assert not env.texts_to(GROUP)
    assert env.errors == []


async def test_trust_and_untrust_by_reply_and_by_id(env: BotEnv) -> None:
    target = await env.send(BENIGN, sender=MEMBERS[2])
    await env.send("/trust", sender=ADMIN, reply_to=target)
    await env.send("/trust 4242", sender=ADMIN)
    assert (await env.services.chats.get(GROUP)).trusted_user_ids == {MEMBERS[2], 4242}
    await env.send(SPAM, sender=MEMBERS[2])  # trusted: not judged
    assert not env.calls("deleteMessage")
    await env.send("/untrust 4242", sender=ADMIN)
    await env.send("/untrust 4242", sender=ADMIN)
    assert "不在信任名单" in last_text(env)
    assert (await env.services.chats.get(GROUP)).trusted_user_ids == {MEMBERS[2]}
    assert env.errors == []


async def test_spam_as_reply_deletes_records_and_learns(env: BotEnv) -> None:
    target = await env.send(BENIGN, sender=SPAMMER)
    assert not await incidents(env)
    await env.send("/spam fraud", sender=ADMIN, reply_to=target)
    deleted = [c.params["message_id"] for c in env.calls("deleteMessage")]
    assert target["message_id"] in deleted
    (inc,) = await incidents(env)
    assert inc.decided_by == f"admin:{ADMIN}" and inc.category == "fraud"
    assert inc.action_taken == "deleted" and inc.report_status == "queued"
    (ex,) = await examples(env)
    assert (ex.text, ex.label, ex.actor_id, ex.incident_id) == (BENIGN, "fraud", ADMIN, inc.id)
    assert f"#{inc.id}" in last_text(env)
    assert "spam" in [r.command for r in await audit(env)]
    assert env.errors == []


async def test_spam_never_acts_on_an_admin(env: BotEnv) -> None:
    target = await env.send(SPAM, sender=OWNER)
    await env.send("/spam", sender=ADMIN, reply_to=target)
    assert not env.calls("deleteMessage")
    assert last_text(env) == "管理员的消息不会被处理。"


async def test_notspam_marks_false_positive_removes_strike_and_learns(env: BotEnv) -> None:
    await env.send(SPAM, sender=SPAMMER)
    (inc,) = await incidents(env)
    assert inc.action_taken == "deleted"
    async with env.services.db.sessionmaker() as session:
        assert (await session.scalars(select(Strike).where(Strike.incident_id == inc.id))).all()
    await env.send(f"/notspam {inc.id} 这是正常的团购", sender=ADMIN)
    assert "误判" in last_text(env)
    after = await incident(env, inc.id)
    assert after.review_result == "false_positive"
    async with env.services.db.sessionmaker() as session:
        assert not (await session.scalars(select(Strike).where(Strike.incident_id == inc.id))).all()
        events = await storage.list_events(session=session, incident_id=inc.id)
    review = [e for e in events if e.kind == "review"][-1]
    assert review.actor == f"admin:{ADMIN}" and "这是正常的团购" in (review.detail or "")
    (ex,) = await examples(env)
    assert (ex.label, ex.incident_id) == ("ok", inc.id)
    await env.send(f"/notspam {inc.id}", sender=ADMIN)
    assert "之前已经" in last_text(env)
    await env.send("/notspam 99999", sender=ADMIN)
    assert "没有编号为 99999" in last_text(env)
    assert env.errors == []


async def test_export_goes_to_the_private_chat_only(env: BotEnv) -> None:
    await env.send(SPAM, sender=SPAMMER)
    await env.send("/export 7 jsonl", sender=ADMIN)
    (doc,) = env.calls("sendDocument")
    assert chat_of(doc) == ADMIN
    file = uploaded(doc)
    assert (file.filename or "").endswith(".jsonl")
    rows = [json.loads(line) for line in file.content.decode().splitlines()]
    assert any(r["record_type"] == "incident" and r["text"] == SPAM for r in rows)
    assert "已私聊发送" in last_text(env)
    assert "export" in [r.command for r in await audit(env)]

    env.emu.blocked.add(OWNER)
    env.emu.clear_calls()
    await env.send("/export", sender=OWNER)
    assert [chat_of(c) for c in env.calls("sendDocument")] == [OWNER]  # tried privately, refused
    assert "/start" in last_text(env)
    assert all(chat_of(c) != GROUP for c in env.calls("sendDocument"))
    assert env.errors == []


async def test_export_and_batch_files_are_owner_only_when_sent(
    env: BotEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The bot writes /export and /submit files into a temporary folder: watch that folder, with the
    # most permissive umask, at the moment each file is handed to Telegram.
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    modes: dict[str, int] = {}

    def look(params: dict[str, Any]) -> None:
        modes.update({p.name: stat.S_IMODE(p.stat().st_mode) for p in scratch.glob("*/*")})

    env.emu.before("sendDocument", look)
    old_umask = os.umask(0)
    try:
        await env.send(SPAM, sender=SPAMMER)
        await env.send("/export xlsx", sender=ADMIN)
        await env.send("/submit", sender=ADMIN)
    finally:
        os.umask(old_umask)
    assert len(env.calls("sendDocument")) == 2
    assert sorted(name.split("-")[1] for name in modes) == ["export", "report"], modes
    assert set(modes.values()) == {0o600}, modes
    assert list(scratch.iterdir()) == []  # both files are gone once sent
    assert env.errors == []


async def test_incidents_and_review_are_answered_privately(env: BotEnv) -> None:
    await env.send(SPAM, sender=SPAMMER)
    await env.send("/incidents 5", sender=ADMIN)
    private = env.texts_to(ADMIN)
    assert "最近 1 条记录" in private[-1] and "涉毒" in private[-1]
    assert SPAM not in "".join(env.texts_to(GROUP))

    await env.send("/review", sender=ADMIN)
    assert "没有待审核" in env.texts_to(ADMIN)[-1]

    env.emu.blocked.add(OWNER)
    await env.send("/incidents", sender=OWNER)
    assert "/start" in last_text(env) and "@qinglang_test_bot" in last_text(env)
    assert env.errors == []


async def test_review_lists_pending_items_with_buttons(env: BotEnv) -> None:
    # three members report a benign-looking message: it becomes a review item
    target = await env.send("这家店的东西还不错，推荐大家去看看", sender=SPAMMER)
    for member in MEMBERS[:3]:
        await env.send("/report", sender=member, reply_to=target)
    env.emu.clear_calls()
    await env.send("/review", sender=ADMIN)
    sent = [c for c in env.calls("sendMessage") if chat_of(c) == ADMIN]
    assert "1 条待审核" in sent[0].params["text"]
    buttons = sent[1].params["reply_markup"]["inline_keyboard"][0]
    assert [b["text"] for b in buttons] == ["删除", "忽略"]
    assert env.errors == []


async def test_submit_sends_the_batch_and_marks_incidents_reported(env: BotEnv) -> None:
    await env.send("/reportchat -1001234567890", sender=OWNER, chat_id=REPORT_CHAT)
    assert (await env.services.chats.get(GROUP)).report_chat_id == REPORT_CHAT
    await env.send(SPAM, sender=SPAMMER)
    await env.send(SPAM2, sender=SPAMMER)
    queued = await incidents(env)
    assert [i.report_status for i in queued] == ["queued", "queued"]
    env.emu.clear_calls()
    await env.send("/submit", sender=ADMIN)
    (doc,) = env.calls("sendDocument")
    assert chat_of(doc) == REPORT_CHAT
    file = uploaded(doc)
    assert (file.filename or "").endswith(".csv") and SPAM.encode() in file.content
    assert "已发送到报告群" in last_text(env)
    assert [i.report_status for i in await incidents(env)] == ["reported", "reported"]
    await env.send("/submit", sender=ADMIN)
    assert last_text(env) == "没有待报告的记录。"
    assert env.errors == []


async def test_submit_keeps_incidents_queued_when_nobody_takes_the_file(env: BotEnv) -> None:
    await env.send(SPAM, sender=SPAMMER)
    env.emu.blocked.add(ADMIN)  # no report chat, and the admin never started the bot
    await env.send("/submit", sender=ADMIN)
    assert "无法发送举报文件" in last_text(env)
    assert [i.report_status for i in await incidents(env)] == ["queued"]
    env.emu.blocked.clear()
    await env.send("/submit", sender=ADMIN)
    assert [chat_of(c) for c in env.calls("sendDocument")][-1] == ADMIN
    assert [i.report_status for i in await incidents(env)] == ["reported"]
    assert env.errors == []


async def test_reportchat_needs_admin_rights_in_the_reported_chat(env: BotEnv) -> None:
    await env.send("/reportchat -1001234567890", sender=OWNER, chat_id=REPORT_CHAT)
    env.emu.set_admin(REPORT_CHAT, MEMBERS[0])
    env.services.admins.invalidate(REPORT_CHAT)  # as after a chat_member update
    await env.send("/reportchat -1001234567890", sender=MEMBERS[0], chat_id=REPORT_CHAT)
    assert "不是群" in last_text(env, REPORT_CHAT)
    await env.send("/reportchat off", sender=ADMIN)
    assert (await env.services.chats.get(GROUP)).report_chat_id is None
    assert env.errors == []


async def test_member_reports_go_to_admins_and_several_make_a_review(env: BotEnv) -> None:
    target = await env.send("这家店的东西还不错，价格美丽", sender=SPAMMER)
    await env.send("/report", sender=MEMBERS[0], reply_to=target)
    assert last_text(env) == "已收到举报，管理员会处理。"
    for admin_id in (OWNER, ADMIN):  # no report chat: each admin in private, reporter named
        notice = env.texts_to(admin_id)[-1]
        assert "成员1 举报了" in notice and "价格美丽" in notice
    await env.send("/report", sender=MEMBERS[0], reply_to=target)
    assert last_text(env) == "你已经举报过这条消息了。"
    assert not await incidents(env)
    await env.send("/report", sender=MEMBERS[1], reply_to=target)
    await env.send("/report", sender=MEMBERS[2], reply_to=target)
    assert last_text(env) == "多人举报了这条消息，已提交管理员审核。"
    (inc,) = await incidents(env)
    assert inc.action_taken == "kept_for_review" and inc.report_status == "queued"
    review = [c for c in env.calls("sendMessage") if chat_of(c) == ADMIN][-1]
    assert "成员1、成员2、成员3" in review.params["text"]
    data = review.params["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    await env.press(data, sender=ADMIN, chat_id=ADMIN)  # the core's review button: delete
    assert target["message_id"] in [c.params["message_id"] for c in env.calls("deleteMessage")]
    assert (await incident(env, inc.id)).review_result == "confirmed"
    assert env.errors == []


def counted(env: BotEnv, name: str, **labels: str) -> float:
    """A sample of the bot's own Prometheus registry (0 when never counted)."""
    value = env.services.metrics.registry.get_sample_value(f"qinglang_{name}_total", labels)
    return value or 0.0


async def test_admin_deletes_are_counted_like_the_models_and_their_notices_removed(env: BotEnv) -> None:
    # /spam on a message the model let through
    target = await env.send(BENIGN, sender=SPAMMER)
    seen = counted(env, "messages_seen", status="ok")
    await env.send("/spam fraud", sender=ADMIN, reply_to=target)
    assert counted(env, "incidents", category="fraud", action="deleted") == 1
    assert counted(env, "messages_seen", status="ok") == seen  # the message was counted when seen
    assert counted(env, "messages_seen", status="deleted") == 0

    # a review item (three members reported it), deleted with the admin's button
    target = await env.send("这家店的东西还不错，价格美丽", sender=MEMBERS[3])
    for member in MEMBERS[:3]:
        await env.send("/report", sender=member, reply_to=target)
    (inc,) = [i for i in await incidents(env) if i.action_taken == "kept_for_review"]
    review = [c for c in env.calls("sendMessage") if chat_of(c) == ADMIN][-1]
    data = review.params["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    await env.press(data, sender=ADMIN, chat_id=ADMIN)
    assert env.emu.is_deleted(GROUP, target["message_id"])
    assert counted(env, "incidents", category=inc.category, action="deleted") == 1 + (inc.category == "fraud")
    assert counted(env, "messages_seen", status="deleted") == 0

    # both deletes posted a notice; each removes itself like the model's
    async with env.services.db.sessionmaker() as session:
        pending = await list_pending_deletions(session=session)
    notices = [m["message_id"] for m in env.emu.sent(GROUP) if m.get("text", "").startswith("已删除 ")]
    assert len(notices) == 2, env.texts_to(GROUP)
    assert sorted(p.message_id for p in pending) == sorted(notices)
    for notice in notices:
        assert env.app.job_queue.get_jobs_by_name(f"notice:{GROUP}:{notice}")
    assert env.errors == []


async def test_member_reports_are_rate_limited(env: BotEnv) -> None:
    targets = [await env.send(f"消息{i}", sender=SPAMMER) for i in range(4)]
    for target in targets:
        await env.send("/report", sender=MEMBERS[3], reply_to=target)
    thanks = [t for t in env.texts_to(GROUP) if t == "已收到举报，管理员会处理。"]
    assert len(thanks) == 3  # the fourth within ten minutes is ignored
    await env.send("/report", sender=MEMBERS[3])
    assert last_text(env) == "请回复要举报的消息，再发送 /report。"
    bot_msg = env.emu.sent(GROUP)[-1]  # one of the bot's own replies
    assert bot_msg["from"]["id"] == BOT_ID
    await env.send("/report", sender=MEMBERS[0], reply_to=bot_msg)
    assert last_text(env) == "这条消息不能举报。"
    assert env.errors == []


async def test_a_restarted_bot_recalls_member_reports(tmp_path: Path) -> None:
    emu = make_emulator()
    async with running_env(tmp_path, emu=emu) as before:
        target = await before.send("这家店的东西还不错，价格美丽", sender=SPAMMER)
        others = [await before.send(f"消息{i}", sender=SPAMMER) for i in range(2)]
        for member in MEMBERS[:2]:
            await before.send("/report", sender=member, reply_to=target)
        for other in others:  # MEMBERS[0] has now used the three reports of the window
            await before.send("/report", sender=MEMBERS[0], reply_to=other)
        assert not await incidents(before)
    async with running_env(tmp_path, emu=emu) as after:
        await after.send("/report", sender=MEMBERS[1], reply_to=target)
        assert last_text(after) == "你已经举报过这条消息了。"
        fourth = await after.send("消息3", sender=SPAMMER)
        answers = len(after.texts_to(GROUP))
        await after.send("/report", sender=MEMBERS[0], reply_to=fourth)
        assert len(after.texts_to(GROUP)) == answers  # over the limit: ignored, as before the restart
        await after.send("/report", sender=MEMBERS[2], reply_to=target)  # the third distinct member
        assert last_text(after) == "多人举报了这条消息，已提交管理员审核。"
        (inc,) = await incidents(after)
        assert inc.action_taken == "kept_for_review"
        review = [c for c in after.calls("sendMessage") if chat_of(c) == ADMIN][-1]
        assert "成员1、成员2、成员3" in review.params["text"]  # names kept in the audit log
        assert after.errors == []


async def test_reload_swaps_the_model(env: BotEnv) -> None:
    before = env.services.classifier
    await env.send("/reload", sender=ADMIN)
    assert env.services.classifier is not before
    assert last_text(env) == f"模型已重新加载：{before.version}"
    assert "reload" in [r.command for r in await audit(env)]
    await env.send(SPAM, sender=SPAMMER)  # the new model judges the next message
    assert env.calls("deleteMessage")
    assert env.errors == []
