"""The Bot API emulator, driven by the real python-telegram-bot client."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from factories import ADMIN_ID, GROUP_ID, OWNER_ID, USER_ID, make_emulator, polling, record_errors
from telegram import (
    ChatPermissions,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    Update,
)
from telegram.constants import ChatMemberStatus
from telegram.error import BadRequest, Forbidden, InvalidToken, NetworkError, RetryAfter
from telegram.ext import CallbackQueryHandler, ContextTypes, MessageHandler, filters

from bot.emulator import Emulator


@pytest.fixture
def emu() -> Emulator:
    return make_emulator()


@pytest.fixture
async def bot(emu: Emulator):
    application = emu.application_builder().build()
    await application.initialize()
    yield application.bot
    await application.shutdown()
    assert emu.internal_errors == []


async def test_get_me(emu: Emulator, bot) -> None:
    me = await bot.get_me()
    assert me.id == emu.bot_user["id"] == 123456789
    assert me.username == "qinglang_test_bot"
    assert bot.username == "qinglang_test_bot"
    async with emu.make_bot() as plain_bot:
        assert (await plain_bot.get_me()).first_name == "清朗"


async def test_send_then_delete_then_not_found(emu: Emulator, bot) -> None:
    markup = InlineKeyboardMarkup([[InlineKeyboardButton("误判", callback_data="review:1")]])
    sent = await bot.send_message(GROUP_ID, "123", reply_markup=markup)
    assert isinstance(sent, Message)
    assert sent.text == "123"  # a numeric text stays a string
    assert sent.chat.id == GROUP_ID
    assert sent.from_user.id == emu.bot_user["id"]
    assert sent.reply_markup == markup
    assert (await bot.send_message(GROUP_ID, "再来")).message_id == sent.message_id + 1

    assert await bot.delete_message(GROUP_ID, sent.message_id) is True
    assert emu.is_deleted(GROUP_ID, sent.message_id)
    with pytest.raises(BadRequest, match=r"(?i)message to delete not found"):
        await bot.delete_message(GROUP_ID, sent.message_id)
    calls = emu.calls("deleteMessage")
    assert [c.params["message_id"] for c in calls] == [sent.message_id] * 2
    assert calls[0].error is None and calls[1].status == 400


async def test_delete_injected_message_needs_rights() -> None:
    emu = make_emulator(bot_rights={"can_delete_messages": False})
    application = emu.application_builder().build()
    await application.initialize()
    try:
        injected = emu.message(GROUP_ID, USER_ID, "出冰 加V")
        with pytest.raises(BadRequest, match=r"(?i)message can't be deleted"):
            await application.bot.delete_message(GROUP_ID, injected["message_id"])
        assert not emu.is_deleted(GROUP_ID, injected["message_id"])
        emu.set_bot_rights(GROUP_ID, {})
        assert await application.bot.delete_message(GROUP_ID, injected["message_id"])
    finally:
        await application.shutdown()


async def test_polling_delivers_injected_message_to_handler(emu: Emulator) -> None:
    application = emu.application_builder().build()
    errors = record_errors(application)
    seen: list[Update] = []

    async def on_message(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        seen.append(update)
        await context.bot.delete_message(update.effective_chat.id, update.effective_message.message_id)

    application.add_handler(MessageHandler(filters.ALL, on_message))
    async with polling(application):
        injected = emu.message(GROUP_ID, USER_ID, "/ban@qinglang_test_bot 出冰", reply_to=None)
        await emu.wait_calls("deleteMessage", 1, timeout=5)
    assert errors == []
    assert emu.internal_errors == []
    assert len(seen) == 1
    message = seen[0].message
    assert message.text == "/ban@qinglang_test_bot 出冰"
    assert message.from_user.id == USER_ID
    assert message.entities[0].type == "bot_command"
    assert emu.is_deleted(GROUP_ID, injected["message_id"])
    methods = [c.method for c in emu.calls()]
    assert methods[0] == "getMe"
    assert "deleteWebhook" in methods
    assert emu.pending_updates == []  # the stop sequence confirmed the offset


async def test_long_poll_blocks_until_update_and_honours_offset(emu: Emulator, bot) -> None:
    started = time.monotonic()
    assert await bot.get_updates(timeout=0.2) == ()
    assert time.monotonic() - started >= 0.15

    async def inject_later() -> None:
        await asyncio.sleep(0.1)
        emu.message(GROUP_ID, USER_ID, "你好")
        emu.message(GROUP_ID, USER_ID, "在吗")

    task = asyncio.create_task(inject_later())
    started = time.monotonic()
    updates = await bot.get_updates(timeout=5)
    await task
    assert time.monotonic() - started < 2
    # both were queued before the waiting poll got to run: one batch
    assert [u.message.text for u in updates] == ["你好", "在吗"]
    first = updates[0].update_id
    # Not confirmed yet: asked again, they are still there; limit cuts the batch
    again = await bot.get_updates(timeout=0, limit=1)
    assert [u.update_id for u in again] == [first]
    rest = await bot.get_updates(offset=first + 1, timeout=0)
    assert [u.message.text for u in rest] == ["在吗"]
    assert len(emu.pending_updates) == 1


async def test_edit_callback_and_media_updates(emu: Emulator, bot) -> None:
    original = emu.message(GROUP_ID, USER_ID, "今天天气不错")
    edited = emu.edit(GROUP_ID, original["message_id"], "出冰 加V：abc123")
    photo = emu.message(GROUP_ID, USER_ID, caption="看图", photo=True, thread_id=7)
    forwarded = emu.message(GROUP_ID, USER_ID, "转发", forward_origin=OWNER_ID, via_bot=555)
    anonymous = emu.message(GROUP_ID, text="匿名管理员", sender_chat=GROUP_ID)
    joined = emu.message(GROUP_ID, USER_ID, new_chat_members=[3001])
    reply = emu.message(GROUP_ID, ADMIN_ID, "/warn", reply_to=original["message_id"])
    review = await bot.send_message(
        GROUP_ID,
        "审核",
        reply_markup=InlineKeyboardMarkup.from_button(
            InlineKeyboardButton("删除", callback_data="review:del")
        ),
    )
    query = emu.callback(ADMIN_ID, review.to_dict(), "review:del")
    private = emu.private_message(USER_ID, "/start")

    updates = await bot.get_updates(timeout=0)
    ids = [u.update_id for u in updates]
    assert ids == sorted(ids) and len(set(ids)) == len(ids) == 9
    by_id = {u.update_id: u for u in updates}
    assert updates[1].edited_message.text == edited["text"]
    assert updates[1].edited_message.edit_date is not None
    assert updates[2].message.caption == "看图" and updates[2].message.photo
    assert updates[2].message.message_thread_id == 7
    assert updates[3].message.forward_origin.sender_user.id == OWNER_ID
    assert updates[3].message.via_bot.id == 555
    assert updates[4].message.sender_chat.id == GROUP_ID
    assert updates[4].message.from_user.username == "GroupAnonymousBot"
    assert updates[5].message.new_chat_members[0].id == 3001
    assert updates[6].message.reply_to_message.message_id == original["message_id"]
    assert updates[7].callback_query.data == "review:del"
    assert updates[7].callback_query.message.message_id == review.message_id
    assert updates[8].message.chat.type == "private"
    assert by_id and photo and forwarded and anonymous and joined and reply and private

    assert await bot.answer_callback_query(query["id"], text="已删除")
    with pytest.raises(BadRequest, match=r"(?i)query is too old"):
        await bot.answer_callback_query(query["id"])
    changed = await bot.edit_message_text("已处理", chat_id=GROUP_ID, message_id=review.message_id)
    assert changed.text == "已处理" and changed.reply_markup is None
    with pytest.raises(BadRequest, match=r"(?i)can't be edited"):
        await bot.edit_message_text("x", chat_id=GROUP_ID, message_id=original["message_id"])


async def test_members_restrict_ban_and_admins(emu: Emulator, bot) -> None:
    statuses = {
        uid: (await bot.get_chat_member(GROUP_ID, uid)).status for uid in (OWNER_ID, ADMIN_ID, USER_ID)
    }
    assert statuses == {
        OWNER_ID: ChatMemberStatus.OWNER,
        ADMIN_ID: ChatMemberStatus.ADMINISTRATOR,
        USER_ID: ChatMemberStatus.MEMBER,
    }
    admins = await bot.get_chat_administrators(GROUP_ID)
    assert [a.user.id for a in admins] == [OWNER_ID, ADMIN_ID, emu.bot_user["id"]]
    assert admins[-1].can_delete_messages and admins[-1].can_restrict_members

    assert await bot.restrict_chat_member(GROUP_ID, USER_ID, ChatPermissions.no_permissions())
    member = await bot.get_chat_member(GROUP_ID, USER_ID)
    assert member.status == ChatMemberStatus.RESTRICTED and not member.can_send_messages
    assert await bot.ban_chat_member(GROUP_ID, USER_ID)
    assert (await bot.get_chat_member(GROUP_ID, USER_ID)).status == ChatMemberStatus.BANNED
    assert await bot.unban_chat_member(GROUP_ID, USER_ID, only_if_banned=True)
    assert (await bot.get_chat_member(GROUP_ID, USER_ID)).status == ChatMemberStatus.LEFT
    with pytest.raises(BadRequest, match=r"(?i)administrator"):
        await bot.ban_chat_member(GROUP_ID, ADMIN_ID)

    assert await bot.set_my_commands([("stats", "统计"), ("help", "帮助")])
    assert [c.command for c in await bot.get_my_commands()] == ["stats", "help"]
    with pytest.raises(BadRequest, match=r"(?i)BOT_COMMAND_INVALID"):
        await bot.set_my_commands([("Bad-Command", "x")])
    chat = await bot.get_chat(GROUP_ID)
    assert chat.title == "测试群"


async def test_faults(emu: Emulator, bot) -> None:
    emu.fail("sendMessage", 429, retry_after=7)
    with pytest.raises(RetryAfter) as excinfo:
        await bot.send_message(GROUP_ID, "hi")
    assert "Retry in 7 seconds" in str(excinfo.value)
    emu.fail("sendMessage", 403)
    with pytest.raises(Forbidden):
        await bot.send_message(GROUP_ID, "hi")
    emu.fail("deleteMessage", 500, times=2)
    for _ in range(2):
        with pytest.raises(NetworkError):
            await bot.delete_message(GROUP_ID, 1)
    assert (await bot.send_message(GROUP_ID, "ok")).text == "ok"  # faults are used up

    emu.fail_randomly(["sendMessage"], rate=0.5, seed=1, statuses=(500,))
    outcomes = []
    for _ in range(20):
        try:
            await bot.send_message(GROUP_ID, "x")
            outcomes.append(True)
        except NetworkError:
            outcomes.append(False)
    assert 3 < outcomes.count(False) < 17
    emu.clear_faults()

    emu.delay("getChat", 0.2)
    started = time.monotonic()
    await bot.get_chat(GROUP_ID)
    assert time.monotonic() - started >= 0.2


async def test_send_document_keeps_bytes(emu: Emulator, bot) -> None:
    content = b"\x00incident log\xff" * 100
    message = await bot.send_document(GROUP_ID, content, filename='事件 "log".xlsx', caption="导出")
    assert message.document.file_name == '事件 "log".xlsx'
    assert message.document.file_size == len(content)
    assert message.caption == "导出"
    upload = emu.calls("sendDocument")[0].params["document"]
    assert upload.content == content
    assert upload.filename == '事件 "log".xlsx'
    assert emu.files[message.document.file_id] is upload
    assert emu.sent(GROUP_ID)[-1]["document"]["file_id"] == message.document.file_id


async def test_unknown_method_is_400_not_invalid_token(emu: Emulator, bot) -> None:
    with pytest.raises(BadRequest, match=r"(?i)method not found"):
        await bot.do_api_request("frobnicate", {"chat_id": GROUP_ID})
    assert emu.calls("frobnicate")[0].status == 400


async def test_raw_http_json_form_and_errors(emu: Emulator) -> None:
    transport = httpx.ASGITransport(app=emu.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://emu") as client:
        url = f"/bot{emu.token}"
        r = await client.post(f"{url}/sendMessage", json={"chat_id": GROUP_ID, "text": "json"})
        assert r.status_code == 200 and r.json()["result"]["text"] == "json"
        r = await client.post(f"{url}/sendMessage", data={"chat_id": str(GROUP_ID), "text": "true"})
        assert r.json()["result"]["text"] == "true"
        emu.fail("getMe", 429, retry_after=3)
        r = await client.get(f"{url}/getMe")
        assert r.status_code == 429
        assert r.json() == {
            "ok": False,
            "error_code": 429,
            "description": "Too Many Requests: retry after 3",
            "parameters": {"retry_after": 3},
        }
        r = await client.post(f"{url}/getUpdates", data={"offset": "", "timeout": "0"})  # curl-style blanks
        assert r.status_code == 200 and len(r.json()["result"]) == 0
        r = await client.post(f"{url}/getUpdates", data={"timeout": "soon"})
        assert r.status_code == 400 and emu.internal_errors == []
        r = await client.post(f"{url}/sendMessage", data={"chat_id": "-42", "text": "x"})
        assert r.status_code == 400 and json.loads(r.content)["description"] == "Bad Request: chat not found"


@pytest.mark.parametrize("server", ["builtin", "uvicorn"])
async def test_loopback_polling_end_to_end(emu: Emulator, server: str) -> None:
    async with emu.serve(server=server) as base_url:
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/bot")
        application = emu.application_builder(loopback=True).build()
        errors = record_errors(application)
        texts: list[str] = []

        async def on_message(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
            texts.append(update.effective_message.text)
            await context.bot.delete_message(update.effective_chat.id, update.effective_message.message_id)

        async def on_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
            await update.callback_query.answer("好")

        application.add_handler(MessageHandler(filters.TEXT, on_message))
        application.add_handler(CallbackQueryHandler(on_button))
        async with polling(application):
            for i in range(20):
                emu.message(GROUP_ID, USER_ID, f"消息 {i}")
            emu.callback(ADMIN_ID, emu.messages(GROUP_ID)[0], "x")
            await emu.wait_calls("deleteMessage", 20, timeout=5)
            await emu.wait_calls("answerCallbackQuery", 1, timeout=5)
        assert errors == []
        assert texts == [f"消息 {i}" for i in range(20)]
        assert all(emu.is_deleted(GROUP_ID, i) for i in range(1, 21))
        assert emu.served_at(1) is not None
    assert emu.base_url is None
    assert emu.internal_errors == []


async def test_forged_token_is_401_when_asked() -> None:
    emu = make_emulator(check_token=True)
    forged = emu.application_builder(token="123456789:FORGED").build()
    with pytest.raises(InvalidToken):
        await forged.initialize()
    assert emu.calls("getMe")[0].status == 401
    real = emu.application_builder().build()
    await real.initialize()
    await real.shutdown()


async def test_kicked_bot_gets_403_everywhere(emu: Emulator, bot) -> None:
    emu.kick_bot(GROUP_ID)
    with pytest.raises(Forbidden, match="bot was kicked from the supergroup chat"):
        await bot.send_message(GROUP_ID, "还在吗")
    with pytest.raises(Forbidden, match="kicked"):
        await bot.get_chat_administrators(GROUP_ID)
    emu.add_user(4242, "拉黑者", blocked=True)
    with pytest.raises(Forbidden, match="blocked by the user"):
        await bot.send_message(4242, "私聊")


async def test_exported_file_downloads_through_get_file(emu: Emulator, bot) -> None:
    message = await bot.send_document(ADMIN_ID, b"id,label\n1,fraud\n", filename="incidents.csv")
    file = await bot.get_file(message.document.file_id)
    assert bytes(await file.download_as_bytearray()) == b"id,label\n1,fraud\n"
    assert emu.sent(ADMIN_ID)[0]["chat"]["type"] == "private"


async def test_slow_answers_counted_and_random(emu: Emulator, bot) -> None:
    emu.delay("getChat", 0.15, times=1)
    started = time.monotonic()
    await bot.get_chat(GROUP_ID)
    assert time.monotonic() - started >= 0.15
    started = time.monotonic()
    await bot.get_chat(GROUP_ID)
    assert time.monotonic() - started < 0.1  # the slowdown was used up

    def run(seed: int) -> list[bool]:
        emu.fail_randomly("getChat", rate=0.0, seed=seed, slow_rate=0.5, slow_seconds=0.001)
        return [emu._take_delay("getChat") > 0 for _ in range(40)]

    assert run(3) == run(3) and 5 < sum(run(3)) < 35  # seeded: reproducible


async def test_message_shapes_reach_ptb(emu: Emulator, bot) -> None:
    from bot.emulator import builders

    text = "详情点这里 领取福利"
    link = emu.send_message(
        GROUP_ID, USER_ID, text, entities=[builders.text_link(text, "点这里", "https://x.example")]
    )
    buttons = emu.message(
        GROUP_ID, USER_ID, "看看", reply_markup=builders.url_keyboard(("进群", "https://t.me/+abc"))
    )
    caption = "私聊我 🎰 下注"
    photo = emu.message(
        GROUP_ID, USER_ID, caption=caption, photo=True, entities=[builders.entity("bold", caption, "🎰 下注")]
    )
    channel = emu.message(GROUP_ID, sender_chat=-1009999, text="频道转发")
    command = emu.command(GROUP_ID, ADMIN_ID, "stats", "7", mention=True)
    quiet = emu.message(GROUP_ID, USER_ID, "不推送", push=False)

    updates = {u.message.message_id: u.message for u in await bot.get_updates(timeout=0)}
    assert quiet["message_id"] not in updates and emu.last_update["message"] is command
    hidden = updates[link["message_id"]].parse_entities(["text_link"])
    assert [(e.url, t) for e, t in hidden.items()] == [("https://x.example", "点这里")]
    assert updates[buttons["message_id"]].reply_markup.inline_keyboard[0][0].url == "https://t.me/+abc"
    shown = updates[photo["message_id"]]
    assert shown.photo[-1].file_unique_id and shown.parse_caption_entities() == {
        shown.caption_entities[0]: "🎰 下注"
    }
    assert updates[channel["message_id"]].sender_chat.type == "channel"
    assert updates[channel["message_id"]].from_user.username == "Channel_Bot"
    stats = updates[command["message_id"]]
    assert stats.text == "/stats@qinglang_test_bot 7"
    assert stats.parse_entities(["bot_command"]) == {stats.entities[0]: "/stats@qinglang_test_bot"}


async def test_deleted_at_is_the_delete_call_time(emu: Emulator, bot) -> None:
    injected = emu.message(GROUP_ID, USER_ID, "出冰")
    assert emu.deleted_at(GROUP_ID, injected["message_id"]) is None
    await bot.delete_message(GROUP_ID, injected["message_id"])
    assert emu.deleted_at(GROUP_ID, injected["message_id"]) == emu.calls("deleteMessage")[0].at


@pytest.mark.parametrize(
    ("mode", "source", "text", "kinds"),
    [
        ("HTML", "<b>粗</b> 普通 <i>斜</i>", "粗 普通 斜", ["bold", "italic"]),
        (
            "HTML",
            '<a href="https://x.example">链接</a> &lt;b&gt; &amp; &#128512;',
            "链接 <b> & 😀",
            ["text_link"],
        ),
        ("HTML", '<pre><code class="language-python">x = 1</code></pre>', "x = 1", ["pre"]),
        (
            "HTML",
            '<span class="tg-spoiler">秘</span><blockquote>引</blockquote>',
            "秘引",
            ["spoiler", "blockquote"],
        ),
        (
            "MarkdownV2",
            "*粗* _斜_ __下__ ~删~ ||秘||",
            "粗 斜 下 删 秘",
            ["bold", "italic", "underline", "strikethrough", "spoiler"],
        ),
        (
            "MarkdownV2",
            "[链接](https://x.example/a_b) `a.b` 1\\.5\\!",
            "链接 a.b 1.5!",
            ["text_link", "code"],
        ),
        ("MarkdownV2", ">引用一\n>引用二\n正文", "引用一\n引用二\n正文", ["blockquote"]),
        (
            "Markdown",
            "*粗* _斜_ [链](https://x.example) 1.5!",
            "粗 斜 链 1.5!",
            ["bold", "italic", "text_link"],
        ),
    ],
)
async def test_parse_mode_becomes_text_and_entities(emu: Emulator, bot, mode, source, text, kinds) -> None:
    sent = await bot.send_message(GROUP_ID, source, parse_mode=mode)
    assert sent.text == text
    assert [e.type for e in sent.entities] == kinds
    # PTB renders the entities back; Telegram must read that as the same message
    rendered = sent.text_html if mode == "HTML" else sent.text_markdown_v2 if mode == "MarkdownV2" else None
    if rendered is not None:
        again = await bot.send_message(GROUP_ID, rendered, parse_mode=mode)
        # (PTB writes a pre's language as class="x", not "language-x": compare positions only)
        assert again.text == sent.text
        assert [(e.type, e.offset, e.length) for e in again.entities] == [
            (e.type, e.offset, e.length) for e in sent.entities
        ]


@pytest.mark.parametrize(
    ("mode", "source", "reason"),
    [
        ("HTML", "违规用户 <小明> 已被删除", 'Unsupported start tag "小明" at byte offset 13'),
        ("HTML", "用户 <script>x</script>", 'Unsupported start tag "script" at byte offset 7'),
        ("HTML", "<b>没有结尾", 'Can\'t find end tag corresponding to start tag "b"'),
        (
            "HTML",
            "<b>交叉<i>嵌套</b></i>",
            'Unmatched end tag at byte offset 18, expected "</i>", found "</b>"',
        ),
        ("HTML", "多余</b>", "Unexpected end tag at byte offset 6"),
        ("MarkdownV2", "分数 0.93", "Character '.' is reserved"),
        ("MarkdownV2", "*没有结尾", "Can't find end of Bold entity at byte offset 0"),
    ],
)
async def test_malformed_markup_is_rejected_like_telegram(emu: Emulator, bot, mode, source, reason) -> None:
    with pytest.raises(BadRequest, match=r"(?i)can't parse entities") as excinfo:
        await bot.send_message(GROUP_ID, source, parse_mode=mode)
    assert reason.lower() in str(excinfo.value).lower()
    assert emu.sent() == []


async def test_html_mention_of_a_user_with_markup_in_the_name(emu: Emulator, bot) -> None:
    from telegram.helpers import escape_markdown, mention_html

    emu.add_user(USER_ID, "<小明&>")
    notice = await bot.send_message(
        GROUP_ID, f"{mention_html(USER_ID, '<小明&>')} 的消息已删除（诈骗）", parse_mode="HTML"
    )
    assert notice.text == "<小明&> 的消息已删除（诈骗）"
    assert notice.entities[0].type == "text_mention" and notice.entities[0].user.id == USER_ID
    score = await bot.send_message(
        GROUP_ID, escape_markdown("得分 0.93 (fraud)", version=2), parse_mode="MarkdownV2"
    )
    assert score.text == "得分 0.93 (fraud)" and score.entities == ()


@pytest.mark.parametrize("server", ["builtin", "uvicorn"])
async def test_abandoned_long_poll_ends_with_its_client(emu: Emulator, server: str) -> None:
    async with emu.serve(server=server) as base_url:
        async with httpx.AsyncClient(base_url=f"{base_url}{emu.token}") as client:
            poll = asyncio.create_task(client.post("/getUpdates", data={"timeout": "30"}))
            await emu.wait_for(lambda: emu.polls_waiting, timeout=5)
            poll.cancel()  # what PTB's updater.stop() does to its pending getUpdates
            with pytest.raises(asyncio.CancelledError):
                await poll
        # the server notices the closed connection and drops the poll
        await emu.wait_for(lambda: emu.calls("getUpdates"), timeout=5)
        assert emu.calls("getUpdates")[0].status == 499
        injected = emu.message(GROUP_ID, USER_ID, "没人在等")
        await asyncio.sleep(0.05)
        assert emu.served_at(emu.last_update["update_id"]) is None and injected


async def test_channel_post_and_direct_updates(emu: Emulator, bot) -> None:
    from factories import message_update

    post = emu.channel_post(-1005555, "频道公告", title="官方频道")
    (update,) = await bot.get_updates(timeout=0)
    assert update.channel_post.sender_chat.title == "官方频道" and update.channel_post.from_user is None
    assert post["chat"]["type"] == "channel"

    application = emu.application_builder().build()
    direct = message_update(application, "出冰", emu=emu, edited=True, forward_origin="匿名")
    assert direct.edited_message.text == "出冰" and direct.edited_message.forward_origin.type == "hidden_user"
    assert direct.effective_user.id == USER_ID and emu.pending_count == 1  # not queued (the post still is)


async def test_before_hooks_see_each_call_and_can_answer(emu: Emulator, bot) -> None:
    from bot.emulator import ApiError

    seen: list[int] = []

    async def check(params: dict) -> None:
        seen.append(int(params["message_id"]))
        if params["message_id"] == 99:
            raise ApiError(400, "Bad Request: message to delete not found")

    undo = emu.before("deleteMessage", check)
    first = emu.message(GROUP_ID, USER_ID, "一")
    await bot.delete_message(GROUP_ID, first["message_id"])
    with pytest.raises(BadRequest, match="not found"):
        await bot.delete_message(GROUP_ID, 99)
    undo()
    second = emu.message(GROUP_ID, USER_ID, "二")
    await bot.delete_message(GROUP_ID, second["message_id"])
    assert seen == [first["message_id"], 99]


async def test_retry_after_below_one_is_refused(emu: Emulator) -> None:
    # PTB treats retry_after=0 as absent: the bot would see a NetworkError, never RetryAfter
    with pytest.raises(ValueError, match="retry_after"):
        emu.fail("sendMessage", 429, retry_after=0)


async def test_builtin_server_http_details(emu: Emulator) -> None:
    async with emu.serve() as base_url:
        host, port = base_url.removeprefix("http://").removesuffix("/bot").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        path = f"/bot{emu.token}/sendMessage"
        body = json.dumps({"chat_id": GROUP_ID, "text": "分块"}).encode()
        # a chunked body, then a second request on the same connection, which asks to close it
        chunked = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (5, body[:5], len(body) - 5, body[5:])
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
            + chunked
        )
        writer.write(
            f"GET /bot{emu.token}/getMe?x=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        )
        await writer.drain()
        answers = await asyncio.wait_for(reader.read(), 5)  # read() returns at EOF: the server closed
        writer.close()
        first, second = answers.split(b"HTTP/1.1 ")[1:]
        assert first.startswith(b"200 OK") and "分块".encode() in first
        assert (
            second.startswith(b"200 OK") and b"connection: close" in second and b"qinglang_test_bot" in second
        )

        application = emu.application_builder(loopback=True).build()
        await application.initialize()
        try:
            sent = await application.bot.send_document(ADMIN_ID, b"\x00\xff" * 5000, filename="导出.xlsx")
            assert emu.files[sent.document.file_id].content == b"\x00\xff" * 5000
            with pytest.raises(BadRequest, match="method not found"):
                await application.bot.do_api_request("nosuchmethod")
        finally:
            await application.shutdown()
    assert emu.internal_errors == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("加我t.me/abc123进群", [("url", "t.me/abc123")]),
        ("看这里https://x.example/a_b?c=1。", [("url", "https://x.example/a_b?c=1")]),
        ("联系 @dealer_bot 或 a.b@qq.com", [("mention", "@dealer_bot"), ("email", "a.b@qq.com")]),
        ("#博彩 #123 #abc1", [("hashtag", "#博彩"), ("hashtag", "#abc1")]),
        ("/ban@qinglang_test_bot 出冰", [("bot_command", "/ban@qinglang_test_bot")]),
        ("版本1.2.3 和 example.com. 1/2", [("url", "example.com")]),
        ("QQ：12345678 微信 abc123", []),  # contacts without a link shape stay plain text
    ],
)
async def test_telegram_style_entities_are_detected(emu: Emulator, bot, text, expected) -> None:
    emu.message(GROUP_ID, USER_ID, text)
    (update,) = await bot.get_updates(timeout=0)
    message = update.message
    assert [(e.type, value) for e, value in message.parse_entities().items()] == expected


async def test_given_entities_win_over_detected_ones(emu: Emulator, bot) -> None:
    from bot.emulator import builders

    text = "官网 example.com 详情点这里"
    emu.message(
        GROUP_ID, USER_ID, text, entities=[builders.text_link(text, "example.com", "https://evil.example")]
    )
    emu.message(GROUP_ID, USER_ID, caption="图 t.me/abcde", photo=True)
    first, second = await bot.get_updates(timeout=0)
    assert [(e.type, e.url) for e in first.message.entities] == [("text_link", "https://evil.example")]
    assert [e.type for e in second.message.caption_entities] == ["url"]
    plain = Emulator(auto_entities=False)
    assert "entities" not in plain.message(GROUP_ID, USER_ID, "t.me/abcde")


async def test_flood_limit_per_chat(emu: Emulator, bot) -> None:
    emu.limit("sendMessage", 3, 60)
    for i in range(3):
        await bot.send_message(GROUP_ID, f"通知 {i}")
    with pytest.raises(RetryAfter, match=r"Retry in (5\d|60) seconds"):
        await bot.send_message(GROUP_ID, "太多了")
    assert emu.calls("sendMessage")[-1].status == 429
    assert (await bot.send_message(ADMIN_ID, "私聊另算")).text == "私聊另算"  # per chat
    emu.limit("sendMessage", 0, 0)
    assert (await bot.send_message(GROUP_ID, "解除")).text == "解除"
