"""Small builders shared by the storage tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import storage

CHAT = -1001234567890
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def new_incident(message_id: int, *, chat_id: int = CHAT, **overrides: Any) -> storage.NewIncident:
    values: dict[str, Any] = {
        "chat_id": chat_id,
        "chat_title": "测试群",
        "message_id": message_id,
        "sender_id": 777000 + message_id,
        "sender_username": "spammer",
        "sender_name": "刷单小王",
        "message_date": T0 + timedelta(seconds=message_id % 10**6),
        "received_at": T0 + timedelta(seconds=message_id % 10**6, milliseconds=250),
        "text": f"急招刷单，日结300，加V: abc{message_id}",
        "hidden_links": ["https://t.me/+abc"],
        "category": "fraud",
        "score": 0.912345678,
        "suggested_action": "delete",
        "model_version": "test-model",
        "reasons": {"terms": [{"term": "刷单", "category": "fraud", "start": 2, "end": 4}]},
        "contacts": [{"kind": "wechat", "value": f"abc{message_id}", "start": 14, "end": 20}],
    }
    values.update(overrides)
    return storage.NewIncident(**values)


async def record_many(db: storage.Database, n: int, *, start: int = 1, chat_id: int = CHAT) -> list[int]:
    ids = []
    for i in range(start, start + n):
        inc, _ = await storage.record_incident(
            sessionmaker=db.sessionmaker, incident=new_incident(i, chat_id=chat_id)
        )
        ids.append(inc.id)
    return ids
