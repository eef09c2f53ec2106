"""Two `qinglang run --webhook` worker processes on loopback share one real PostgreSQL database; these
tests are their reverse proxy (bot/bench_workers.py).

The spread: 400 updates (QINGLANG_WORKERS_UPDATES=10000 for the issue's full run, as `qinglang bench
workers` does), 20% solicitations across several chats, alternated by update id, every tenth delivered to
both workers, while three batchers claim report batches."""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from pathlib import Path

from sqlalchemy import func, select

import storage
from bot.bench_workers import CHATS, SPAM, SPAMMERS, run_workers, serve_workers
from storage.models import Incident

UPDATES = int(os.environ.get("QINGLANG_WORKERS_UPDATES", "400"))


async def test_two_webhook_workers_share_postgresql(postgres_url: str, tmp_path: Path) -> None:
    run = await run_workers(
        db_url=postgres_url,
        n_workers=2,
        updates=UPDATES,
        workdir=tmp_path,
        spam_share=0.2,
        duplicate_every=10,  # UPDATES / 10 updates POSTed to both workers
        concurrency=16,
        time_limit=max(240, UPDATES / 10),  # a correctness test: a busy machine must not cut it short
        batchers=3,
    )
    assert run.problems() == [], run.problems()
    assert run.updates == UPDATES and run.posts == UPDATES + run.duplicates == UPDATES * 11 // 10
    assert run.solicitations == UPDATES // 5 and run.solicitations_missing == 0
    assert run.incidents_twice == 0, "one incident per flagged message, duplicates included"
    assert run.incidents >= run.solicitations
    assert run.deletes_repeated == 0, "one delete per flagged message, duplicates included"
    assert run.verify_exit == 0, "qinglang verify: every chain intact"
    assert run.batches > 1 and run.batch_overlaps == 0 and run.queued_unclaimed == 0


async def test_update_delivered_to_both_workers_at_once_is_acted_on_once(
    postgres_url: str, tmp_path: Path
) -> None:
    async with serve_workers(db_url=postgres_url, n_workers=2, workdir=tmp_path) as workers:
        emu = workers.emu
        # The worker whose record created the incident is still deleting when the other one finds it
        # recorded without an outcome: that one must not delete too.
        emu.delay("deleteMessage", 0.5)
        messages = [emu.message(chat, SPAMMERS[i], SPAM[i], push=False) for i, chat in enumerate(CHATS[:4])]
        updates = [{"update_id": 700 + i, "message": m} for i, m in enumerate(messages)]
        statuses = await asyncio.gather(*(workers.post(w, u) for u in updates for w in (0, 1)))
        assert statuses == [200] * 8
        keys = [(m["chat"]["id"], m["message_id"]) for m in messages]
        await emu.wait_for(lambda: all(emu.is_deleted(*key) for key in keys), timeout=60)
        await asyncio.sleep(1.5)  # room for a second, delayed delete to arrive
    assert workers.errors == []
    deletes = Counter(
        (int(c.params["chat_id"]), int(c.params["message_id"])) for c in emu.calls("deleteMessage")
    )
    assert deletes == dict.fromkeys(keys, 1)
    db = await storage.open_database(postgres_url)
    try:
        async with db.sessionmaker() as session:
            assert await session.scalar(select(func.count()).select_from(Incident)) == len(messages)
    finally:
        await db.close()
