"""`qinglang bench storage`: recording rate, exports of 100,000 incidents, two writers on PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert, text

from storage.chain import GENESIS, iso, record_hash
from storage.engine import make_engine, open_database, resolve_url
from storage.models import ChainHead, Incident, IncidentEvent, IncidentState, table_of
from storage.records import NewIncident, _incident_values, record_incident

CHAT = -1001000000001
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _incident(i: int, chat_id: int = CHAT) -> NewIncident:
    return NewIncident(
        chat_id=chat_id,
        chat_title="基准测试群",
        message_id=i,
        sender_id=100000 + i % 997,
        sender_username=f"user{i % 997}",
        sender_name="测试用户",
        message_date=T0 + timedelta(seconds=i),
        received_at=T0 + timedelta(seconds=i, milliseconds=300),
        text=f"急招刷单员，日结300-800，在家可做，加V：shuadan{i}，名额有限！" * 2,
        hidden_links=["https://t.me/+invite"],
        category="fraud",
        score=0.934512,
        suggested_action="delete",
        model_version="bench",
        reasons={"terms": [{"term": "刷单", "category": "fraud", "start": 2, "end": 4}], "features": []},
        contacts=[{"kind": "wechat", "value": f"shuadan{i}", "start": 26, "end": 35}],
    )


async def bench_record(url: str, n: int) -> float:
    """Incidents/s, one writer, each committed durably before the next."""
    db = await open_database(url)
    try:
        t = time.perf_counter()
        for i in range(n):
            await record_incident(sessionmaker=db.sessionmaker, incident=_incident(i))
        return n / (time.perf_counter() - t)
    finally:
        await db.close()


async def bulk_fill(url: str, n: int, chat_id: int = CHAT) -> None:
    """Fill a chain fast (batched inserts, hashes computed here): only for benchmarks."""
    db = await open_database(url)
    try:
        seq, prev = 0, GENESIS
        now = datetime.now(UTC)
        batch = 2000
        for start in range(0, n, batch):
            incs, evs, states = [], [], []
            for i in range(start, min(n, start + batch)):
                v = _incident_values(_incident(i, chat_id))
                seq += 1
                v.update(seq=seq, recorded_at=now, prev_hash=prev)
                v["record_hash"] = prev = record_hash(
                    "incident", {k: iso(x) if isinstance(x, datetime) else x for k, x in v.items()}, prev
                )
                incs.append(v)
            async with db.engine.begin() as conn:
                result = await conn.execute(
                    insert(table_of(Incident)).returning(table_of(Incident).c.id), incs
                )
                new_ids = [r[0] for r in result]
                for v, inc_id in zip(incs, new_ids, strict=True):
                    seq += 1
                    e = {
                        "incident_id": inc_id, "chat_id": chat_id, "seq": seq, "message_id": v["message_id"],
                        "kind": "action", "value": "deleted", "actor": "model", "detail": None,
                        "batch_id": None, "recorded_at": now, "prev_hash": prev,
                    }  # fmt: skip
                    row = {
                        "chat_id": chat_id, "seq": seq, "incident_id": inc_id, "message_id": v["message_id"],
                        "event_kind": "action", "event_value": "deleted", "event_actor": "model",
                        "event_detail": None, "batch_id": None, "recorded_at": iso(now),
                    }  # fmt: skip
                    e["record_hash"] = prev = record_hash("event", row, prev)
                    evs.append(e)
                    states.append(
                        {"incident_id": inc_id, "chat_id": chat_id, "action_taken": "deleted",
                         "legal_hold": False, "updated_at": now}
                    )  # fmt: skip
                # events must follow their incidents in seq: incidents of a batch first, then events
                await conn.execute(insert(table_of(IncidentEvent)), evs)
                await conn.execute(insert(table_of(IncidentState)), states)
        async with db.engine.begin() as conn:
            await conn.execute(
                insert(table_of(ChainHead)).values(
                    chat_id=chat_id, last_seq=seq, last_hash=prev, updated_at=now
                )
            )
    finally:
        await db.close()


def export_child(url: str, fmt: str, out: str) -> None:
    """Run in a fresh process so its peak memory is the export's own."""
    from storage.export import export_records

    async def run() -> tuple[float, Any]:
        engine = make_engine(url)
        try:
            t = time.perf_counter()
            result = await export_records(engine, path=out, fmt=fmt)
            return time.perf_counter() - t, result
        finally:
            await engine.dispose()

    seconds, result = asyncio.run(run())
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures = {"seconds": round(seconds, 2), "peak_mb": round(peak_mb, 1), "rows": result.rows}
    print(json.dumps({**figures, "records": result.records}))


def bench_export(url: str, fmt: str, out: Path) -> dict[str, Any]:
    code = "import sys; from storage.bench import export_child; export_child(*sys.argv[1:])"
    proc = subprocess.run(
        [sys.executable, "-c", code, url, fmt, str(out)], check=True, capture_output=True, text=True
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["mb"] = round(out.stat().st_size / 1e6, 1)
    return result


async def bench_two_writers(url: str, n: int) -> dict[str, Any]:
    from storage.export import verify_database

    dbs = [await open_database(url), await open_database(url)]
    try:

        async def writer(db: Any, start: int) -> None:
            for i in range(start, start + n):
                await record_incident(sessionmaker=db.sessionmaker, incident=_incident(i, chat_id=CHAT + 1))

        t = time.perf_counter()
        await asyncio.gather(writer(dbs[0], 0), writer(dbs[1], n))
        seconds = time.perf_counter() - t
        async with dbs[0].engine.connect() as conn:
            sql = "SELECT count(*), count(DISTINCT message_id) FROM incidents WHERE chat_id = :c"
            count = (await conn.execute(text(sql), {"c": CHAT + 1})).one()
        verified = await verify_database(dbs[0].engine, chat_id=CHAT + 1)
        return {
            "incidents": count[0],
            "distinct_messages": count[1],
            "chain_ok": verified.ok,
            "per_s": round(2 * n / seconds, 1),
        }
    finally:
        for db in dbs:
            await db.close()


async def _pg_database(base: str) -> tuple[str, Any]:
    import asyncpg

    dsn = base.replace("postgresql+asyncpg://", "postgresql://")
    name = f"qinglang_bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
        settings = {k: await conn.fetchval(f"SHOW {k}") for k in ("fsync", "synchronous_commit")}
    finally:
        await conn.close()

    async def drop() -> None:
        c = await asyncpg.connect(dsn)
        try:
            await c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await c.close()

    return base.rsplit("/", 1)[0] + f"/{name}", (drop, settings)


def run_bench(
    *, rows: int, export_rows: int, writer_rows: int, postgres_url: str | None, echo: Any = print
) -> dict[str, Any]:
    """Run every storage benchmark; returns the figures (the CLI prints them)."""
    figures: dict[str, Any] = {"cpu_count": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="qinglang-bench-") as tmp:
        sqlite_url = f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        figures["sqlite_incidents_per_s"] = round(asyncio.run(bench_record(sqlite_url, rows)), 1)
        echo(
            f"sqlite      record_incident (durable, synchronous=FULL): "
            f"{figures['sqlite_incidents_per_s']:>8}/s"
        )
        fill_url = f"sqlite+aiosqlite:///{Path(tmp) / 'export.db'}"
        t = time.perf_counter()
        asyncio.run(bulk_fill(fill_url, export_rows))
        echo(f"filled {export_rows} incidents + {export_rows} events in {time.perf_counter() - t:.1f} s")
        figures["export_rows"] = export_rows
        for fmt in ("csv", "xlsx"):
            r = bench_export(fill_url, fmt, Path(tmp) / f"export.{fmt}")
            figures[f"export_{fmt}_s"], figures[f"export_{fmt}_peak_mb"] = r["seconds"], r["peak_mb"]
            figures[f"export_{fmt}_rows"] = r["rows"]
            echo(
                f"export {fmt:<5} {export_rows} incidents: {r['seconds']:>6} s, "
                f"peak {r['peak_mb']} MB, file {r['mb']} MB, {r['rows']} rows ({r['records']} chain records)"
            )
        if postgres_url:
            pg_url, (drop, settings) = asyncio.run(_pg_database(resolve_url(postgres_url)))
            try:
                figures["postgres_settings"] = settings
                figures["postgres_incidents_per_s"] = round(asyncio.run(bench_record(pg_url, rows)), 1)
                echo(
                    f"postgresql  record_incident: {figures['postgres_incidents_per_s']:>8}/s "
                    f"(server fsync={settings['fsync']}, synchronous_commit={settings['synchronous_commit']})"
                )
                two = asyncio.run(bench_two_writers(pg_url, writer_rows))
                figures["postgres_two_writers"] = two
                echo(
                    f"postgresql  2 writers x {writer_rows} on one chat: {two['incidents']} incidents, "
                    f"{two['distinct_messages']} distinct, chain ok={two['chain_ok']}, {two['per_s']}/s"
                )
            finally:
                asyncio.run(drop())
        else:
            echo("postgresql  skipped: give --postgres-url or set QINGLANG_TEST_POSTGRES_URL")
    figures["load_average_1m"] = round(os.getloadavg()[0], 2)  # other work on the machine skews figures
    return figures


def table(figures: dict[str, Any]) -> list[str]:
    """The figures against the targets, as table lines."""
    n = figures.get("export_rows", 0)
    lines = [f"{'figure':<52} {'result':>14}  target"]

    def line(label: str, value: Any, target: str) -> None:
        lines.append(f"{label:<52} {value if value is not None else '-':>14}  {target}")

    line("SQLite record_incident, durable, one writer (/s)", figures.get("sqlite_incidents_per_s"), ">= 500")
    line(
        "PostgreSQL record_incident, durable, one writer (/s)",
        figures.get("postgres_incidents_per_s"),
        ">= 300",
    )
    two = figures.get("postgres_two_writers")
    if two:
        ok = two["incidents"] == two["distinct_messages"] and two["chain_ok"]
        line(
            "PostgreSQL 2 writers on one chat: incidents, chain",
            f"{two['incidents']} {'ok' if ok else 'BAD'}",
            "all, ok",
        )
    for fmt in ("csv", "xlsx"):
        line(f"export {n} incidents to {fmt.upper()} (s)", figures.get(f"export_{fmt}_s"), "<= 20")
        line(
            f"export {n} incidents to {fmt.upper()}: peak memory (MB)",
            figures.get(f"export_{fmt}_peak_mb"),
            "<= 200",
        )
        line(
            f"export {n} incidents to {fmt.upper()}: rows",
            figures.get(f"export_{fmt}_rows"),
            f"{n} (one per incident)",
        )
    line(
        "load average (1 min) at the end", figures.get("load_average_1m"), f"cpus: {figures.get('cpu_count')}"
    )
    return lines
