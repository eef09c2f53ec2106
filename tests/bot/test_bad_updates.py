"""Bad updates (issue 5, Faults 5): hypothesis builds update JSON, the real Application handles it.

Each example is a raw update dict (what getUpdates or a webhook would deliver) turned into a PTB
Update with `Update.de_json` and given to `app.process_update` of the real bot (the `env` fixture:
build_application, the Bot API emulator in-process, a real SQLite file). Asserted: no handler ever
raises (the error handlers recorded nothing, the emulator saw no malformed call), and a forged review
button pressed by anyone but that chat's admin deletes nothing and changes no setting or incident.

Only Telegram's required fields are kept (message_id, date, chat.id, chat.type, and a callback's id,
from, chat_instance): everything optional may be missing, and everything else may be odd — unknown
message kinds, 100k-character texts, entities pointing past the end, lone surrogates, channel posts,
anonymous admins, edits without text.
"""

from __future__ import annotations

import dataclasses
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
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from telegram import Update

import storage
from bot.emulator import builders

CHANNEL = -1005550001111
OTHER_GROUP = -1007770002222  # a group the emulator never heard of: its admins cannot be fetched
STRANGER = 4_000_123  # a user the emulator does not know

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# --- strategies ---------------------------------------------------------------------------------

ODD = [
    "\ud800", "\udfff", "a\ud83d", "\u202e反转\u202c", "\u200b\u200c\u200d", "\ufeff", "𝕳𝖊𝖑𝖑𝖔",
    "e\u0301\u0301\u0301", "\x00\x01\x1b[31m", "👨‍👩‍👧‍👦",
    "加\u2060V\u2060：bing8888", "ｗｅｉｘｉｎ：ａｂｃ", "/mode\u00a0off", "\U0010ffff", "Ⅴ信",
    "\n\n\r\t", "%s%d{}", "<b>x</b>", "@", "/", "/@", "/start@", "rv:1:2:d",
]  # fmt: skip

plain_text = st.text(max_size=300)
odd_text = st.lists(st.sampled_from(ODD) | st.text(max_size=8), max_size=12).map("".join)
huge_text = st.builds(
    lambda unit, n: (unit * (n // max(1, len(unit)) + 1))[:n],
    st.sampled_from(["出冰加V", "a", "😀", "\ud800", "加微信 bing8888 ", " "]),
    st.integers(4_000, 100_000),
)
any_text = st.one_of(plain_text, odd_text, huge_text, st.sampled_from(["", "/mode off", "/export", "/spam"]))

ENTITY_TYPES = ["bot_command", "url", "text_link", "mention", "text_mention", "hashtag", "bold", "spoiler",
                "custom_emoji", "blockquote", "made_up_type"]  # fmt: skip


@st.composite
def entity(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(ENTITY_TYPES))
    e: dict[str, Any] = {
        "type": kind,
        "offset": draw(st.integers(-5, 200_000)),  # often past the end
        "length": draw(st.integers(-3, 200_000)),
    }
    if kind == "text_link":
        e["url"] = draw(
            st.sampled_from(["https://t.me/bing8888", "tg://user?id=1", "", "javascript:x", "\ud800"])
        )
    if kind == "text_mention":
        e["user"] = {"id": draw(st.integers(1, 2**40)), "is_bot": False, "first_name": draw(odd_text)}
    if kind == "custom_emoji":
        e["custom_emoji_id"] = "5368324170671202286"
    return e


def user_json(uid: int, name: str = "x") -> dict[str, Any]:
    return {"id": uid, "is_bot": False, "first_name": name}


GROUP_CHAT = {"id": GROUP, "type": "supergroup", "title": "测试群"}
CHATS = [
    GROUP_CHAT,
    {"id": GROUP, "type": "supergroup"},  # no title
    {"id": REPORT_CHAT, "type": "supergroup", "title": "报告群", "is_forum": True},
    {"id": OTHER_GROUP, "type": "group"},
    {"id": MEMBERS[0], "type": "private", "first_name": "成员1"},
    {"id": CHANNEL, "type": "channel", "title": "频道"},
]

# Unknown or non-text message kinds: the bot must ignore them or judge them as empty, never fail.
KINDS: list[dict[str, Any]] = [
    {"story": {"chat": {"id": CHANNEL, "type": "channel", "title": "频道"}, "id": 7}},
    {"giveaway": {"chats": [GROUP_CHAT], "winners_selection_date": 1_700_000_000, "winner_count": 3}},
    {"giveaway_winners": {"chat": GROUP_CHAT, "giveaway_message_id": 1, "winners_selection_date": 1,
                          "winner_count": 1, "winners": [user_json(2_000_001)]}},
    {"dice": {"emoji": "🎲", "value": 6}},
    {"location": {"latitude": 39.9, "longitude": 116.4}},
    {"venue": {"location": {"latitude": 0, "longitude": 0}, "title": "加V bing8888",
               "address": "\ud800"}},
    {"contact": {"phone_number": "+8613800138000", "first_name": "出冰"}},
    {"dice": {"emoji": "🎰", "value": 64}, "has_protected_content": True},
    {"sticker": {"file_id": "s", "file_unique_id": "su", "type": "regular", "width": 1, "height": 1,
                 "is_animated": False, "is_video": False}},
    {"photo": [builders.photo_json("f1")[0]]},
    {"paid_media": {"star_count": 5, "paid_media": [{"type": "preview"}]}},
    {"some_future_kind": {"anything": [1, "二", None]}},
    {"new_chat_members": [user_json(SPAMMER, "推广达人")]},
    {"pinned_message": {"message_id": 1, "date": 0, "chat": GROUP_CHAT}},  # inaccessible message
    {},  # nothing at all
]  # fmt: skip


@st.composite
def sender(draw: st.DrawFn, chat: dict[str, Any]) -> dict[str, Any]:
    """The from / sender_chat fields: a member, a stranger, an admin, an anonymous admin, a channel, none."""
    choice = draw(st.sampled_from(["member", "stranger", "admin", "anonymous", "channel", "none", "bot"]))
    if choice == "member":
        return {"from": user_json(draw(st.sampled_from([*MEMBERS, SPAMMER])), draw(odd_text))}
    if choice == "stranger":
        u = user_json(draw(st.integers(1, 2**52)), draw(odd_text))
        if draw(st.booleans()):
            u["username"] = draw(st.text(max_size=40))
            u["language_code"] = draw(st.sampled_from(["en", "zh-hans", "", "xx-\ud800"]))
        return {"from": u}
    if choice == "admin":
        return {"from": user_json(draw(st.sampled_from([ADMIN, OWNER])))}
    if choice == "anonymous":
        return {"from": dict(builders.GROUP_ANONYMOUS_BOT), "sender_chat": dict(chat)}
    if choice == "channel":
        return {
            "from": dict(builders.CHANNEL_BOT),
            "sender_chat": {"id": CHANNEL, "type": "channel", "title": "频道"},
        }
    if choice == "bot":
        return {"from": {"id": BOT_ID, "is_bot": True, "first_name": "清朗"}}
    return {}


@st.composite
def message_json(draw: st.DrawFn, *, edited: bool = False) -> dict[str, Any]:
    chat = dict(draw(st.sampled_from(CHATS)))
    msg: dict[str, Any] = {
        "message_id": draw(st.integers(1, 2**31 - 1)),
        "date": draw(st.integers(0, 2**32)),
        "chat": chat,
        **draw(sender(chat)),
    }
    body = draw(st.sampled_from(["text", "caption", "kind", "none"]))
    if body == "text":
        msg["text"] = draw(any_text)
        if draw(st.booleans()):
            msg["entities"] = draw(st.lists(entity(), max_size=6))
    elif body == "caption":
        msg["photo"] = builders.photo_json("f2")
        msg["caption"] = draw(any_text)
        if draw(st.booleans()):
            msg["caption_entities"] = draw(st.lists(entity(), max_size=6))
    elif body == "kind":
        msg.update(draw(st.sampled_from(KINDS)))
    if draw(st.booleans()):
        msg["message_thread_id"] = draw(st.integers(1, 2**31))
    if draw(st.integers(0, 4)) == 0:
        msg["forward_origin"] = draw(
            st.sampled_from([
                {"type": "hidden_user", "sender_user_name": "\ud800", "date": 1},
                {"type": "channel", "chat": {"id": CHANNEL, "type": "channel"}, "message_id": 1, "date": 1},
                {"type": "unknown_origin", "date": 1},
            ])
        )  # fmt: skip
    if draw(st.integers(0, 4)) == 0:
        msg["reply_to_message"] = {"message_id": 1, "date": 0, "chat": chat, "text": draw(odd_text)}
    if draw(st.integers(0, 6)) == 0:
        msg["is_automatic_forward"] = True
    if draw(st.integers(0, 6)) == 0:
        msg["via_bot"] = {"id": 42, "is_bot": True, "first_name": "via"}
    if edited:
        msg["edit_date"] = msg["date"] + draw(st.integers(0, 10_000))
    return msg


@st.composite
def update_json(draw: st.DrawFn) -> dict[str, Any]:
    key = draw(
        st.sampled_from(
            ["message", "edited_message", "channel_post", "edited_channel_post", "business_message"]
        )
    )
    msg = draw(message_json(edited=key.startswith("edited")))
    if "channel_post" in key:
        msg["chat"] = {"id": CHANNEL, "type": "channel", "title": "频道"}
        msg.pop("from", None)
        msg["sender_chat"] = msg["chat"]
    return {"update_id": draw(st.integers(1, 2**31)), key: msg}


# --- helpers ------------------------------------------------------------------------------------


async def process(env: BotEnv, data: dict[str, Any]) -> None:
    update = Update.de_json(data, env.app.bot)
    assert update is not None
    await env.app.process_update(update)


def bad_calls(env: BotEnv) -> list[Any]:
    """Calls the emulator refused as malformed (a 400 that is not about the chat or message state)."""
    harmless = ("chat not found", "message to delete not found", "query is too old", "message can't be",
                "bot can't initiate", "blocked", "not enough rights", "message to edit not found",
                "message is not modified", "user not found", "bot is not a member",
                "PARTICIPANT_ID_INVALID")  # fmt: skip
    return [
        c for c in env.emu.calls() if c.error and c.status == 400 and not any(h in c.error for h in harmless)
    ]


def assert_clean(env: BotEnv, data: dict[str, Any]) -> None:
    assert env.errors == [], f"handler raised on {str(data)[:400]!r}: {env.errors!r}"
    assert env.emu.internal_errors == []
    assert bad_calls(env) == [], f"malformed Bot API call for {str(data)[:300]!r}"


# --- messages of every odd shape ------------------------------------------------------------------


@SETTINGS
@given(data=update_json())
async def test_odd_messages_never_raise_out_of_a_handler(env: BotEnv, data: dict[str, Any]) -> None:
    env.errors.clear()
    env.emu.clear_calls()
    await process(env, data)
    assert_clean(env, data)


@pytest.mark.parametrize("n", [100_000])
async def test_a_100k_character_edit_without_text_then_with_text(env: BotEnv, n: int) -> None:
    """A plain case next to the generated ones: an edit that drops the text, then one of 100k chars."""
    msg = env.emu.message(GROUP, MEMBERS[0], "你好", push=False)
    no_text = {k: v for k, v in msg.items() if k not in ("text", "entities")} | {"edit_date": msg["date"] + 1}
    await process(env, {"update_id": 1, "edited_message": no_text})
    huge = dict(msg, text="出冰加V" * (n // 4), edit_date=msg["date"] + 2)
    huge["entities"] = [{"type": "url", "offset": n + 10, "length": 50}]
    await process(env, {"update_id": 2, "edited_message": huge})
    assert env.errors == []


# --- forged review buttons ------------------------------------------------------------------------

FORGERS = [*MEMBERS, SPAMMER, STRANGER]  # none of them is an admin of GROUP


async def pending_review(env: BotEnv) -> tuple[int, dict[str, Any]]:
    """One incident kept for review in GROUP (three member reports); its id and the reported message."""
    cached = getattr(env, "_pending", None)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    env.emu.add_user(STRANGER, "陌生人")
    target = await env.send("这家店的东西还不错，推荐大家去看看", sender=SPAMMER)
    for member in MEMBERS[:3]:
        await env.send("/report", sender=member, reply_to=target)
    async with env.services.db.sessionmaker() as session:
        (inc,) = await storage.list_incidents(session=session, chat_id=GROUP)
    assert inc.action_taken == "kept_for_review" and inc.review_result is None
    env._pending = (inc.id, target)  # type: ignore[attr-defined]
    return inc.id, target


@st.composite
def forged_data(draw: st.DrawFn, incident_id: int) -> str:
    ids = st.sampled_from([incident_id, incident_id + 1, 0, -1, 999_999, 2**63, 10**30])
    chats = st.sampled_from([GROUP, REPORT_CHAT, OTHER_GROUP, MEMBERS[0], 0, -(2**63)])
    return draw(
        st.one_of(
            st.builds(lambda c, i, a: f"rv:{c}:{i}:{a}", chats, ids, st.sampled_from(["d", "k", "x", ""])),
            st.builds(lambda s: f"rv:{s}", st.text(max_size=60)),
            st.sampled_from(["rv:999999:delete", "rv:", "rv", "rv::::", f"rv:{GROUP}:{incident_id}:d:extra",
                             f"rv: {GROUP}:{incident_id}:d", f"rv:{GROUP}:{incident_id}:d\n", "rv:1e3:1:d",
                             f"rv:{GROUP}:٣:d", "rv:-0:0:k", "set:mode:off", "mode:off", "\ud800"]),
            st.text(max_size=64),
        )
    )  # fmt: skip


async def snapshot(env: BotEnv, incident_id: int) -> tuple[Any, ...]:
    env.services.chats.invalidate(GROUP)  # read the database, not the cache
    policy = await env.services.chats.get(GROUP)
    async with env.services.db.sessionmaker() as session:
        inc = await storage.get_incident(session=session, incident_id=incident_id)
        events = await storage.list_events(session=session, incident_id=incident_id)
        examples = await storage.list_training_examples(session=session)
    return (
        dataclasses.asdict(policy) if dataclasses.is_dataclass(policy) else repr(policy),
        (inc.action_taken, inc.review_result),
        len(events),
        len(examples),
    )


@SETTINGS
@given(data=st.data())
async def test_forged_review_buttons_delete_nothing_and_change_nothing(
    env: BotEnv, data: st.DataObject
) -> None:
    incident_id, target = await pending_review(env)
    forged = data.draw(forged_data(incident_id), label="callback_data")
    presser = data.draw(st.sampled_from(FORGERS), label="from")
    # where the button seems to be: the admin's review message, a group message, or no message at all
    where = data.draw(st.sampled_from(["admin_private", "group", "inline"]), label="where")
    before = await snapshot(env, incident_id)
    env.errors.clear()
    env.emu.clear_calls()
    query: dict[str, Any] = {
        "id": str(data.draw(st.integers(1, 2**62))),
        "from": user_json(presser),
        "chat_instance": "-42",
        "data": forged,
    }
    if where == "admin_private":
        query["message"] = env.emu.sent(ADMIN)[-1]
    elif where == "group":
        query["message"] = target
    else:
        query["inline_message_id"] = "AAAA"
    await process(env, {"update_id": 1, "callback_query": query})
    assert env.errors == [], f"{forged!r}: {env.errors!r}"
    assert env.calls("deleteMessage") == [], f"a forged {forged!r} by {presser} deleted something"
    assert not env.calls("restrictChatMember") and not env.calls("banChatMember")
    assert await snapshot(env, incident_id) == before, f"a forged {forged!r} by {presser} changed state"
    assert not env.emu.is_deleted(GROUP, target["message_id"])


async def test_the_genuine_button_still_works_after_the_forgeries(env: BotEnv) -> None:
    """Not vacuous: the same harness and data shape, pressed by the admin, deletes the message."""
    incident_id, target = await pending_review(env)
    for member in (MEMBERS[0], STRANGER):
        await process(
            env,
            {"update_id": 1, "callback_query": {"id": "1", "from": user_json(member), "chat_instance": "1",
                                                "data": f"rv:{GROUP}:{incident_id}:d"}},
        )  # fmt: skip
    assert not env.calls("deleteMessage")
    await env.press(f"rv:{GROUP}:{incident_id}:d", sender=ADMIN, chat_id=ADMIN)
    assert env.emu.is_deleted(GROUP, target["message_id"])
    assert env.errors == []
