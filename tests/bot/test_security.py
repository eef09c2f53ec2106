"""Security (issue 5): admin commands, files, review buttons, the token, the database file.

Already covered elsewhere, and not repeated here:
- a member sending each admin command (well-formed arguments) is refused and audited, refusals are
  rate-limited but always audited: tests/bot/test_commands.py
  (test_non_admin_is_refused_and_the_attempt_audited, test_refusals_are_rate_limited_but_always_audited);
  /reportchat from another chat needs admin rights in the reported chat
  (test_reportchat_needs_admin_rights_in_the_reported_chat);
- /export goes to the admin's private chat only, also when the admin is unreachable
  (test_commands.py::test_export_goes_to_the_private_chat_only); /submit goes to the report chat or
  the admin (test_submit_*);
- the token is redacted from log records and formatters
  (test_units.py::test_token_is_redacted_from_log_records,
  test_metrics.py::test_formatters_redact_extra_fields), INFO logs carry no token or message text
  (test_metrics.py::test_info_logs_never_carry_message_text_or_the_token), `qinglang demo` logs no
  token at DEBUG over real httpx (test_demo.py), metrics/health carry no token (test_metrics.py);
- the SQLite file is 0600 after a SIGKILL run (test_crash.py), the update journal and the spool are
  0600 (test_faults.py);
- webhook requests without the right secret token are rejected (test_webhook.py).

Added here: the refusal for *every* entry of commands.BOT_COMMANDS (so a new admin command cannot
skip the list above) by every kind of non-admin (member, stranger, a channel's sender_chat, the admin
of another group, an edit into a command, a private chat), with the whole state compared before and
after; a run of every file-producing command scanned for sendDocument into a group; review buttons
pressed by another chat's admin or a demoted admin; the token (realistic shape) over a DEBUG run
with 429/403/5xx/401 answers, in logs, error-handler exceptions and network errors; the database and
its sidecars 0600 under a permissive umask.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import traceback
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from botenv import (
    ADMIN,
    GROUP,
    MEMBERS,
    OWNER,
    REPORT_CHAT,
    SPAMMER,
    BotEnv,
    chat_of,
    shared_model,
)
from sqlalchemy import func, select
from telegram import Update

import storage
from bot import commands
from bot.emulator import Emulator, builders
from storage.models import Strike

SPAM = "出冰，货真价实，量大从优，需要的加V：bing8888"
BENIGN = "周末大家一起去爬山吗？早上八点地铁站集合"
REFUSED = "只有本群管理员可以使用这个命令。"

# One well-formed call of every admin command; `None`: sent as a reply to the spammer's message.
ARGS: dict[str, tuple[str, bool]] = {
    "help": ("", False), "status": ("", False), "stats": ("3", False), "mode": ("off", False),
    "threshold": ("drugs 0.1", False), "retention": ("1", False), "strikes": ("1 1d 1d", False),
    "reportchat": ("", False), "language": ("en", False), "spam": ("drugs", True), "notspam": ("1", False),
    "trust": ("", True), "untrust": (str(SPAMMER), False), "incidents": ("50", False), "review": ("", False),
    "export": ("7 csv", False), "submit": ("", False), "reload": ("", False),
}  # fmt: skip

STRANGER = 4_000_123
OTHER_ADMIN = 5_000_001  # admin of REPORT_CHAT only


def test_every_admin_command_is_exercised() -> None:
    names = {c.command for c in commands.BOT_COMMANDS}
    assert names == set(ARGS), "a new admin command: add it to ARGS (and check its refusal)"
    admin_scoped = {c.name for c in commands.COMMANDS if c.scope == "admin"}
    assert names == admin_scoped


# --- state ----------------------------------------------------------------------------------------


async def state(env: BotEnv) -> dict[str, Any]:
    """Everything a command could change, read from the database (not the caches)."""
    env.services.chats.invalidate()
    out: dict[str, Any] = {"classifier": id(env.services.classifier)}
    for chat in (GROUP, REPORT_CHAT):
        out[f"policy {chat}"] = dataclasses.asdict(await env.services.chats.get(chat))
    async with env.services.db.sessionmaker() as session:
        out["incidents"] = [
            (i.id, i.action_taken, i.review_result, i.report_status, i.category)
            for i in await storage.list_incidents(session=session, chat_id=GROUP)
        ]
        out["examples"] = len(await storage.list_training_examples(session=session))
        out["strikes"] = await session.scalar(select(func.count()).select_from(Strike))
    return out


async def audit(env: BotEnv, chat_id: int = GROUP) -> list[Any]:
    async with env.services.db.sessionmaker() as session:
        return await storage.list_audit_log(session=session, chat_id=chat_id)


async def seed(env: BotEnv) -> dict[str, Any]:
    """A spammer's deleted message (incident 1, a strike) and a kept one to reply to."""
    env.emu.add_user(STRANGER, "陌生人")
    env.emu.add_user(OTHER_ADMIN, "别的群管理")
    env.emu.set_admin(REPORT_CHAT, OTHER_ADMIN)
    await env.send(SPAM, sender=SPAMMER)
    target = await env.send(BENIGN, sender=SPAMMER)
    assert (await state(env))["incidents"], "seed: the spam was not recorded"
    return target


def forbidden_calls(env: BotEnv) -> list[Any]:
    """Anything a refused command must not cause: deletions, restrictions, files, private messages."""
    acting = ("deleteMessage", "restrictChatMember", "banChatMember", "sendDocument", "editMessageText")
    bad = [c for c in env.emu.calls() if c.method in acting]
    bad += [c for c in env.calls("sendMessage") if chat_of(c) not in (GROUP,)]
    return bad


SENDERS = ["member", "stranger", "other_chat_admin", "channel", "other_group_anonymous", "edit"]


@pytest.mark.parametrize("who", SENDERS)
async def test_every_admin_command_by_a_non_admin_changes_nothing(env: BotEnv, who: str) -> None:
    target = await seed(env)
    env.emu.clear_calls()
    before = await state(env)
    emu = env.emu
    actor: int = {"member": MEMBERS[0], "stranger": STRANGER, "other_chat_admin": OTHER_ADMIN,
                  "edit": MEMBERS[1]}.get(who, 0)  # fmt: skip
    for command in commands.BOT_COMMANDS:
        args, as_reply = ARGS[command.command]
        text = f"/{command.command} {args}".strip()
        reply = target if as_reply else None
        if who == "channel":  # a user posting as a channel (sender_chat: the channel, from: Channel_Bot)
            channel = {"id": -1005550001111, "type": "channel", "title": "频道"}
            msg = emu.message(GROUP, None, text, sender_chat=channel, reply_to=reply, push=False)
            actor = builders.CHANNEL_BOT["id"]
        elif who == "other_group_anonymous":  # an anonymous admin of REPORT_CHAT, forged into GROUP
            other = {"id": REPORT_CHAT, "type": "supergroup", "title": "报告群"}
            msg = emu.message(GROUP, None, text, sender_chat=other, reply_to=reply, push=False)
            msg["from"] = dict(builders.GROUP_ANONYMOUS_BOT)
            actor = builders.GROUP_ANONYMOUS_BOT["id"]
        else:
            msg = emu.message(GROUP, actor, BENIGN if who == "edit" else text, reply_to=reply, push=False)
        if who == "edit":  # a harmless message edited into the command
            msg = dict(
                msg,
                text=text,
                entities=[{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}],
            )
            msg["edit_date"] = msg["date"] + 1
            payload = {"edited_message": msg}
        else:
            payload = {"message": msg}
        await env.app.process_update(Update.de_json({"update_id": 1, **payload}, env.app.bot))
    assert env.errors == []
    assert await state(env) == before
    assert forbidden_calls(env) == []
    # refusal or silence: the first refusal is answered, the rest within the minute are not
    texts = env.texts_to(GROUP)
    assert set(texts) <= {REFUSED}, texts
    assert 1 <= len(texts) <= 2  # (moderation may have answered nothing; each actor at most once)
    denied = [r for r in await audit(env) if r.command == "denied"]
    assert sorted(r.args["command"] for r in denied) == sorted(c.command for c in commands.BOT_COMMANDS)
    assert {r.actor_id for r in denied} == {actor}
    assert all(r.command == "denied" for r in await audit(env))


async def test_admin_commands_in_private_do_nothing_for_a_member(env: BotEnv) -> None:
    await seed(env)
    env.emu.clear_calls()
    before = await state(env)
    member = MEMBERS[0]
    for command in commands.BOT_COMMANDS:
        args, _ = ARGS[command.command]
        await env.send(f"/{command.command} {args}".strip(), sender=member, chat_id=member)
    # /reportchat GROUP in private: the member is not GROUP's admin
    await env.send(f"/reportchat {GROUP}", sender=member, chat_id=member)
    assert env.errors == []
    assert await state(env) == before
    assert not env.calls("sendDocument") and not env.calls("deleteMessage")
    assert not env.texts_to(GROUP)
    assert [r.args["command"] for r in await audit(env) if r.command == "denied"] == ["reportchat"]


# --- files never go into a group ---------------------------------------------------------------------


async def test_export_and_submit_never_send_a_document_into_a_group(env: BotEnv) -> None:
    await seed(env)
    await env.send(SPAM + " 2", sender=SPAMMER)
    emu = env.emu
    anonymous = emu.message(GROUP, None, "/export", sender_chat=GROUP, push=False)
    runs: list[tuple[str, int]] = [
        ("/export", ADMIN), ("/export 1 jsonl", OWNER), ("/export 30 csv", ADMIN),
        ("/submit", ADMIN),  # no report chat: the admin's private chat
    ]  # fmt: skip
    for text, who in runs:
        await env.send(text, sender=who)
    await env.app.process_update(Update.de_json({"update_id": 1, "message": anonymous}, env.app.bot))
    env.emu.blocked.update({ADMIN, OWNER})  # nobody reachable in private: no fallback to the group
    await env.send(SPAM + " 3", sender=SPAMMER)
    await env.send("/export", sender=ADMIN)
    await env.send("/submit", sender=OWNER)
    env.emu.blocked.clear()
    await env.send(f"/reportchat {GROUP}", sender=OWNER, chat_id=REPORT_CHAT)  # a separate report group
    await env.send("/submit", sender=ADMIN)
    docs = env.calls("sendDocument")
    assert docs, "nothing was sent: the scan would be vacuous"
    where = [chat_of(d) for d in docs]
    assert GROUP not in where
    assert all(c is not None and (c > 0 or c == REPORT_CHAT) for c in where), where
    assert REPORT_CHAT in where and ADMIN in where
    assert env.errors == []


async def test_submit_never_posts_the_report_file_into_the_moderated_group(env: BotEnv) -> None:
    await env.send(SPAM, sender=SPAMMER)
    await env.send("/reportchat", sender=ADMIN)  # in the group itself
    await env.send("/submit", sender=ADMIN)
    assert GROUP not in [chat_of(d) for d in env.calls("sendDocument")]


# --- review buttons --------------------------------------------------------------------------------


async def pending_review(env: BotEnv) -> tuple[int, dict[str, Any]]:
    target = await env.send("这家店的东西还不错，推荐大家去看看", sender=SPAMMER)
    for member in MEMBERS[:3]:
        await env.send("/report", sender=member, reply_to=target)
    async with env.services.db.sessionmaker() as session:
        (inc,) = await storage.list_incidents(session=session, chat_id=GROUP)
    assert inc.action_taken == "kept_for_review"
    return inc.id, target


async def press(env: BotEnv, user_id: int, data: str) -> str | None:
    """Press `data` on the review message the admin got; returns the callback answer's text."""
    message = env.emu.sent(ADMIN)[-1]
    n = len(env.calls("answerCallbackQuery"))
    await env.app.process_update(
        Update.de_json(
            {"update_id": 1, "callback_query": env.emu.callback(user_id, message, data)}, env.app.bot
        )
    )
    answers = env.calls("answerCallbackQuery")[n:]
    assert len(answers) == 1
    return answers[0].params.get("text")


async def test_review_buttons_act_only_for_that_chats_admins(env: BotEnv) -> None:
    env.emu.add_user(OTHER_ADMIN, "别的群管理")
    env.emu.set_admin(REPORT_CHAT, OTHER_ADMIN)
    incident_id, target = await pending_review(env)
    before = await state(env)
    env.emu.clear_calls()
    # the admin of another chat, pressing the genuine button (forwarded to them, or replayed)
    answer = await press(env, OTHER_ADMIN, f"rv:{GROUP}:{incident_id}:d")
    assert answer and "管理员" in answer
    # ... or the same incident under their own chat's id: the incident is not that chat's
    answer = await press(env, OTHER_ADMIN, f"rv:{REPORT_CHAT}:{incident_id}:d")
    assert answer and answer != "" and not env.calls("deleteMessage")
    await press(env, OTHER_ADMIN, f"rv:{REPORT_CHAT}:{incident_id}:k")
    # a demoted admin of GROUP (after the chat_member update invalidates the cache)
    env.emu.remove_admin(GROUP, ADMIN)
    env.services.admins.invalidate(GROUP)
    await press(env, ADMIN, f"rv:{GROUP}:{incident_id}:d")
    assert not env.calls("deleteMessage") and not env.calls("editMessageText")
    assert not env.emu.is_deleted(GROUP, target["message_id"])
    assert await state(env) == before
    # not vacuous: the owner (still an admin) can
    await press(env, OWNER, f"rv:{GROUP}:{incident_id}:d")
    assert env.emu.is_deleted(GROUP, target["message_id"])
    assert env.errors == []


# --- the token, the database file -----------------------------------------------------------------

# A realistic token: bot id, colon, 35 characters starting "AAH".
REAL_TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw0"
assert len(REAL_TOKEN.split(":")[1]) == 35
BOT_ID = 123456789


@dataclasses.dataclass
class App:
    app: Any
    emu: Emulator
    errors: list[BaseException]
    tmp: Path


async def start_app(tmp: Path, **overrides: Any) -> App:
    from bot.app import build_application
    from bot.config import Settings

    emu = Emulator(REAL_TOKEN, check_token=True, bot_username="qinglang_sec_bot")
    emu.add_user(OWNER, "群主")
    emu.add_user(ADMIN, "管理员")
    emu.add_user(SPAMMER, "推广达人")
    emu.add_chat(GROUP, "测试群", admins=[ADMIN], owner=OWNER, members=[SPAMMER])
    settings = Settings(
        telegram_token=REAL_TOKEN,  # type: ignore[arg-type]
        database_url=f"sqlite+aiosqlite:///{tmp / 'data' / 'qinglang.db'}",
        notice_min_interval_seconds=0,
        metrics_port=0,
        _env_file=None,  # type: ignore[call-arg]
        **overrides,
    )
    app = build_application(
        settings, request=emu.request(), get_updates_request=emu.request(), classifier=shared_model()
    )
    errors: list[BaseException] = []

    async def record(update: object, context: Any) -> None:
        errors.append(context.error)

    app.add_error_handler(record)
    await app.initialize()
    await app.post_init(app)
    return App(app, emu, errors, tmp)


async def stop_app(a: App) -> None:
    await a.app.shutdown()
    await a.app.post_shutdown(a.app)


@pytest.fixture
async def sec_app(tmp_path: Path) -> AsyncIterator[App]:
    a = await start_app(tmp_path, telegram_retries=1, telegram_backoff_seconds=0.01)
    try:
        yield a
    finally:
        await stop_app(a)


async def say(a: App, text: str, user: int = SPAMMER) -> None:
    msg = a.emu.message(GROUP, user, text, push=False)
    await a.app.process_update(Update.de_json({"update_id": 1, "message": msg}, a.app.bot))
    deletions = a.app.bot_data.services.deletions
    if deletions is not None:
        await deletions.wait_idle()  # the deletion it queued (bot/deletions.py)


async def test_the_token_never_appears_in_debug_logs_or_exceptions(
    sec_app: App, caplog: pytest.LogCaptureFixture
) -> None:
    a, emu = sec_app, sec_app.emu
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "telegram", "bot", "storage", "aiosqlite", "sqlalchemy"):
        caplog.set_level(logging.DEBUG, logger=name)
    emu.fail("deleteMessage", 429, retry_after=1)
    await say(a, SPAM)  # 429, honoured, retried
    emu.fail("deleteMessage", 403, "Forbidden: bot was kicked from the supergroup chat")
    await say(a, SPAM + "!")
    emu.fail("*", 500, times=3)
    await say(a, SPAM + "!!")
    emu.fail("getChatAdministrators", 401, "Unauthorized")  # PTB: InvalidToken
    a.app.bot_data.services.admins.invalidate()
    await say(a, "/mode off", ADMIN)
    emu.fail("sendMessage", 403, "Forbidden: bot can't initiate conversation with a user", times=None)
    await say(a, "/incidents", ADMIN)
    emu.clear_faults()
    await say(a, "/export", ADMIN)
    # A handler that fails outright, and a Bot API that cannot be reached at all.
    from telegram import Bot
    from telegram.error import TelegramError

    failures: list[BaseException] = [*a.errors]
    unreachable_bot = Bot(REAL_TOKEN, base_url="http://127.0.0.1:9/bot")  # the discard port: refused
    try:
        await unreachable_bot.initialize()  # getMe
    except TelegramError as exc:
        failures.append(exc)
        logging.getLogger("bot.test").error("unreachable", exc_info=exc)
    finally:
        await unreachable_bot.shutdown()
    try:
        await a.app.bot.send_message(-1, "x")  # chat not found
    except TelegramError as exc:
        failures.append(exc)
        logging.getLogger("bot.test").error("failure", exc_info=exc)
    assert len(failures) >= 2
    statuses = {c.status for c in emu.calls() if c.error}
    assert {429, 403, 500, 401} <= statuses, statuses
    assert caplog.records and any(r.levelno == logging.DEBUG for r in caplog.records)

    secret = REAL_TOKEN.split(":")[1]
    assert "[REDACTED]" in caplog.text, "httpx's request lines (which carry the token) were captured"
    texts = [caplog.text]
    texts += [r.getMessage() for r in caplog.records]
    texts += [r.exc_text or "" for r in caplog.records]
    texts += ["".join(traceback.format_exception(e)) + repr(e) + str(e) for e in failures]
    texts += [str(a.app.bot_data.services.settings), repr(a.app.bot_data.services.settings)]
    # PTB's own repr of the bot and the application carries the token ("ExtBot[token=...]"): harmless
    # only because every log record is redacted (bot/logs.py); logging them must show the redaction.
    assert REAL_TOKEN in repr(a.app.bot)
    caplog.clear()
    logging.getLogger("bot.test").debug("app %r bot %s", a.app, a.app.bot)
    texts.append(caplog.text)
    assert "[REDACTED]" in caplog.text
    leaks = [t for t in texts if REAL_TOKEN in t or secret in t]
    assert not leaks, f"the token leaked: {leaks[0][:500]}"


async def test_the_database_and_its_files_are_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        a = await start_app(tmp_path)
        try:
            await say(a, SPAM)
            assert a.emu.calls("deleteMessage")
            db = tmp_path / "data" / "qinglang.db"
            assert db.exists()
            files = [p for p in tmp_path.rglob("*") if p.is_file()]
            modes = {str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777) for p in files}
            assert modes[str(db.relative_to(tmp_path))] == "0o600"
            assert {k: v for k, v in modes.items() if v != "0o600"} == {}, modes
        finally:
            await stop_app(a)
    finally:
        os.umask(old)
