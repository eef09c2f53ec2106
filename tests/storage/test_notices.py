"""Pending deletions (storage/notices.py): the bot's deletion notices, kept until removed."""

from __future__ import annotations

from datetime import timedelta

from storage_helpers import CHAT, T0

import storage
from storage.notices import add_pending_deletion, list_pending_deletions, remove_pending_deletion


async def test_pending_deletions_are_kept_listed_by_time_and_removed(db: storage.Database) -> None:
    big_chat = -1009999999999999  # beyond a 32-bit INTEGER, as real supergroup ids are
    async with db.sessionmaker.begin() as s:
        await add_pending_deletion(session=s, chat_id=CHAT, message_id=7, delete_at=T0 + timedelta(minutes=2))
        await add_pending_deletion(session=s, chat_id=big_chat, message_id=2**40, delete_at=T0)
        # the same notice again: one row, the new time
        await add_pending_deletion(session=s, chat_id=CHAT, message_id=7, delete_at=T0 + timedelta(minutes=1))
    async with db.sessionmaker() as s:
        rows = await list_pending_deletions(session=s)
        due = await list_pending_deletions(session=s, due_before=T0 + timedelta(seconds=30))
    assert [(r.chat_id, r.message_id, r.delete_at) for r in rows] == [
        (big_chat, 2**40, T0),
        (CHAT, 7, T0 + timedelta(minutes=1)),
    ]
    assert [r.message_id for r in due] == [2**40]
    async with db.sessionmaker.begin() as s:
        assert await remove_pending_deletion(session=s, chat_id=CHAT, message_id=7)
        assert not await remove_pending_deletion(session=s, chat_id=CHAT, message_id=7)
    async with db.sessionmaker() as s:
        assert [r.chat_id for r in await list_pending_deletions(session=s)] == [big_chat]
