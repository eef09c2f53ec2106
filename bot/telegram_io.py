"""Telegram calls that never raise: every outcome, good or bad, comes back as an `ApiResult`.

Flood control (429 `retry_after`) is honoured up to a bound, timeouts and network errors are retried a
bounded number of times, and a `BadRequest`/`Forbidden` becomes a recorded error kind instead of an
exception, so a failed delete can never lose an incident or stop the bot.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import warnings
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from telegram import Bot, ChatMember, ChatPermissions, InlineKeyboardMarkup, Message
from telegram.error import BadRequest, ChatMigrated, Forbidden, NetworkError, RetryAfter, TelegramError

log = logging.getLogger(__name__)

ErrorKind = Literal[
    "gone", "no_rights", "forbidden", "bad_request", "flood", "network", "migrated", "error", "unexpected"
]

# Fragments of Bot API error descriptions (lower-cased) that mean "the bot lacks a right".
_NO_RIGHTS = (
    "not enough rights",
    "can't be deleted",
    "chat_admin_required",
    "need administrator rights",
    "have no rights",
    "not an administrator",
    "can't remove chat owner",
    "user is an administrator",
)
_GONE = ("not found", "message_id_invalid")


@dataclass(frozen=True, slots=True)
class ApiResult:
    """What one Bot API call came to. `error` is Telegram's own description when it failed."""

    ok: bool
    value: Any = None
    error: str | None = None
    kind: ErrorKind | None = None
    attempts: int = 1
    note: str | None = None

    def detail(self) -> dict[str, Any]:
        """A JSON-ready summary for the incident's event log."""
        out: dict[str, Any] = {"attempts": self.attempts}
        if self.error is not None:
            out["error"] = self.error
            out["kind"] = self.kind
        if self.note:
            out["note"] = self.note
        return out


def classify_bad_request(description: str) -> ErrorKind:
    """Map a BadRequest description to an error kind ("gone", "no_rights" or "bad_request")."""
    text = description.lower()
    if any(f in text for f in _NO_RIGHTS):
        return "no_rights"
    if any(f in text for f in _GONE):
        return "gone"
    return "bad_request"


def _retry_after_seconds(exc: RetryAfter) -> float:
    with warnings.catch_warnings():  # PTB 22 warns while retry_after migrates from int to timedelta
        warnings.simplefilter("ignore")
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, dt.timedelta) else float(value)


class SafeTelegram:
    """The few Bot API calls moderation needs, each wrapped in the same bounded retry policy."""

    def __init__(
        self,
        bot: Bot,
        *,
        retries: int = 3,
        max_retry_after: float = 30.0,
        backoff: float = 0.5,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_api_error: Callable[[str, ErrorKind], None] | None = None,
    ) -> None:
        self.bot = bot
        self.on_api_error = on_api_error  # called with (method, kind) for each failed call: metrics
        self.retries = retries
        self.max_retry_after = max_retry_after
        self.backoff = backoff
        self._sleep = sleep

    async def call(self, what: str, request: Callable[[], Awaitable[Any]]) -> ApiResult:
        """Run `request` with bounded retries; never raises (except cancellation)."""
        result = await self._call(what, request)
        if not result.ok and result.kind is not None and self.on_api_error is not None:
            self.on_api_error(what, result.kind)
        return result

    async def _call(self, what: str, request: Callable[[], Awaitable[Any]]) -> ApiResult:
        attempts = 0
        timed_out_before = False
        while True:
            attempts += 1
            try:
                value = await request()
            except RetryAfter as exc:
                wait = _retry_after_seconds(exc)
                if wait > self.max_retry_after or attempts > self.retries:
                    log.warning("%s: flood control, retry_after=%ss, giving up", what, wait)
                    return ApiResult(False, error=exc.message, kind="flood", attempts=attempts)
                log.info("%s: flood control, waiting %ss", what, wait)
                await self._sleep(wait)
                continue
            except BadRequest as exc:
                kind = classify_bad_request(exc.message)
                if kind == "gone" and timed_out_before:
                    # Our earlier attempt most likely went through before its answer was lost.
                    return ApiResult(True, attempts=attempts, note=f"after a timeout: {exc.message}")
                return ApiResult(False, error=exc.message, kind=kind, attempts=attempts)
            except Forbidden as exc:
                return ApiResult(False, error=exc.message, kind="forbidden", attempts=attempts)
            except ChatMigrated as exc:
                return ApiResult(False, error=str(exc), kind="migrated", attempts=attempts)
            except NetworkError as exc:  # includes TimedOut and 5xx answers
                timed_out_before = True
                if attempts > self.retries:
                    log.warning("%s: %s after %d attempts", what, exc.message, attempts)
                    return ApiResult(False, error=exc.message, kind="network", attempts=attempts)
                await self._sleep(self.backoff * 2 ** (attempts - 1))
                continue
            except TelegramError as exc:
                return ApiResult(False, error=exc.message, kind="error", attempts=attempts)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # fail safe: a surprise in one call must not stop the bot
                log.exception("%s: unexpected error", what)
                return ApiResult(
                    False, error=f"{type(exc).__name__}: {exc}", kind="unexpected", attempts=attempts
                )
            return ApiResult(True, value=value, attempts=attempts)

    async def delete_message(self, chat_id: int, message_id: int) -> ApiResult:
        """Delete one message."""
        return await self.call(
            "deleteMessage", lambda: self.bot.delete_message(chat_id=chat_id, message_id=message_id)
        )

    async def delete_messages(self, chat_id: int, message_ids: Sequence[int]) -> ApiResult:
        """Delete up to 100 messages of one chat in one call. Telegram skips those it cannot find and
        fails the whole call otherwise (e.g. without the right to delete), so the result is all-or-none."""
        return await self.call(
            "deleteMessages",
            lambda: self.bot.delete_messages(chat_id=chat_id, message_ids=list(message_ids)),
        )

    async def send_message(
        self,
        chat_id: int,
        text: str,
        *,
        reply_markup: InlineKeyboardMarkup | None = None,
        thread_id: int | None = None,
    ) -> ApiResult:
        """Send plain text (no parse mode: names and message text are never interpreted as markup)."""
        return await self.call(
            "sendMessage",
            lambda: self.bot.send_message(
                chat_id=chat_id,
                text=text,
                reply_markup=reply_markup,
                message_thread_id=thread_id,
                disable_web_page_preview=True,
            ),
        )

    async def edit_message_text(self, chat_id: int, message_id: int, text: str) -> ApiResult:
        """Replace a message's text (and drop its buttons)."""
        return await self.call(
            "editMessageText",
            lambda: self.bot.edit_message_text(chat_id=chat_id, message_id=message_id, text=text),
        )

    async def answer_callback(self, callback_query_id: str, text: str | None = None) -> ApiResult:
        """Answer a button press (stops the spinner in the admin's client)."""
        return await self.call(
            "answerCallbackQuery",
            lambda: self.bot.answer_callback_query(callback_query_id=callback_query_id, text=text),
        )

    async def mute(self, chat_id: int, user_id: int, seconds: float) -> ApiResult:
        """Take away every permission for `seconds` (Telegram treats < 30 s or > 366 days as forever)."""
        until = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=max(seconds, 30))
        return await self.call(
            "restrictChatMember",
            lambda: self.bot.restrict_chat_member(
                chat_id=chat_id,
                user_id=user_id,
                permissions=ChatPermissions.no_permissions(),
                until_date=until,
            ),
        )

    async def ban(self, chat_id: int, user_id: int) -> ApiResult:
        """Remove the user from the chat for good."""
        return await self.call(
            "banChatMember", lambda: self.bot.ban_chat_member(chat_id=chat_id, user_id=user_id)
        )

    async def get_chat_administrators(self, chat_id: int) -> ApiResult:
        """The chat's administrators (value: tuple of ChatMember)."""
        return await self.call(
            "getChatAdministrators", lambda: self.bot.get_chat_administrators(chat_id=chat_id)
        )


def sent_message_id(result: ApiResult) -> int | None:
    """The id of the message a successful send returned."""
    return result.value.message_id if result.ok and isinstance(result.value, Message) else None


def human_admin_ids(members: Sequence[ChatMember]) -> list[int]:
    """Ids of the admins who are people (bots cannot receive private messages from bots)."""
    return [m.user.id for m in members if not m.user.is_bot]
