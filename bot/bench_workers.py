"""Webhook workers on PostgreSQL: the harness behind `qinglang bench workers` and tests/bot/test_workers.py.

The emulator (this process, 127.0.0.1) is the Bot API the workers call (deleteMessage and the rest).
Each worker is a `qinglang run --webhook …` process on its own loopback port, all sharing one PostgreSQL
database; only the first calls setWebhook. This process is the reverse proxy: it POSTs Telegram-shaped
updates with the secret header to the workers, alternating by update id, with a bounded number of requests
in flight (a small keep-alive HTTP/1.1 client: the load generator shares the machine's two cores).

A run ends when every worker has deleted a sentinel solicitation posted after all its other updates (each
worker handles its queue in order). Throughput is distinct updates / (first POST to last sentinel deleted).
Checks: one incident per flagged message (no (chat, message, edit) twice, every solicitation recorded,
including those delivered to both workers), `qinglang verify` exits 0, and the report batches claimed
by concurrent batchers while the workers write never share an incident and cover every queued one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

SECRET = "bench-webhook-secret_0123456789"
HOOK_PATH = "/hook"
CHATS = [-1004000000001 - i for i in range(8)]
OWNER = 9100
MEMBERS = list(range(11_000, 11_300))
SPAMMERS = list(range(21_000, 22_000))
SENTINEL_USER = 29_998
CLEAN = [
    "大家早上好！今天天气不错，周末有人一起去爬山吗？",
    "这周作业是第三章习题，周五前交到学习委员那里。",
    "有人知道附近哪家修手机靠谱吗？屏幕摔碎了。",
    "提醒大家：自称客服要求退款、索要验证码的都是诈骗。",
    "明天下午三点开会，地点在二楼会议室。",
    "这个 Python 报错 KeyError 怎么解决？",
    "孩子发烧了，有没有推荐的儿科医生？",
    "小区门口新开了一家面馆，味道还行。",
    "下周要降温了，记得添衣服。",
    "群文件里有上次讲座的课件，自己下载。",
]
SPAM = [
    "出冰，货真价实，量大从优，需要的加V：bing8888",
    "急招刷单员，手机操作，日结300-500，不收任何费用，加QQ 2837465910",
    "澳门首家线上赌场，百家乐真人荷官，注册即送88元彩金，日赢万元",
    "出售冰毒麻古，货到付款，加微信 bd6688",
    "兼职刷单，日结佣金，加微信 sd12345 带你赚钱",
]


@dataclass
class WorkersRun:
    """Figures and checks of one run."""

    workers: int
    updates: int  # distinct updates posted (sentinels not counted)
    posts: int  # POSTs answered 200, duplicates included
    duplicates: int
    seconds: float
    solicitations: int
    incidents: int = 0
    incidents_twice: int = 0  # (chat, message, edit) with more than one incident: must be 0
    solicitations_missing: int = 0  # solicitations without an incident: must be 0
    deletes_repeated: int = 0  # messages asked to be deleted more than once (either method): must be 0
    verify_exit: int | None = None
    batches: int = 0
    batch_overlaps: int = 0  # incidents claimed by two batches: must be 0
    queued_unclaimed: int = 0  # queued for a report but in no batch after the final drain: must be 0
    worker_errors: list[str] = field(default_factory=list)
    # CPU seconds spent during the timed window (Linux /proc; 0 elsewhere): where the cores went.
    cpu_workers: float = 0.0  # all worker processes together
    cpu_driver: float = 0.0  # this process: the emulator (Bot API) and the load generator
    cpu_postgres: float = 0.0  # every process named postgres on the machine
    cpu_machine: float = 0.0  # every core, every process (other engineers' work included)

    @property
    def updates_per_s(self) -> float:
        return self.updates / self.seconds if self.seconds else 0.0

    def cpu_ms_per_update(self, seconds: float) -> float:
        """CPU milliseconds per update, of `seconds` of CPU spent in the window."""
        return 1000 * seconds / self.updates if self.updates else 0.0

    def problems(self) -> list[str]:
        """What went wrong; empty when every promise held."""
        out = []
        if self.incidents_twice:
            out.append(f"{self.incidents_twice} messages with more than one incident")
        if self.solicitations_missing:
            out.append(f"{self.solicitations_missing} solicitations without an incident")
        if self.verify_exit not in (None, 0):
            out.append(f"qinglang verify exited {self.verify_exit}")
        if self.batch_overlaps:
            out.append(f"{self.batch_overlaps} incidents in two report batches")
        if self.deletes_repeated:
            out.append(f"{self.deletes_repeated} messages deleted more than once")
        if self.queued_unclaimed:
            out.append(f"{self.queued_unclaimed} queued incidents in no batch")
        out.extend(self.worker_errors)
        return out


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of one process so far; 0 if it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def _postgres_pids() -> list[int]:
    pids = []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/comm") as f:
                if f.read().strip() == "postgres":
                    pids.append(int(entry))
    return pids


def _machine_busy() -> float:
    """CPU seconds every core spent busy since boot (all of /proc/stat's cpu line but idle and iowait)."""
    try:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return 0.0
    return (sum(values[:8]) - values[3] - values[4]) / _TICK


@dataclass
class CpuSnapshot:
    """CPU seconds so far of the workers, this process, the PostgreSQL processes and the machine."""

    workers: float
    driver: float
    postgres: dict[int, float]
    machine: float

    @classmethod
    def take(cls, procs: list[Any]) -> CpuSnapshot:
        return cls(
            workers=sum(_proc_cpu(p.pid) for p in procs),
            driver=time.process_time(),
            postgres={pid: _proc_cpu(pid) for pid in _postgres_pids()},
            machine=_machine_busy(),
        )

    def spent_since(self, before: CpuSnapshot, run: WorkersRun) -> None:
        run.cpu_workers = self.workers - before.workers
        run.cpu_driver = self.driver - before.driver
        # backends started during the window count from zero
        run.cpu_postgres = sum(t - before.postgres.get(pid, 0.0) for pid, t in self.postgres.items())
        run.cpu_machine = self.machine - before.machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def fresh_database(server_url: str) -> AsyncIterator[str]:
    """A new, empty database on the PostgreSQL server of `server_url` (dropped afterwards)."""
    import asyncpg

    dsn = server_url.replace("postgresql+asyncpg://", "postgresql://")
    name = f"bench_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        yield server_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


def _spawn_worker(i: int, *, port: int, base_url: str, token: str, db_url: str, workdir: Path) -> Any:
    env = {
        **os.environ,
        "QINGLANG_TELEGRAM_TOKEN": token,
        "QINGLANG_DATABASE_URL": db_url,
        "QINGLANG_SPOOL_DIR": str(workdir / f"spool-{i}"),  # each worker its own journal and spool
        "QINGLANG_WEBHOOK_SECRET_TOKEN": SECRET,
        "QINGLANG_METRICS_PORT": "0",
        "QINGLANG_AUTO_UPGRADE_DATABASE": "false",
        "QINGLANG_LOG_LEVEL": "WARNING",
        # Deletion notices outlive the run: a notice-removal job still running when the worker is stopped
        # is cancelled by PTB's JobQueue, which logs a traceback that would read as a worker error.
        "QINGLANG_NOTICE_TTL_SECONDS": "3600",
        "PYTHONUNBUFFERED": "1",
    }
    cmd = [
        sys.executable,
        "-c",
        "from bot.cli import main; main()",
        "run",
        "--base-url",
        base_url,
        "--webhook",
        f"https://bot.example.org{HOOK_PATH}",
        "--listen",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    if i > 0:
        cmd.append("--no-set-webhook")  # one process registers the URL
    log = open(workdir / f"worker-{i}.log", "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)


async def _stop(proc: Any) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    for _ in range(100):
        if proc.poll() is not None:
            return
        await asyncio.sleep(0.1)
    proc.kill()
    proc.wait()


async def _wait_listening(port: int, proc: Any, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"worker on port {port} exited with {proc.returncode}")
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"worker on port {port} did not start")


class Poster:
    """A keep-alive HTTP/1.1 connection to one worker: POST a body, read the status."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, body: bytes) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
            sock = self.writer.get_extra_info("socket")
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        assert self.reader is not None
        head = (
            f"POST {HOOK_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            f"Content-Type: application/json\r\nX-Telegram-Bot-Api-Secret-Token: {SECRET}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.write(head + body)
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        if length:
            await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def _batcher(
    db: Any, name: str, claimed: list[list[int]], stop: asyncio.Event, *, limit: int = 40
) -> None:
    """Claim report batches until `stop`, then until nothing is queued."""
    import storage

    while True:
        async with db.sessionmaker.begin() as session:
            batch = await storage.create_report_batch(
                session=session, chat_id=None, created_by=name, limit=limit
            )
        if batch is not None:
            claimed.append(list(batch.incident_ids))
            continue
        if stop.is_set():
            return
        await asyncio.sleep(0.05)


@dataclass
class Workers:
    """Running webhook workers: the emulator they call, their ports and processes."""

    emu: Any
    ports: list[int]
    procs: list[Any]
    workdir: Path
    errors: list[str] = field(default_factory=list)  # filled when they stop: what their logs show

    async def post(self, worker: int, update: dict[str, Any]) -> int:
        """POST one update to one worker on a fresh connection; the HTTP status."""
        poster = Poster(self.ports[worker])
        try:
            return await poster.post(json.dumps(update, ensure_ascii=False).encode())
        finally:
            poster.close()


@contextlib.asynccontextmanager
async def serve_workers(*, db_url: str, n_workers: int, workdir: Path) -> AsyncIterator[Workers]:
    """The emulator (chats in CHATS, owned by OWNER) and `n_workers` listening webhook workers on `db_url`
    (schema upgraded here); the workers are stopped on exit and their logs checked into `errors`."""
    import storage
    from bot.emulator import Emulator

    await asyncio.to_thread(storage.upgrade_database, db_url)
    emu = Emulator()
    emu.add_user(OWNER, "群主")
    for chat in CHATS:
        emu.add_chat(chat, f"workers {chat}", owner=OWNER)
    workers = Workers(emu=emu, ports=[_free_port() for _ in range(n_workers)], procs=[], workdir=workdir)
    try:
        async with emu.serve() as base_url:
            for i, port in enumerate(workers.ports):
                workers.procs.append(
                    _spawn_worker(
                        i, port=port, base_url=base_url, token=emu.token, db_url=db_url, workdir=workdir
                    )
                )
            for port, proc in zip(workers.ports, workers.procs, strict=True):
                await _wait_listening(port, proc)
            yield workers
    finally:
        for proc in workers.procs:
            await _stop(proc)
        for i, proc in enumerate(workers.procs):
            text = (workdir / f"worker-{i}.log").read_text(errors="replace")
            if "Traceback" in text or " ERROR " in text or proc.returncode not in (0, -signal.SIGINT):
                workers.errors.append(f"worker {i} (exit {proc.returncode}) logged errors:\n{text[-1500:]}")


async def run_workers(
    *,
    db_url: str,
    n_workers: int,
    updates: int,
    workdir: Path,
    spam_share: float = 0.2,
    duplicate_every: int = 0,
    concurrency: int = 32,
    time_limit: float = 60.0,
    batchers: int = 0,
    check: bool = True,
) -> WorkersRun:
    """Start `n_workers` webhook workers on `db_url` (schema upgraded here), post `updates`, check."""
    import storage

    db = await storage.open_database(db_url)
    try:
        async with serve_workers(db_url=db_url, n_workers=n_workers, workdir=workdir) as workers:
            run = await _drive(
                workers,
                db,
                db_url=db_url,
                updates=updates,
                spam_share=spam_share,
                duplicate_every=duplicate_every,
                concurrency=concurrency,
                time_limit=time_limit,
                batchers=batchers,
                check=check,
            )
    finally:
        await db.close()
    run.worker_errors.extend(workers.errors)
    return run


async def _drive(
    workers: Workers,
    db: Any,
    *,
    db_url: str,
    updates: int,
    spam_share: float,
    duplicate_every: int,
    concurrency: int,
    time_limit: float,
    batchers: int,
    check: bool,
) -> WorkersRun:
    emu, ports, procs, n_workers = workers.emu, workers.ports, workers.procs, len(workers.ports)
    # The traffic, built before the clock starts: each worker's queue of update bodies.
    spam_every = max(1, round(1 / spam_share)) if spam_share else 0
    spam: set[tuple[int, int]] = set()
    queues: list[list[bytes]] = [[] for _ in ports]
    duplicates = 0
    for k in range(updates):
        update_id = 100_000 + k
        chat = CHATS[k % len(CHATS)]
        if spam_every and k % spam_every == spam_every - 1:
            text, user = SPAM[(k // spam_every) % len(SPAM)], SPAMMERS[k % len(SPAMMERS)]
        else:
            text, user = CLEAN[k % len(CLEAN)], MEMBERS[k % len(MEMBERS)]
        message = emu.message(chat, user, text, push=False)
        if user in SPAMMERS:
            spam.add((chat, message["message_id"]))
        body = json.dumps({"update_id": update_id, "message": message}, ensure_ascii=False).encode()
        target = update_id % n_workers
        queues[target].append(body)
        if duplicate_every and k % duplicate_every == 0:
            # Delivered twice: to the other worker (or again to the only one).
            queues[(target + 1) % n_workers].append(body)
            duplicates += 1
    for queue in queues:
        queue.reverse()  # popped from the end: oldest first

    claimed: list[list[int]] = []
    stop_batching = asyncio.Event()
    batch_tasks = [
        asyncio.create_task(_batcher(db, f"batcher-{b}", claimed, stop_batching)) for b in range(batchers)
    ]

    posted = 0
    rejected = 0
    cpu_before = CpuSnapshot.take(procs)
    start = time.monotonic()
    deadline = start + time_limit

    async def connection(w: int) -> None:
        nonlocal posted, rejected
        poster = Poster(ports[w])
        try:
            while queues[w] and time.monotonic() < deadline:
                if await poster.post(queues[w].pop()) == 200:
                    posted += 1
                else:
                    rejected += 1
        finally:
            poster.close()

    per_worker = max(1, concurrency // n_workers)
    await asyncio.gather(*(connection(w) for w in range(n_workers) for _ in range(per_worker)))
    unsent = sum(len(q) for q in queues)

    # A sentinel solicitation per worker, after all its other updates: deleted = worker done.
    sentinels = []
    for w in range(n_workers):
        message = emu.message(CHATS[0], SENTINEL_USER, SPAM[0], push=False)
        await workers.post(w, {"update_id": 900_000 + w, "message": message})
        sentinels.append(message["message_id"])
    await emu.wait_for(
        lambda: all(emu.is_deleted(CHATS[0], m) for m in sentinels), timeout=max(120.0, updates / 20)
    )
    end = max(emu.deleted_at(CHATS[0], m) or 0.0 for m in sentinels)
    cpu_after = CpuSnapshot.take(procs)
    # A deletion batch records its outcomes (and queues them for the report) after its deletes:
    # the batchers drain only once the sentinels' own outcomes, the last of each worker, are in.
    await _wait_for_outcomes(db, CHATS[0], sentinels, timeout=60.0)
    stop_batching.set()
    await asyncio.gather(*batch_tasks)

    run = WorkersRun(
        workers=n_workers,
        updates=updates - unsent,
        posts=posted,
        duplicates=duplicates,
        seconds=end - start,
        solicitations=len(spam),
    )
    cpu_after.spent_since(cpu_before, run)
    if rejected:
        run.worker_errors.append(f"{rejected} POSTs not answered 200")
    if unsent:
        run.worker_errors.append(f"time limit: {unsent} updates not sent")
    deletes: dict[tuple[int, int], int] = {}
    for call in emu.calls("deleteMessage") + emu.calls("deleteMessages"):
        named = call.params.get("message_ids") or [call.params.get("message_id")]
        for message_id in named:
            key = (int(call.params["chat_id"]), int(message_id))
            deletes[key] = deletes.get(key, 0) + 1
    run.deletes_repeated = sum(1 for n in deletes.values() if n > 1)
    if check:
        await _check(run, db, spam=spam if not unsent else set(), claimed=claimed, batchers=batchers)
        run.verify_exit = await _verify(db_url, workdir=workers.workdir)
    return run


async def _wait_for_outcomes(db: Any, chat_id: int, message_ids: list[int], *, timeout: float) -> None:
    """Until every message's incident has been queued for the report (its outcome recorded)."""
    from sqlalchemy import func, select

    from storage.models import Incident, IncidentEvent

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with db.sessionmaker() as session:
            done = await session.scalar(
                select(func.count(func.distinct(Incident.message_id)))
                .join(IncidentEvent, IncidentEvent.incident_id == Incident.id)
                .where(
                    Incident.chat_id == chat_id,
                    Incident.message_id.in_(message_ids),
                    IncidentEvent.kind == "report",
                    IncidentEvent.value == "queued",
                )
            )
        if int(done or 0) >= len(set(message_ids)):
            return
        await asyncio.sleep(0.05)


async def _check(
    run: WorkersRun, db: Any, *, spam: set[tuple[int, int]], claimed: list[list[int]], batchers: int
) -> None:
    from sqlalchemy import func, select

    from storage.models import Incident, IncidentEvent

    async with db.sessionmaker() as session:
        rows = (await session.execute(select(Incident.chat_id, Incident.message_id, Incident.edit_key))).all()
        queued = set(
            (
                await session.scalars(
                    select(IncidentEvent.incident_id).where(
                        IncidentEvent.kind == "report", IncidentEvent.value == "queued"
                    )
                )
            ).all()
        )
        run.incidents = int(await session.scalar(select(func.count()).select_from(Incident)) or 0)
    keys = [tuple(r) for r in rows]
    run.incidents_twice = len(keys) - len(set(keys))
    recorded = {(int(c), int(m)) for c, m, _ in keys}
    run.solicitations_missing = len(spam - recorded)
    if batchers:
        flat = [i for batch in claimed for i in batch]
        run.batches = len(claimed)
        run.batch_overlaps = len(flat) - len(set(flat))
        run.queued_unclaimed = len(queued - set(flat))


async def _verify(db_url: str, workdir: Path) -> int:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from bot.cli import main; main()",
        "verify",
        "--url",
        db_url,
        cwd=workdir,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await proc.wait()


# --- qinglang bench workers ----------------------------------------------------------------------


async def _bench(
    postgres_url: str, updates: int, concurrency: int, time_limit: float, check_updates: int
) -> list[tuple[str, WorkersRun]]:
    runs: list[tuple[str, WorkersRun]] = []
    with tempfile.TemporaryDirectory(prefix="qinglang-workers-") as tmp:
        for name, n, count, dup, batchers in (
            ("1 worker", 1, updates, 0, 0),
            ("2 workers", 2, updates, 0, 0),
            ("2 workers, checked", 2, check_updates, 50, 3),
        ):
            if count <= 0:
                continue
            workdir = Path(tmp) / name.replace(" ", "-").replace(",", "")
            workdir.mkdir()
            async with fresh_database(postgres_url) as db_url:
                run = await run_workers(
                    db_url=db_url,
                    n_workers=n,
                    updates=count,
                    workdir=workdir,
                    duplicate_every=dup,
                    concurrency=concurrency,
                    time_limit=time_limit if not dup else max(time_limit, 600.0),
                    batchers=batchers,
                    check=bool(dup),
                )
            runs.append((name, run))
            click.echo(f"  {name}: {run.updates} updates in {run.seconds:.1f} s", err=True)
    return runs


def cpu_ceiling(one: WorkersRun, two: WorkersRun, cores: int) -> tuple[float, float]:
    """Updates/s that CPU alone allows: (1 worker, 2 workers), from the CPU each run spent per update.

    One worker is one sequential process: at best it has a core to itself. Two workers, the emulator,
    the load generator and PostgreSQL share every core: at best they keep them all busy.
    """
    ms = two.cpu_ms_per_update
    others = ms(two.cpu_driver) + ms(two.cpu_postgres)  # the emulator, the load generator, PostgreSQL
    worker_one = one.cpu_ms_per_update(one.cpu_workers)
    if not worker_one or not two.cpu_workers:  # no /proc: nothing measured
        return 0.0, 0.0
    ceiling_one = min(1000 / worker_one, 1000 * cores / (worker_one + others))
    return ceiling_one, 1000 * cores / (ms(two.cpu_workers) + others)


def run_bench_workers(
    *, postgres_url: str, updates: int, concurrency: int, time_limit: float, check_updates: int
) -> int:
    """Print a table and one JSON line; 0 when the checked run kept every promise."""
    runs = asyncio.run(_bench(postgres_url, updates, concurrency, time_limit, check_updates))
    by = dict(runs)
    one, two = by["1 worker"], by["2 workers"]
    gain = two.updates_per_s / one.updates_per_s - 1 if one.updates_per_s else 0.0
    checked = by.get("2 workers, checked")
    cores = os.cpu_count() or 1
    click.echo(
        f"{'run':<20} {'updates':>8} {'seconds':>8} {'updates/s':>10}"
        f"  {'CPU ms/update: workers':>22} {'driver':>6} {'pg':>5}  {'busy cores':>10}  checks"
    )
    for name, run in runs:
        checks = ""
        if run.verify_exit is not None:
            problems = run.problems()
            checks = "ok" if not problems else "FAILED: " + "; ".join(problems)
            checks += (
                f" ({run.incidents} incidents, {run.solicitations} solicitations,"
                f" {run.duplicates} duplicates, {run.batches} batches)"
            )
        ms = run.cpu_ms_per_update
        busy = run.cpu_machine / run.seconds if run.seconds else 0.0
        click.echo(
            f"{name:<20} {run.updates:>8} {run.seconds:>8.1f} {run.updates_per_s:>10.0f}"
            f"  {ms(run.cpu_workers):>22.2f} {ms(run.cpu_driver):>6.2f} {ms(run.cpu_postgres):>5.2f}"
            f"  {busy:>5.2f} of {cores}  {checks}"
        )
    ceiling_one, ceiling_two = cpu_ceiling(one, two, cores)
    ceiling_gain = ceiling_two / ceiling_one - 1 if ceiling_one else 0.0
    click.echo(f"second worker adds {gain:+.0%} (target >= +60%; {cores} CPU cores shared by all)")
    click.echo(
        f"CPU ceiling from the CPU spent per update: 1 worker {ceiling_one:.0f}/s (its own core),"
        f" 2 workers {ceiling_two:.0f}/s (all cores, emulator and PostgreSQL included): at most"
        f" {ceiling_gain:+.0%}; busy cores above include other processes on the machine"
    )
    ok = checked is None or not checked.problems()
    figures = {
        "bench": "workers",
        "cpu_cores": cores,
        "load_average": round(os.getloadavg()[0], 2),
        "concurrency": concurrency,
        "updates": updates,
        "one_worker_updates_per_s": round(one.updates_per_s, 1),
        "two_workers_updates_per_s": round(two.updates_per_s, 1),
        "second_worker_gain": round(gain, 3),
        "gain_target_met": gain >= 0.6,
        "cpu_ms_per_update": {
            name.replace(" ", "_").replace(",", ""): {
                "workers": round(run.cpu_ms_per_update(run.cpu_workers), 3),
                "driver": round(run.cpu_ms_per_update(run.cpu_driver), 3),
                "postgres": round(run.cpu_ms_per_update(run.cpu_postgres), 3),
                "machine": round(run.cpu_ms_per_update(run.cpu_machine), 3),
            }
            for name, run in runs
        },
        "cpu_ceiling_one_worker_updates_per_s": round(ceiling_one, 1),
        "cpu_ceiling_two_workers_updates_per_s": round(ceiling_two, 1),
        "cpu_ceiling_gain": round(ceiling_gain, 3),
        "checked_updates": checked.updates if checked else 0,
        "checked_updates_per_s": round(checked.updates_per_s, 1) if checked else None,
        "checked_incidents": checked.incidents if checked else None,
        "checked_duplicates": checked.duplicates if checked else None,
        "checked_incidents_twice": checked.incidents_twice if checked else None,
        "checked_deletes_repeated": checked.deletes_repeated if checked else None,
        "checked_solicitations_missing": checked.solicitations_missing if checked else None,
        "checked_verify_exit": checked.verify_exit if checked else None,
        "checked_batches": checked.batches if checked else None,
        "checked_batch_overlaps": checked.batch_overlaps if checked else None,
        "checked_ok": ok,
    }
    click.echo(json.dumps(figures, ensure_ascii=False))
    return 0 if ok else 1
