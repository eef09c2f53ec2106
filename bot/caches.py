"""Small time-bounded caches in front of the database and the Bot API.

Both are per process. With several workers (webhooks on PostgreSQL), a change made by one worker reaches
the others within the TTL; the worker that made it calls `invalidate` to see it at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import storage
from bot.telegram_io import SafeTelegram

log = logging.getLogger(__name__)

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class ChatPolicy:
    """A detached snapshot of a chat's stored settings (see storage's ChatSettings)."""

    chat_id: int
    mode: str
    thresholds: dict[str, float]
    strike_limit: int
    strike_window_seconds: int
    mute_seconds: int
    ban_on_limit: bool
    report_chat_id: int | None
    retention_days: int
    language: str
    trusted_user_ids: frozenset[int] = field(default_factory=frozenset)

    @classmethod
    def from_row(cls, row: Any) -> ChatPolicy:
        return cls(
            chat_id=row.chat_id,
            mode=row.mode,
            thresholds=dict(row.thresholds or {}),
            strike_limit=row.strike_limit,
            strike_window_seconds=row.strike_window_seconds,
            mute_seconds=row.mute_seconds,
            ban_on_limit=bool(row.ban_on_limit),
            report_chat_id=row.report_chat_id,
            retention_days=row.retention_days,
            language=row.language or "zh",
            trusted_user_ids=frozenset(row.trusted_user_ids or ()),
        )


class ChatSettingsCache:
    """`get(chat_id)` reads (creating on first sight) a chat's settings, cached for `ttl` seconds."""

    def __init__(self, db: Any, *, default_mode: str, ttl: float, clock: Clock = time.monotonic) -> None:
        self._db = db
        self._default_mode = default_mode
        self._ttl = ttl
        self._clock = clock
        self._entries: dict[int, tuple[float, ChatPolicy]] = {}

    async def get(self, chat_id: int) -> ChatPolicy:
        now = self._clock()
        hit = self._entries.get(chat_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        async with self._db.sessionmaker.begin() as session:
            row = await storage.get_chat_settings(
                session=session, chat_id=chat_id, default_mode=self._default_mode
            )
            policy = ChatPolicy.from_row(row)
        self._entries[chat_id] = (now + self._ttl, policy)
        return policy

    def peek(self, chat_id: int) -> ChatPolicy | None:
        """The chat's settings if cached and fresh, without reading the database (None otherwise)."""
        hit = self._entries.get(chat_id)
        return hit[1] if hit is not None and hit[0] > self._clock() else None

    def invalidate(self, chat_id: int | None = None) -> None:
        """Forget one chat's settings (after a change), or every chat's."""
        if chat_id is None:
            self._entries.clear()
        else:
            self._entries.pop(chat_id, None)


@dataclass(frozen=True, slots=True)
class ChatAdmins:
    """A chat's administrators as last seen; `ok` is False when Telegram would not tell us."""

    user_ids: frozenset[int]
    human_ids: tuple[int, ...]  # admins who are people, in Telegram's order (owner first)
    bot_rights: dict[str, bool]  # this bot's own admin rights, empty if it is not an admin
    ok: bool


class AdminCache:
    """getChatAdministrators, cached per chat; a failed lookup is retried after a short pause."""

    FAILURE_TTL = 30.0

    def __init__(self, tg: SafeTelegram, *, ttl: float, clock: Clock = time.monotonic) -> None:
        self._tg = tg
        self._ttl = ttl
        self._clock = clock
        self._entries: dict[int, tuple[float, ChatAdmins]] = {}

    async def get(self, chat_id: int) -> ChatAdmins:
        now = self._clock()
        hit = self._entries.get(chat_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        result = await self._tg.get_chat_administrators(chat_id)
        if result.ok:
            members = tuple(result.value)
            bot_id = self._tg.bot.id
            rights: dict[str, bool] = {}
            for m in members:
                if m.user.id == bot_id:
                    rights = {
                        "can_delete_messages": bool(getattr(m, "can_delete_messages", False)),
                        "can_restrict_members": bool(getattr(m, "can_restrict_members", False)),
                    }
            admins = ChatAdmins(
                user_ids=frozenset(m.user.id for m in members),
                human_ids=tuple(m.user.id for m in members if not m.user.is_bot),
                bot_rights=rights,
                ok=True,
            )
            self._entries[chat_id] = (now + self._ttl, admins)
            return admins
        log.warning("chat %s: could not list admins (%s)", chat_id, result.error)
        # Keep acting on what we knew; retry soon rather than on every message.
        stale = hit[1] if hit is not None else ChatAdmins(frozenset(), (), {}, ok=False)
        self._entries[chat_id] = (now + min(self._ttl, self.FAILURE_TTL), stale)
        return stale

    def peek(self, chat_id: int) -> ChatAdmins | None:
        """The chat's admins if a successful lookup is cached and fresh (None otherwise)."""
        hit = self._entries.get(chat_id)
        return hit[1] if hit is not None and hit[0] > self._clock() and hit[1].ok else None

    async def is_admin(self, chat_id: int, user_id: int) -> bool:
        return user_id in (await self.get(chat_id)).user_ids

    def invalidate(self, chat_id: int | None = None) -> None:
        """Forget one chat's admin list (e.g. after a chat_member update), or every chat's."""
        if chat_id is None:
            self._entries.clear()
        else:
            self._entries.pop(chat_id, None)
