"""The emulator: state, update injection, the call log, scripted faults and serving.

Bot API methods live in `methods.py` (one function each), parse_mode in `markup.py`, HTTP in `asgi.py`
(the ASGI app, used in-process) and `server.py` (the loopback server).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import random
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any

from bot.emulator import builders
from bot.emulator.asgi import make_app
from bot.emulator.methods import METHODS
from bot.emulator.state import (
    DEFAULT_DESCRIPTIONS,
    JSON,
    ApiError,
    Call,
    ChatState,
    Fault,
    Slowdown,
    StoredMessage,
    UploadedFile,
)

log = logging.getLogger(__name__)

DEFAULT_TOKEN = "123456789:EMULATOR-TOKEN"
_KEEP = object()  # add_chat(bot_rights=...) default: the bot is an admin with DEFAULT_BOT_RIGHTS


class _RandomFaults:
    def __init__(
        self,
        methods: set[str] | None,
        rate: float,
        seed: int,
        statuses: tuple[int, ...],
        slow_rate: float,
        slow_seconds: float,
    ) -> None:
        self.methods = methods
        self.rate = rate
        self.random = random.Random(seed)
        self.statuses = statuses
        self.slow_rate = slow_rate
        self.slow_seconds = slow_seconds

    def applies(self, method: str) -> bool:
        return self.methods is None or method in self.methods


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _wake_all(waiters: list[asyncio.Future[None]]) -> None:
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    for fut in waiters:
        loop = fut.get_loop()
        if loop is running:
            _wake(fut)
        elif not loop.is_closed():
            loop.call_soon_threadsafe(_wake, fut)


class Emulator:
    """A local Telegram Bot API: the real PTB client talks to it in-process or over 127.0.0.1."""

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        *,
        bot_username: str = "qinglang_test_bot",
        bot_name: str = "清朗",
        check_token: bool = False,
        auto_entities: bool = True,
    ) -> None:
        self.token = token
        # True: a request with another token gets 401 Unauthorized (PTB raises InvalidToken)
        self.check_token = check_token
        # True: injected texts and captions get the url/mention/hashtag/bot_command/email entities
        # Telegram adds by itself (merged with any entities= given)
        self.auto_entities = auto_entities
        head = token.split(":", 1)[0]
        bot_id = int(head) if head.isdigit() else 123456789  # Telegram: the token starts with the bot id
        self.bot_user: JSON = builders.user_json(bot_id, bot_name, username=bot_username, is_bot=True)
        self.users: dict[int, JSON] = {bot_id: self.bot_user}
        self.blocked: set[int] = set()  # users who blocked the bot: private sends get 403
        self.chats: dict[int, ChatState] = {}
        self.files: dict[str, UploadedFile] = {}
        self.webhook: JSON | None = None
        self.my_commands: dict[tuple[str, str], list[JSON]] = {}
        self.callback_answers: dict[str, JSON] = {}
        self.internal_errors: list[BaseException] = []  # emulator bugs; tests may assert it stays empty
        self.base_url: str | None = None  # set while serve() runs
        self.base_file_url: str | None = None
        self.app = make_app(self)
        self.now = time.monotonic()  # arrival time of the call being answered (methods read it)

        self._updates: deque[JSON] = deque()
        self._update_ids = itertools.count(1)
        self._served_at: dict[int, float] = {}
        self._callback_ids = itertools.count(1)
        self._open_callbacks: set[str] = set()
        self._file_ids = itertools.count(1)
        self._calls: dict[str, list[Call]] = {}
        self._all_calls: list[Call] = []
        self._sent: list[StoredMessage] = []  # bot-sent messages in order: sent() without scanning chats
        self._last_update: JSON | None = None
        self._faults: dict[str, deque[Fault]] = {}
        self._random_faults: _RandomFaults | None = None
        self._delays: dict[str, Slowdown] = {}
        self._hooks: dict[str, list[Callable[[JSON], Any]]] = {}
        self._limits: dict[str, tuple[int, float, bool]] = {}  # method -> count, seconds, per chat
        self._limit_log: dict[tuple[str, Any], deque[float]] = {}
        self._update_waiters: list[asyncio.Future[None]] = []
        self._change_waiters: list[asyncio.Future[None]] = []
        self._closing = False

    # --- users and chats ---------------------------------------------------------------------

    def add_user(
        self,
        user_id: int,
        first_name: str | None = None,
        username: str | None = None,
        last_name: str | None = None,
        *,
        is_bot: bool = False,
        language_code: str | None = "zh-hans",
        blocked: bool = False,
    ) -> JSON:
        """Register (or replace) a user; returns the User object."""
        user = builders.user_json(
            user_id,
            first_name,
            username=username,
            last_name=last_name,
            is_bot=is_bot,
            language_code=language_code,
        )
        self.users[user_id] = user
        if blocked:
            self.blocked.add(user_id)
        else:
            self.blocked.discard(user_id)
        return user

    def user(self, user_id: int) -> JSON:
        """The User object, registering a default one for an id not seen before."""
        user = self.users.get(user_id)
        return user if user is not None else self.add_user(user_id)

    def add_chat(
        self,
        chat_id: int,
        title: str | None = None,
        type: str = "supergroup",
        admins: Iterable[int] = (),
        bot_rights: Any = _KEEP,
        *,
        owner: int | None = None,
        members: Iterable[int] = (),
        username: str | None = None,
        is_forum: bool | None = None,
    ) -> JSON:
        """Register (or replace) a chat; returns the Chat object.

        `admins` become administrators with DEFAULT_ADMIN_RIGHTS, `owner` the creator. The bot is an
        admin with DEFAULT_BOT_RIGHTS unless `bot_rights` says otherwise: a dict of rights overriding
        them (e.g. {"can_delete_messages": False}), or None for a plain member.
        """
        if type == "private":
            self.user(chat_id)
            return self._private_chat(chat_id).chat
        chat = builders.chat_json(chat_id, type, title, username=username, is_forum=is_forum)
        if bot_rights is _KEEP:
            rights: JSON | None = dict(builders.DEFAULT_BOT_RIGHTS)
        elif bot_rights is None:
            rights = None
        else:
            rights = {**builders.DEFAULT_BOT_RIGHTS, **bot_rights}
        state = ChatState(chat=chat, owner=owner, bot_rights=rights)
        for user_id in admins:
            self.user(user_id)
            state.admins[user_id] = {}
        if owner is not None:
            self.user(owner)
        for user_id in members:
            self.user(user_id)
            state.members.add(user_id)
        self.chats[chat_id] = state
        return chat

    def set_admin(self, chat_id: int, user_id: int, rights: JSON | None = None) -> None:
        """Make a user an administrator (rights override DEFAULT_ADMIN_RIGHTS)."""
        self.user(user_id)
        self.chat_state(chat_id).admins[user_id] = dict(rights or {})

    def remove_admin(self, chat_id: int, user_id: int) -> None:
        """Demote an administrator to a plain member."""
        state = self.chat_state(chat_id)
        state.admins.pop(user_id, None)
        state.members.add(user_id)

    def set_bot_rights(self, chat_id: int, rights: JSON | None) -> None:
        """The bot's admin rights in a chat (overriding DEFAULT_BOT_RIGHTS), or None for a member."""
        state = self.chat_state(chat_id)
        state.bot_rights = None if rights is None else {**builders.DEFAULT_BOT_RIGHTS, **rights}

    def kick_bot(self, chat_id: int, *, status: str = "kicked") -> None:
        """Remove the bot from a group ("kicked" or "left"): its calls on that chat then get 403."""
        if status not in ("kicked", "left"):
            raise ValueError("status must be 'kicked' or 'left'")
        state = self.chat_state(chat_id)
        state.bot_status, state.bot_rights = status, None

    def chat_state(self, chat_id: int) -> ChatState:
        """The chat's state; a group id not seen before becomes a supergroup, a positive id a private chat."""
        state = self.chats.get(chat_id)
        if state is not None:
            return state
        if chat_id > 0:
            self.user(chat_id)
            return self._private_chat(chat_id)
        self.add_chat(chat_id)
        return self.chats[chat_id]

    def _private_chat(self, user_id: int) -> ChatState:
        state = self.chats.get(user_id)
        if state is None:
            user = self.user(user_id)
            chat = builders.chat_json(
                user_id,
                "private",
                first_name=user["first_name"],
                last_name=user.get("last_name"),
                username=user.get("username"),
            )
            state = ChatState(chat=chat, members={user_id})
            self.chats[user_id] = state
        return state

    # --- messages ----------------------------------------------------------------------------

    def get_message(self, chat_id: int, message_id: int) -> StoredMessage | None:
        """A message the emulator knows of (injected or sent), deleted or not."""
        state = self.chats.get(chat_id)
        return None if state is None else state.messages.get(message_id)

    def is_deleted(self, chat_id: int, message_id: int) -> bool:
        """Whether the bot deleted this message (banChatMember with revoke_messages counts)."""
        stored = self.get_message(chat_id, message_id)
        return stored is not None and stored.deleted

    def messages(self, chat_id: int, *, include_deleted: bool = True) -> list[JSON]:
        """Every message in a chat, oldest first."""
        state = self.chats.get(chat_id)
        if state is None:
            return []
        return [m.data for m in state.messages.values() if include_deleted or not m.deleted]

    def deleted_at(self, chat_id: int, message_id: int) -> float | None:
        """time.monotonic() of the call that deleted this message (None: not deleted)."""
        stored = self.get_message(chat_id, message_id)
        return None if stored is None else stored.deleted_at

    def deletions(self) -> list[tuple[int, int, float]]:
        """(chat, message, time) of each message a deleteMessage or deleteMessages call deleted, in call
        order, with the call that deleted it: a message a later call named again (deleteMessages skips
        those already gone) is listed once."""
        out: list[tuple[int, int, float]] = []
        for call in self._all_calls:
            if call.status != 200 or call.method not in ("deleteMessage", "deleteMessages"):
                continue
            chat_id = int(call.params.get("chat_id", 0))
            named = call.params.get("message_ids") if call.method == "deleteMessages" else None
            ids = named if isinstance(named, list) else [call.params.get("message_id", 0)]
            for raw in ids:
                stored = self.get_message(chat_id, int(raw))
                if stored is not None and stored.deleted_at == call.at:
                    out.append((chat_id, int(raw), call.at))
        return out

    def sent(self, chat_id: int | None = None) -> list[JSON]:
        """Messages the bot sent (sendMessage, sendDocument), oldest first, as they are now."""
        return [m.data for m in self._sent if chat_id is None or m.data["chat"]["id"] == chat_id]

    @property
    def sent_count(self) -> int:
        """How many messages the bot has sent (all chats); cheap enough to poll in wait_for."""
        return len(self._sent)

    def _store(self, state: ChatState, fields: JSON, *, from_bot: bool) -> JSON:
        message_id = state.next_message_id
        state.next_message_id += 1
        data: JSON = {"message_id": message_id, **fields, "chat": state.chat}
        data.setdefault("date", int(time.time()))
        stored = StoredMessage(data=data, from_bot=from_bot)
        state.messages[message_id] = stored
        if from_bot:
            self._sent.append(stored)
        return data

    def _reply_target(self, state: ChatState, reply_to: int | JSON | None) -> JSON | None:
        if reply_to is None:
            return None
        message_id = reply_to["message_id"] if isinstance(reply_to, dict) else reply_to
        stored = state.messages.get(int(message_id))
        if stored is None:
            return dict(reply_to) if isinstance(reply_to, dict) else None
        # Telegram never nests a reply's own reply_to_message
        return {k: v for k, v in stored.data.items() if k != "reply_to_message"}

    def _user_ref(self, ref: int | JSON) -> JSON:
        return dict(ref) if isinstance(ref, dict) else self.user(ref)

    def _chat_ref(self, ref: int | JSON) -> JSON:
        if isinstance(ref, dict):
            return dict(ref)
        state = self.chats.get(ref)
        return state.chat if state is not None else builders.chat_json(ref, "channel")

    # --- update injection --------------------------------------------------------------------

    def push_update(self, payload: JSON) -> JSON:
        """Queue a raw update (update_id is assigned); returns the full update."""
        update = {"update_id": next(self._update_ids), **payload}
        self._updates.append(update)
        self._last_update = update
        if self._update_waiters:
            waiters, self._update_waiters = self._update_waiters, []
            _wake_all(waiters)
        return update

    def message(
        self,
        chat_id: int,
        user_id: int | None = None,
        text: str | None = None,
        caption: str | None = None,
        photo: bool = False,
        video: bool = False,
        document: bool | JSON = False,
        entities: list[JSON] | None = None,
        reply_to: int | JSON | None = None,
        forward_origin: int | str | JSON | None = None,
        via_bot: int | JSON | None = None,
        reply_markup: JSON | None = None,
        sender_chat: int | JSON | None = None,
        new_chat_members: list[int | JSON] | None = None,
        thread_id: int | None = None,
        *,
        date: int | None = None,
        push: bool = True,
        **extra: Any,
    ) -> JSON:
        """Queue a `message` update from a user in a chat; returns the Message dict.

        Text starting with "/" gets its bot_command entity. `entities` apply to the text, or to the
        caption of a photo/video/document. `forward_origin`: a user id, a hidden user's name, or a
        MessageOrigin dict. `sender_chat`: the group itself (anonymous admin, from GroupAnonymousBot)
        or a channel (from Channel_Bot). `extra` keys are copied into the message. `push=False`
        stores the message without queuing an update (build one with `update(...)`).
        """
        state = self.chat_state(chat_id)
        fields: JSON = {}
        if sender_chat is not None:
            sender = self._chat_ref(sender_chat)
            fields["from"] = dict(
                builders.GROUP_ANONYMOUS_BOT if sender["id"] == chat_id else builders.CHANNEL_BOT
            )
            fields["sender_chat"] = sender
        else:
            if user_id is None:
                raise ValueError("message() needs a user_id or a sender_chat")
            fields["from"] = self.user(user_id)
            if state.is_group and user_id not in state.admins and user_id != state.owner:
                state.members.add(user_id)
        if date is not None:
            fields["date"] = date
        if thread_id is not None:
            fields["message_thread_id"] = thread_id
            fields["is_topic_message"] = True
        if forward_origin is not None:
            fields["forward_origin"] = self._forward_origin(forward_origin)
        reply = self._reply_target(state, reply_to)
        if reply is not None:
            fields["reply_to_message"] = reply
        if via_bot is not None:
            bot = self._user_ref(via_bot)
            bot["is_bot"] = True
            fields["via_bot"] = bot
        if new_chat_members:
            users = [self._user_ref(u) for u in new_chat_members]
            fields["new_chat_members"] = users
            if state.is_group:
                for user in users:
                    state.members.add(int(user["id"]))
                    state.banned.pop(int(user["id"]), None)
        file_id = f"f{next(self._file_ids)}"
        if photo:
            fields["photo"] = builders.photo_json(file_id)
        if video:
            fields["video"] = builders.video_json(file_id)
        if document:
            fields["document"] = (
                dict(document)
                if isinstance(document, dict)
                else builders.document_json(file_id, "file.pdf", "application/pdf", 4096)
            )
        if text is not None:
            fields["text"] = text
            text_entities = self._entities(text, entities)
            if text_entities:
                fields["entities"] = text_entities
        if caption is not None:
            fields["caption"] = caption
            caption_entities = self._entities(caption, entities if text is None else None)
            if caption_entities:
                fields["caption_entities"] = caption_entities
        if reply_markup is not None:
            fields["reply_markup"] = reply_markup
        fields.update(extra)
        data = self._store(state, fields, from_bot=False)
        if push:
            self.push_update({"message": data})
        return data

    def send_message(self, chat: int | JSON, user: int | JSON | None, text: str | None, **extra: Any) -> JSON:
        """`message()` taking ids or User/Chat dicts (a dict user is registered): the brief's spelling."""
        chat_id = int(chat["id"]) if isinstance(chat, dict) else chat
        if isinstance(chat, dict) and chat_id not in self.chats:
            self.add_chat(chat_id, chat.get("title"), chat.get("type", "supergroup"))
        user_id = None
        if isinstance(user, dict):
            user_id = int(user["id"])
            self.users.setdefault(user_id, dict(user))
        elif user is not None:
            user_id = user
        return self.message(chat_id, user_id, text, **extra)

    def channel_post(
        self, channel_id: int, text: str | None = None, *, title: str | None = None, **kwargs: Any
    ) -> JSON:
        """Queue a `channel_post` update: a post in a channel the bot is in (sender_chat is the channel)."""
        state = self.chats.get(channel_id)
        if state is None:
            self.add_chat(channel_id, title, "channel")
            state = self.chats[channel_id]
        fields: JSON = {"sender_chat": state.chat}
        if text is not None:
            fields["text"] = text
        data = self._store(state, {**fields, **kwargs}, from_bot=False)
        self.push_update({"channel_post": data})
        return data

    def command(self, chat_id: int, user_id: int, command: str, *args: str, **kwargs: Any) -> JSON:
        """Queue "/command args" (bot_command entity included); "@bot" is appended with mention=True."""
        mention = kwargs.pop("mention", False)
        name = command.lstrip("/")
        if mention:
            name = f"{name}@{self.bot_user['username']}"
        return self.message(chat_id, user_id, " ".join([f"/{name}", *args]), **kwargs)

    def private_message(self, user_id: int, text: str | None = None, **kwargs: Any) -> JSON:
        """Queue a message from a user to the bot in their private chat; returns the Message dict."""
        return self.message(user_id, user_id, text, **kwargs)

    def edit(
        self, chat_id: int, message_id: int, text: str | None = None, *, caption: str | None = None
    ) -> JSON:
        """Queue an `edited_message` update for a known message; returns the edited Message dict."""
        state = self.chat_state(chat_id)
        stored = state.messages.get(message_id)
        if stored is None:
            raise KeyError(f"no message {message_id} in chat {chat_id}")
        data = dict(stored.data)
        if text is not None:
            data["text"] = text
            data.pop("entities", None)
            entities = self._entities(text, None)
            if entities:
                data["entities"] = entities
        if caption is not None:
            data["caption"] = caption
            data.pop("caption_entities", None)
            caption_entities = self._entities(caption, None)
            if caption_entities:
                data["caption_entities"] = caption_entities
        data["edit_date"] = int(time.time())
        stored.data = data
        self.push_update({"edited_message": data})
        return data

    def _entities(self, text: str, given: list[JSON] | None) -> list[JSON]:
        if not self.auto_entities:
            return list(given) if given is not None else builders.command_entities(text)
        return builders.merge_entities(list(given or ()), builders.auto_entities(text))

    def callback(self, user_id: int, message: JSON, data: str) -> JSON:
        """Queue a `callback_query` update: a user pressed a button on `message`; returns the query."""
        query_id = str(next(self._callback_ids))
        self._open_callbacks.add(query_id)
        query: JSON = {
            "id": query_id,
            "from": self.user(user_id),
            "message": message,
            "chat_instance": str(abs(int(message["chat"]["id"]))),
            "data": data,
        }
        self.push_update({"callback_query": query})
        return query

    def _forward_origin(self, origin: int | str | JSON) -> JSON:
        now = int(time.time())
        if isinstance(origin, dict):
            return dict(origin)
        if isinstance(origin, str):
            return {"type": "hidden_user", "date": now, "sender_user_name": origin}
        if origin < 0:
            return {"type": "channel", "date": now, "chat": self._chat_ref(origin), "message_id": 1}
        return {"type": "user", "date": now, "sender_user": self.user(origin)}

    @property
    def pending_updates(self) -> list[JSON]:
        """Updates not yet confirmed by a getUpdates offset (a copy: O(pending))."""
        return list(self._updates)

    @property
    def pending_count(self) -> int:
        """How many updates are not yet confirmed."""
        return len(self._updates)

    @property
    def polls_waiting(self) -> int:
        """How many getUpdates calls are blocked in a long poll right now (the bot is listening)."""
        return len(self._update_waiters)

    @property
    def last_update(self) -> JSON | None:
        """The update queued last (confirmed or not); O(1)."""
        return self._last_update

    def served_at(self, update_id: int) -> float | None:
        """time.monotonic() when getUpdates first returned this update (None: not yet)."""
        return self._served_at.get(update_id)

    # --- long polling (used by methods.get_updates) --------------------------------------

    def _confirm(self, offset: int) -> None:
        updates = self._updates
        if offset < 0:
            while len(updates) > -offset:
                updates.popleft()
            return
        while updates and updates[0]["update_id"] < offset:
            updates.popleft()

    def _batch(self, limit: int) -> list[JSON]:
        batch = list(itertools.islice(self._updates, limit))
        if batch:
            now = time.monotonic()
            served = self._served_at
            for update in batch:
                served.setdefault(update["update_id"], now)
        return batch

    async def _poll(self, offset: int | None, limit: int, timeout: float) -> list[JSON]:
        if offset is not None:
            self._confirm(offset)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            batch = self._batch(limit)
            if batch or self._closing:
                return batch
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            fut: asyncio.Future[None] = loop.create_future()
            self._update_waiters.append(fut)
            try:
                await asyncio.wait_for(fut, remaining)
            except TimeoutError:
                return self._batch(limit)
            finally:
                with contextlib.suppress(ValueError):
                    self._update_waiters.remove(fut)

    def close(self) -> None:
        """Release every waiting getUpdates now (they answer with what they have)."""
        self._closing = True
        waiters, self._update_waiters = self._update_waiters, []
        _wake_all(waiters)

    def reopen(self) -> None:
        """Undo close(): getUpdates long-polls again."""
        self._closing = False

    # --- the call log ------------------------------------------------------------------------

    def calls(self, method: str | None = None) -> list[Call]:
        """Recorded calls, oldest first: all of them, or one method's (e.g. "deleteMessage")."""
        if method is None:
            return list(self._all_calls)
        return list(self._calls.get(method, ()))

    def clear_calls(self) -> None:
        """Forget the call log."""
        self._calls.clear()
        self._all_calls.clear()

    def _record(self, call: Call) -> None:
        per_method = self._calls.get(call.method)
        if per_method is None:
            per_method = self._calls[call.method] = []
        per_method.append(call)
        self._all_calls.append(call)
        if self._change_waiters:
            waiters, self._change_waiters = self._change_waiters, []
            _wake_all(waiters)

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
        """Wait until predicate() is truthy (re-checked after every call); return its value.

        Raises TimeoutError naming the predicate and the calls seen.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = predicate()
            if value:
                return value
            remaining = deadline - loop.time()
            if remaining <= 0:
                seen = {m: len(c) for m, c in self._calls.items()}
                raise TimeoutError(f"emulator: {predicate!r} still false after {timeout}s; calls: {seen}")
            fut: asyncio.Future[None] = loop.create_future()
            self._change_waiters.append(fut)
            try:
                # Also re-check now and then: injected state changes (not calls) don't wake us.
                await asyncio.wait_for(fut, min(remaining, 0.05))
            except TimeoutError:
                pass
            finally:
                with contextlib.suppress(ValueError):
                    self._change_waiters.remove(fut)

    async def wait_calls(self, method: str, n: int = 1, timeout: float = 5.0) -> list[Call]:
        """Wait until at least `n` calls of `method` were answered; returns them all."""
        try:
            await self.wait_for(lambda: len(self._calls.get(method, ())) >= n, timeout)
        except TimeoutError:
            got = len(self._calls.get(method, ()))
            seen = {m: len(c) for m, c in self._calls.items()}
            raise TimeoutError(
                f"emulator: expected {n} {method} call(s) within {timeout}s, got {got}; calls: {seen}"
            ) from None
        return self.calls(method)

    # --- faults ------------------------------------------------------------------------------

    def fail(
        self,
        method: str,
        status: int = 400,
        description: str | None = None,
        retry_after: int | None = None,
        times: int | None = 1,
    ) -> None:
        """Answer the next `times` calls of `method` ("*": any method) with an error (None: until cleared).

        429 defaults to retry_after=1; below 1 is refused: Telegram never sends it, and PTB reads
        retry_after=0 as absent (a NetworkError about "unknown parameters", not RetryAfter).
        """
        if status == 429 and retry_after is None:
            retry_after = 1
        if retry_after is not None and retry_after < 1:
            raise ValueError(f"retry_after={retry_after}: Telegram's is at least 1 s and PTB ignores 0")
        if description is None:
            description = DEFAULT_DESCRIPTIONS.get(status, f"Error {status}").format(retry_after=retry_after)
        self._faults.setdefault(method, deque()).append(Fault(status, description, retry_after, times))

    def fail_randomly(
        self,
        methods: str | Iterable[str] | None,
        rate: float,
        seed: int = 0,
        statuses: Iterable[int] = (429, 500),
        *,
        slow_rate: float = 0.0,
        slow_seconds: float = 1.0,
    ) -> None:
        """Fail a fraction `rate` of the calls of `methods` (None: every method) with one of `statuses`.

        Also answer a fraction `slow_rate` of them `slow_seconds` late. Seeded: the same sequence of
        calls meets the same faults. Replaces an earlier fail_randomly().
        """
        chosen = {methods} if isinstance(methods, str) else (None if methods is None else set(methods))
        self._random_faults = _RandomFaults(chosen, rate, seed, tuple(statuses), slow_rate, slow_seconds)

    def delay(self, method: str, seconds: float, times: int | None = None) -> None:
        """Answer the next `times` calls (None: every call) of `method` ("*": any) `seconds` late.

        0 removes the delay. A delayed call still gets its scripted fault, if any, afterwards.
        """
        if seconds > 0:
            self._delays[method] = Slowdown(seconds, times)
        else:
            self._delays.pop(method, None)

    def before(self, method: str, hook: Callable[[JSON], Any]) -> Callable[[], None]:
        """Run hook(params) (sync or async) before answering each `method` call ("*": any); returns undo.

        For checks at the moment of a call, e.g. "the incident is stored before deleteMessage". An
        ApiError raised by the hook becomes the answer; any other exception an emulator bug (500).
        """
        self._hooks.setdefault(method, []).append(hook)
        return lambda: self._hooks.get(method, []).remove(hook)

    def limit(self, method: str, count: int, seconds: float, *, per_chat: bool = True) -> None:
        """Flood control like Telegram's: more than `count` answered calls of `method` within
        `seconds` (per chat_id, or in all) get 429 with the retry_after that frees a slot.

        Telegram's own limits are about 20 messages a minute in one group and 30 a second overall:
        limit("sendMessage", 20, 60). count=0 removes the limit.
        """
        if count > 0:
            self._limits[method] = (count, seconds, per_chat)
        else:
            self._limits.pop(method, None)

    def _check_limit(self, method: str, params: JSON) -> None:
        count, seconds, per_chat = self._limits[method]
        key = (method, params.get("chat_id") if per_chat else None)
        stamps = self._limit_log.get(key)
        if stamps is None:
            stamps = self._limit_log[key] = deque()
        now = time.monotonic()
        while stamps and stamps[0] <= now - seconds:
            stamps.popleft()
        if len(stamps) >= count:
            retry_after = max(1, int(stamps[0] + seconds - now + 0.999))
            raise ApiError(429, f"Too Many Requests: retry after {retry_after}", retry_after)
        stamps.append(now)

    def clear_faults(self) -> None:
        """Remove every scripted failure, delay, flood limit and hook."""
        self._faults.clear()
        self._random_faults = None
        self._delays.clear()
        self._limits.clear()
        self._limit_log.clear()
        self._hooks.clear()

    def _take_delay(self, method: str) -> float:
        pause = 0.0
        for key in (method, "*"):
            slow = self._delays.get(key)
            if slow is not None:
                if slow.times is not None:
                    slow.times -= 1
                    if slow.times <= 0:
                        del self._delays[key]
                pause = slow.seconds
                break
        chaos = self._random_faults
        if (
            chaos is not None
            and chaos.slow_rate
            and chaos.applies(method)
            and chaos.random.random() < chaos.slow_rate
        ):
            pause = max(pause, chaos.slow_seconds)
        return pause

    def _take_fault(self, method: str) -> ApiError | None:
        for key in (method, "*"):
            queue = self._faults.get(key)
            if queue:
                fault = queue[0]
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        queue.popleft()
                return fault.error()
        chaos = self._random_faults
        if chaos is not None and chaos.rate and chaos.applies(method) and chaos.random.random() < chaos.rate:
            status = chaos.random.choice(chaos.statuses)
            retry_after = 1 if status == 429 else None
            description = DEFAULT_DESCRIPTIONS.get(status, f"Error {status}")
            return ApiError(status, description.format(retry_after=retry_after), retry_after)
        return None

    # --- dispatch ----------------------------------------------------------------------------

    async def handle(self, method: str, params: JSON, *, token: str | None = None) -> tuple[int, JSON]:
        """Answer one Bot API call: (HTTP status, JSON body). Every call is recorded."""
        entry = METHODS.get(method.lower())
        name = entry[0] if entry is not None else method
        call = Call(name, params, time.monotonic())
        try:
            if self.check_token and token != self.token:
                raise ApiError(401, "Unauthorized")
            if self._hooks:
                for hook in (*self._hooks.get(name, ()), *self._hooks.get("*", ())):
                    outcome = hook(params)
                    if inspect.isawaitable(outcome):
                        await outcome
            pause = self._take_delay(name) if (self._delays or self._random_faults) else 0.0
            if pause:
                await asyncio.sleep(pause)
            fault = self._take_fault(name) if (self._faults or self._random_faults) else None
            if fault is not None:
                raise fault
            if entry is None:
                # Telegram's answer; never 404, which PTB would report as InvalidToken
                raise ApiError(400, "Not Found: method not found")
            if self._limits and name in self._limits:
                self._check_limit(name, params)
            self.now = call.at
            result = entry[1](self, params)
            if inspect.isawaitable(result):
                result = await result
            status, body = 200, {"ok": True, "result": result}
        except ApiError as exc:
            call.error, call.status = exc.description, exc.status
            status, body = exc.status, exc.body()
        except asyncio.CancelledError:
            call.error, call.status = "cancelled", 499
            self._record(call)
            raise
        except Exception as exc:
            log.exception("emulator bug answering %s", name)
            self.internal_errors.append(exc)
            call.error, call.status = f"emulator bug: {exc!r}", 500
            status, body = 500, ApiError(500, f"Internal Server Error: emulator bug: {exc!r}").body()
        self._record(call)
        return status, body

    # --- PTB clients and serving -------------------------------------------------------------

    def request(self, **kwargs: Any) -> Any:
        """A PTB HTTPXRequest that reaches this emulator in-process (httpx ASGITransport)."""
        import httpx
        from telegram.request import HTTPXRequest

        return HTTPXRequest(httpx_kwargs={"transport": httpx.ASGITransport(app=self.app)}, **kwargs)

    def application_builder(self, token: str | None = None, *, loopback: bool = False) -> Any:
        """A PTB ApplicationBuilder wired to this emulator: in-process, or over serve()'s loopback."""
        from telegram.ext import ApplicationBuilder

        builder = ApplicationBuilder().token(token or self.token)
        if loopback:
            if self.base_url is None or self.base_file_url is None:
                raise RuntimeError("application_builder(loopback=True) needs `async with emu.serve()`")
            return builder.base_url(self.base_url).base_file_url(self.base_file_url)
        return builder.request(self.request()).get_updates_request(self.request())

    def make_bot(self, token: str | None = None, *, loopback: bool = False) -> Any:
        """A PTB Bot wired to this emulator (call `await bot.initialize()` or use `async with bot`)."""
        from telegram import Bot

        if loopback:
            if self.base_url is None or self.base_file_url is None:
                raise RuntimeError("make_bot(loopback=True) needs `async with emu.serve()`")
            return Bot(token or self.token, base_url=self.base_url, base_file_url=self.base_file_url)
        return Bot(token or self.token, request=self.request(), get_updates_request=self.request())

    @contextlib.asynccontextmanager
    async def serve(
        self, host: str = "127.0.0.1", port: int = 0, *, server: str = "builtin"
    ) -> AsyncIterator[str]:
        """Serve over HTTP in this event loop; yields the PTB base_url (".../bot").

        `server`: "builtin" (bot.emulator.server, lean) or "uvicorn" (the ASGI app under uvicorn).
        """
        if server not in ("builtin", "uvicorn"):
            raise ValueError("server must be 'builtin' or 'uvicorn'")
        # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on such sockets; without it every answer
        # waits ~40 ms on Nagle and delayed ACKs
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        stop: Callable[[], Awaitable[None]]
        if server == "builtin":
            from bot.emulator.server import BuiltinServer

            builtin = BuiltinServer(self)
            await builtin.start(sock)
            stop = builtin.close
        else:
            stop = await self._start_uvicorn(sock)
        try:
            bound_host, bound_port = sock.getsockname()[:2]
            self.base_url = f"http://{bound_host}:{bound_port}/bot"
            self.base_file_url = f"http://{bound_host}:{bound_port}/file/bot"
            self._closing = False
            yield self.base_url
        finally:
            self.close()  # release long polls so shutdown is quick
            await stop()
            sock.close()
            self.base_url = self.base_file_url = None
            self.reopen()

    async def _start_uvicorn(self, sock: socket.socket) -> Callable[[], Awaitable[None]]:
        import uvicorn

        class _Server(uvicorn.Server):
            # The host process (tests, demo, bench) keeps its own signal handling.
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield

        config = uvicorn.Config(
            self.app,
            lifespan="off",
            log_config=None,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=2,
        )
        server = _Server(config)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("emulator: uvicorn stopped before it started")
            await asyncio.sleep(0.005)

        async def stop() -> None:
            server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await task

        return stop
