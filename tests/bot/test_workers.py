"""Two `qinglang run --webhook` worker processes on loopback share one real PostgreSQL database; this test
is their reverse proxy (bot/bench_workers.py): ~1,000 updates, 20% solicitations across several chats,
alternated by update id, some delivered to both workers, while three batchers claim report batches.
`qinglang bench workers` runs the same harness with 10,000 updates."""

from __future__ import annotations

from pathlib import Path

from bot.bench_workers import run_workers


async def test_two_webhook_workers_share_postgresql(postgres_url: str, tmp_path: Path) -> None:
    run = await run_workers(
        db_url=postgres_url,
        n_workers=2,
        updates=1000,
        workdir=tmp_path,
        spam_share=0.2,
        duplicate_every=20,  # 50 updates POSTed to both workers
        concurrency=16,
        time_limit=240,  # a correctness test: a busy machine must not cut it short
        batchers=3,
    )
    assert run.problems() == [], run.problems()
    assert run.updates == 1000 and run.posts == 1000 + run.duplicates == 1050
    assert run.solicitations == 200 and run.solicitations_missing == 0
    assert run.incidents_twice == 0, "one incident per flagged message, duplicates included"
    assert run.incidents >= run.solicitations
    assert run.verify_exit == 0, "qinglang verify: every chain intact"
    assert run.batches > 1 and run.batch_overlaps == 0 and run.queued_unclaimed == 0
