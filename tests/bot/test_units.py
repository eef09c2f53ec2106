"""Pure parts of the bot, table-driven: skips, decisions, review button data, retries, redaction."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

import pytest
from telegram.error import BadRequest, Forbidden, RetryAfter, TimedOut

from bot.logs import REDACTED, add_secret, redact
from bot.moderation import MessageRecord, decide, parse_review_data, skip_reason
from bot.telegram_io import SafeTelegram, classify_bad_request

CHAT = -1001234567890
BOT = 4242


def record(**changes: Any) -> MessageRecord:
    base: dict[str, Any] = dict(
        chat_id=CHAT,
        chat_title="测试群",
        message_id=1,
        thread_id=None,
        sender_id=100,
        sender_username="alice",
        sender_name="Alice",
        sender_chat_id=None,
        is_automatic_forward=False,
        message_date=dt.datetime.now(dt.UTC),
        is_edit=False,
        edit_date=None,
        text="出冰 加V",
        hidden_links=(),
        media_kind=None,
        media_file_unique_id=None,
        forward_origin=None,
        is_service=False,
    )
    base.update(changes)
    return MessageRecord(**base)


@pytest.mark.parametrize(
    ("changes", "expected", "why"),
    [
        ({}, None, "an ordinary member is judged"),
        ({"is_service": True}, "service", "joins, pins and title changes are not content"),
        ({"text": "  "}, "empty", "nothing to judge"),
        ({"text": "", "hidden_links": ("http://x.example",)}, None, "a bare hidden link is judged"),
        ({"sender_chat_id": CHAT, "sender_id": 1087968824}, "anonymous_admin", "sender_chat is the chat"),
        ({"sender_chat_id": -100999, "is_automatic_forward": True}, "linked_channel", "the group's channel"),
        ({"sender_chat_id": -100999}, None, "another channel posting in the group is judged"),
        ({"sender_id": BOT}, "self", "the bot's own notices"),
        ({"sender_id": 7}, "admin", "admins are never acted on"),
        ({"sender_id": 8}, "trusted", "trusted users are skipped"),
    ],
)
def test_skip_reason(changes: dict[str, Any], expected: str | None, why: str) -> None:
    got = skip_reason(record(**changes), bot_id=BOT, admin_ids=frozenset({7}), trusted_ids=frozenset({8}))
    assert got == expected, why


def test_judged_text_includes_hidden_links_each_on_a_line() -> None:
    r = record(text="点这里", hidden_links=("http://a.example", "注册送彩金 http://b.example"))
    assert r.judged_text == "点这里\nhttp://a.example\n注册送彩金 http://b.example"


@dataclass
class V:
    action: str
    label: str = "fraud"
    score: float = 0.9
    reasons: dict[str, Any] = field(default_factory=dict)
    model_version: str = "t"


@pytest.mark.parametrize(
    ("action", "mode", "expected"),
    [
        ("delete", "enforce", ("delete", True)),
        ("review", "enforce", ("review", True)),
        ("pass", "enforce", ("pass", True)),
        ("delete", "dry_run", ("delete", False)),
        ("review", "dry_run", ("review", False)),
        ("weird", "enforce", ("pass", True)),
    ],
)
def test_decide(action: str, mode: str, expected: tuple[str, bool]) -> None:
    d = decide(V(action), mode=mode)
    assert (d.action, d.act) == expected


@pytest.mark.parametrize(
    ("data", "ok"),
    [
        ("rv:-100123:5:d", True),
        ("rv:-100123:5:k", True),
        ("rv:-100123:5:x", False),
        ("rv:abc:5:d", False),
        ("rv:-100123:5", False),
        ("xx:-100123:5:d", False),
        ("", False),
        (None, False),
        ("rv:-100123:5:d:extra", False),
    ],
)
def test_parse_review_data(data: str | None, ok: bool) -> None:
    assert (parse_review_data(data) is not None) == ok


@pytest.mark.parametrize(
    ("description", "kind"),
    [
        ("Message to delete not found", "gone"),
        ("Message can't be deleted", "no_rights"),
        ("Not enough rights to restrict/unrestrict chat member", "no_rights"),
        ("Bad Request: CHAT_ADMIN_REQUIRED", "no_rights"),
        ("Bad Request: message_id_invalid", "gone"),
        ("Bad Request: chat not found", "gone"),
        ("Bad Request: something else", "bad_request"),
    ],
)
def test_classify_bad_request(description: str, kind: str) -> None:
    assert classify_bad_request(description) == kind


class _Bot:
    id = BOT


async def _no_sleep(_: float) -> None:
    return None


def _failing(*errors: Exception) -> Any:
    queue = list(errors)

    async def request() -> str:
        if queue:
            raise queue.pop(0)
        return "done"

    return request


@pytest.mark.parametrize(
    ("errors", "ok", "kind", "attempts"),
    [
        ([], True, None, 1),
        ([RetryAfter(1), RetryAfter(2)], True, None, 3),
        ([RetryAfter(3600)], False, "flood", 1),  # longer than we are willing to wait
        ([TimedOut(), TimedOut()], True, None, 3),
        ([TimedOut()] * 4, False, "network", 4),
        ([BadRequest("Message to delete not found")], False, "gone", 1),
        ([TimedOut(), BadRequest("Message to delete not found")], True, None, 2),  # first try went through
        ([Forbidden("bot was kicked from the supergroup chat")], False, "forbidden", 1),
        ([ValueError("surprise")], False, "unexpected", 1),
    ],
)
async def test_safe_call_retries_are_bounded(
    errors: list[Exception], ok: bool, kind: str | None, attempts: int
) -> None:
    tg = SafeTelegram(_Bot(), retries=3, max_retry_after=30, sleep=_no_sleep)  # type: ignore[arg-type]
    result = await tg.call("test", _failing(*errors))
    assert (result.ok, result.kind, result.attempts) == (ok, kind, attempts)


def test_token_is_redacted_from_log_records(caplog: pytest.LogCaptureFixture) -> None:
    token = "123456789:AAFakeTokenFakeTokenFakeTokenFake_xyz"
    add_secret(token)
    log = logging.getLogger("test.redaction")
    with caplog.at_level(logging.DEBUG):
        log.info("POST https://api.telegram.org/bot%s/getUpdates", token)
        try:
            raise RuntimeError(f"failed at /bot{token}/sendMessage")
        except RuntimeError:
            log.exception("boom")
        log.warning("another shape 987654321:%s", "B" * 35)
    assert token not in caplog.text
    assert "B" * 35 not in caplog.text
    assert caplog.text.count(REDACTED) >= 3
    assert redact(f"x {token} y") == f"x {REDACTED} y"
