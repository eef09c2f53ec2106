"""`qinglang bench e2e`: emulator -> PTB polling -> classify -> record on SQLite -> deleteMessage received.

The emulator runs in this process on 127.0.0.1; the bot runs as a separate process, exactly as
`qinglang run` would (its own CPU, its own start-up). The same harness runs a no-op bot (plain PTB,
a handler that does nothing) to measure the framework's own ceiling.

Figures:
- throughput: N updates queued at once, 10% solicitations; updates/s from the first update served to
  the last one's deleteMessage received (both bots delete that last message, so they end alike);
- latency: updates paced at a steady rate below capacity; per solicitation, the time from the update
  being served by getUpdates to its deleteMessage arriving (the latency under saturation is queueing,
  reported too, for information);
- start to ready: process start to the first getUpdates; RSS: peak resident memory of the bot process
  and of its classifier worker; PSS of both at the end (the worker shares the model's pages; the
  memory target is checked on PSS when there is a worker);
- verdicts by source (the bot's /metrics): how many the worker had ready before the handler asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

CHATS = [-1002000000001 - i for i in range(5)]
OWNER = 9000
MEMBERS = list(range(10_000, 10_200))
SPAMMERS = list(range(20_000, 21_000))  # many senders: strikes rarely reach the mute limit
SENTINEL_USER = 29_999  # the last update comes from here; both bots delete it
SPAM_SHARE = 0.10
WARMUP = 60

CLEAN = [
    "大家早上好！今天天气不错，周末有人一起去爬山吗？",
    "我去！上次那条路线风景特别好，记得带水。",
    "这周作业是第三章习题，周五前交到学习委员那里。",
    "有人知道附近哪家修手机靠谱吗？屏幕摔碎了。",
    "新闻说警方昨天破获一起贩毒案，缴获冰毒两公斤。",
    "提醒大家：自称客服要求退款、索要验证码的都是诈骗。",
    "今晚世界杯决赛，你们看好哪个队？",
    "我妈又在朋友圈转发养生谣言了😂",
    "明天下午三点开会，地点在二楼会议室。",
    "谢谢群主，清净多了。",
    "这个 Python 报错 KeyError 怎么解决？",
    "周五聚餐定在老地方，六点半，别迟到。",
    "孩子发烧了，有没有推荐的儿科医生？",
    "刚看完那部电影，结局有点仓促。",
    "小区门口新开了一家面馆，味道还行。",
    "今天地铁二号线故障，大家出门注意。",
    "谁有多余的充电线借我用一下？",
    "下周要降温了，记得添衣服。",
    "群文件里有上次讲座的课件，自己下载。",
    "哈哈哈哈这个表情包太好笑了",
]
SPAM = [
    "出冰，货真价实，量大从优，需要的加V：bing8888",
    "急招刷单员，手机操作，日结300-500，不收任何费用，加QQ 2837465910",
    "高价收银行卡、对公账户，跑分刘氺日入过万，详情私聊",
    "同城上门服务，学生妹兼职，全套包夜，看头像加微信 mm52099",
    "澳门首家线上赌场，百家乐真人荷官，注册即送88元彩金，日赢万元",
    "正规网贷平台，无视征信黑户秒批，当天放款5万，加V：dai888",
    "出售冰毒麻古，货到付款，加微信 bd6688",
    "兼职刷单，日结佣金，加微信 sd12345 带你赚钱",
]


@dataclass
class RunFigures:
    """One harness run."""

    name: str
    messages: int
    updates_per_s: float
    start_to_ready_s: float
    rss_mb: float
    latencies_ms: list[float] = field(default_factory=list)
    paced_latencies_ms: list[float] = field(default_factory=list)
    paced_rate: float = 0.0
    deletes: int = 0
    worker_rss_mb: float = 0.0  # peak RSS of the classifier worker (shares the model's pages: see PSS)
    pss_mb: float = float("nan")  # proportional set size of bot + worker at the end of the run
    verdicts: dict[str, float] = field(default_factory=dict)  # by source, from /metrics
    burst_cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds per wall second, burst only


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


class Traffic:
    """Injects a deterministic mix (every 10th update a solicitation) and remembers the update ids."""

    def __init__(self, emu: Any) -> None:
        self.emu = emu
        self.i = 0
        self.spam: dict[tuple[int, int], int] = {}  # (chat, message) -> update_id of solicitations
        self.update_ids: list[int] = []

    def _push(self, chat: int, user: int, text: str) -> tuple[dict[str, Any], int]:
        message = self.emu.message(chat, user, text)
        update_id = self.emu.pending_updates[-1]["update_id"] if self.emu.pending_updates else -1
        self.update_ids.append(update_id)
        return message, update_id

    def one(self) -> None:
        i = self.i
        self.i += 1
        chat = CHATS[i % len(CHATS)]
        if i % round(1 / SPAM_SHARE) == round(1 / SPAM_SHARE) - 1:
            message, update_id = self._push(
                chat, SPAMMERS[(i // 10) % len(SPAMMERS)], SPAM[(i // 10) % len(SPAM)]
            )
            self.spam[(chat, message["message_id"])] = update_id
        else:
            self._push(chat, MEMBERS[i % len(MEMBERS)], CLEAN[i % len(CLEAN)])

    def sentinel(self) -> tuple[int, int, int]:
        chat = CHATS[0]
        message, update_id = self._push(chat, SENTINEL_USER, SPAM[0])
        self.spam[(chat, message["message_id"])] = update_id
        return chat, message["message_id"], update_id


def _setup_emulator() -> Any:
    from bot.emulator import Emulator

    emu = Emulator()
    emu.add_user(OWNER, "群主")
    for chat in CHATS:
        emu.add_chat(chat, f"bench {chat}", owner=OWNER)
    return emu


def _delete_at(emu: Any, chat: int, message_id: int) -> float | None:
    at = emu.deleted_at(chat, message_id)  # by deleteMessage or deleteMessages alike
    return None if at is None else float(at)


async def _wait_deleted(emu: Any, chat: int, message_id: int, timeout: float) -> float:
    await emu.wait_for(lambda: emu.is_deleted(chat, message_id), timeout=timeout)
    at = _delete_at(emu, chat, message_id)
    assert at is not None
    return at


def _rss_mb(pid: int) -> float:
    """Peak resident set size (VmHWM) of a process, in MB."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _children(pid: int) -> list[int]:
    """Child processes of `pid` (the classifier worker of the bot)."""
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(x) for x in f.read().split()]
    return out


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    with contextlib.suppress(OSError, IndexError, ValueError), open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return float("nan")


def _pss_mb(pid: int) -> float:
    """Proportional set size: pages shared with another process count for half."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _verdict_sources(port: int) -> dict[str, float]:
    """qinglang_verdicts_total by source, scraped from the bot's /metrics."""
    out: dict[str, float] = {}
    with contextlib.suppress(OSError):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            body = response.read().decode()
        for line in body.splitlines():
            if line.startswith("qinglang_verdicts_total{"):
                source = line.split('source="', 1)[1].split('"', 1)[0]
                out[source] = float(line.rsplit(" ", 1)[1])
    return out


def _spawn(
    kind: str, base_url: str, token: str, workdir: Path, metrics_port: int = 0
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "QINGLANG_TELEGRAM_TOKEN": token,
        "QINGLANG_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / f'{kind}.db'}",
        "QINGLANG_LOG_LEVEL": "WARNING",
        "QINGLANG_METRICS_PORT": str(metrics_port),
        "PYTHONUNBUFFERED": "1",
    }
    if kind == "full":
        cmd = [sys.executable, "-c", "from bot.cli import main; main()", "run", "--base-url", base_url]
    else:
        cmd = [sys.executable, "-m", "bot.bench", base_url]
    log = open(workdir / f"{kind}.log", "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)


async def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    for _ in range(100):
        if proc.poll() is not None:
            return
        await asyncio.sleep(0.1)
    proc.kill()
    proc.wait()


async def run_harness(
    kind: str, *, messages: int, workdir: Path, rate: float = 0.0, latency_messages: int = 0
) -> RunFigures:
    """One harness: `kind` is "full" (qinglang run) or "noop" (plain PTB, no-op handler)."""
    emu = _setup_emulator()
    async with emu.serve() as base_url:
        started = time.monotonic()
        metrics_port = _free_port() if kind == "full" else 0
        proc = _spawn(kind, base_url, emu.token, workdir, metrics_port)
        try:
            await emu.wait_calls("getUpdates", 1, timeout=60)
            ready = emu.calls("getUpdates")[0].at - started

            traffic = Traffic(emu)
            for _ in range(WARMUP):
                traffic.one()
            chat, mid, _ = traffic.sentinel()
            await _wait_deleted(emu, chat, mid, timeout=60)

            # Throughput: everything queued at once.
            workers = _children(proc.pid)
            cpu0 = (time.monotonic(), _cpu_seconds(proc.pid), sum(map(_cpu_seconds, workers)))
            first = len(traffic.update_ids)
            for _ in range(messages):
                traffic.one()
            chat, mid, _ = traffic.sentinel()
            end = await _wait_deleted(emu, chat, mid, timeout=600)
            wall = time.monotonic() - cpu0[0]
            burst_cpu = {
                "bot": (_cpu_seconds(proc.pid) - cpu0[1]) / wall,
                "worker": (sum(map(_cpu_seconds, workers)) - cpu0[2]) / wall,
            }
            measured = traffic.update_ids[first:]
            served = [emu.served_at(u) for u in measured]
            start = min(s for s in served if s is not None)
            figures = RunFigures(
                name=kind,
                messages=len(measured),
                updates_per_s=len(measured) / (end - start),
                start_to_ready_s=ready,
                rss_mb=float("nan"),
                burst_cpu=burst_cpu,
            )
            if kind == "full":
                figures.latencies_ms = _latencies(emu, traffic, set(measured))
                figures.deletes = len(figures.latencies_ms)

                # Latency: a steady rate well below capacity.
                if latency_messages:
                    first = len(traffic.update_ids)
                    loop = asyncio.get_running_loop()
                    t0 = loop.time()
                    for k in range(latency_messages):
                        delay = t0 + k / rate - loop.time()
                        if delay > 0:
                            await asyncio.sleep(delay)
                        traffic.one()
                    chat, mid, _ = traffic.sentinel()
                    await _wait_deleted(emu, chat, mid, timeout=120)
                    figures.paced_latencies_ms = _latencies(emu, traffic, set(traffic.update_ids[first:]))
                    figures.paced_rate = rate
            figures.rss_mb = _rss_mb(proc.pid)
            workers = _children(proc.pid)
            figures.worker_rss_mb = sum(_rss_mb(p) for p in workers)
            figures.pss_mb = _pss_mb(proc.pid) + sum(_pss_mb(p) for p in workers)
            if metrics_port:
                figures.verdicts = _verdict_sources(metrics_port)
        finally:
            await _stop(proc)
    if proc.returncode not in (0, -signal.SIGINT):
        tail = (workdir / f"{kind}.log").read_text(errors="replace")[-2000:]
        raise click.ClickException(f"the {kind} bot exited with {proc.returncode}:\n{tail}")
    return figures


def _latencies(emu: Any, traffic: Traffic, window: set[int]) -> list[float]:
    # deleteMessage and deleteMessages alike: each message at the call that deleted it
    deletes = {(chat, message): float(at) for chat, message, at in emu.deletions()}
    out = []
    for key, update_id in traffic.spam.items():
        if update_id in window and key in deletes:
            served = emu.served_at(update_id)
            if served is not None:
                out.append((deletes[key] - served) * 1000)
    return out


async def _bench(messages: int, rate: float, latency_messages: int) -> tuple[RunFigures, RunFigures]:
    with tempfile.TemporaryDirectory(prefix="qinglang-bench-") as tmp:
        workdir = Path(tmp)
        noop = await run_harness("noop", messages=messages, workdir=workdir)
        full = await run_harness(
            "full", messages=messages, workdir=workdir, rate=rate, latency_messages=latency_messages
        )
    return noop, full


def run_bench_e2e(*, messages: int, rate: float, latency_messages: int) -> int:
    """Run both harnesses, print a table and one JSON line; 0 when every target is met."""
    noop, full = asyncio.run(_bench(messages, rate, latency_messages))
    ratio = full.updates_per_s / noop.updates_per_s
    p50, p99 = pct(full.paced_latencies_ms, 50), pct(full.paced_latencies_ms, 99)
    sat_p50, sat_p99 = pct(full.latencies_ms, 50), pct(full.latencies_ms, 99)
    # Memory: the bot's peak RSS plus its worker's would count the model's shared pages twice; PSS
    # (at the end of the run) splits them between the two processes.
    memory_mb = full.pss_mb if full.worker_rss_mb else full.rss_mb
    targets = {
        "ratio>=0.70": ratio >= 0.70,
        "p99<=100ms": p99 <= 100,
        "ready<=3s": full.start_to_ready_s <= 3,
        "rss<=350MB": memory_mb <= 350,
    }
    judged = sum(full.verdicts.values())
    worker_share = full.verdicts.get("worker", 0.0) / judged if judged else 0.0
    rows = [
        ("harness", "no-op handler", "qinglang"),
        ("updates/s (queued burst)", f"{noop.updates_per_s:.0f}", f"{full.updates_per_s:.0f}"),
        ("ratio", "", f"{ratio:.2f}"),
        (f"served→delete p50/p99 at {rate:g}/s", "", f"{p50:.1f} / {p99:.1f} ms"),
        ("served→delete p50/p99 in the burst", "", f"{sat_p50:.0f} / {sat_p99:.0f} ms (queueing)"),
        ("start to ready", f"{noop.start_to_ready_s:.2f} s", f"{full.start_to_ready_s:.2f} s"),
        ("peak RSS", f"{noop.rss_mb:.0f} MB", f"{full.rss_mb:.0f} MB"),
        ("peak RSS of the classifier worker", "", f"{full.worker_rss_mb:.0f} MB"),
        ("PSS bot + worker (end of run)", "", f"{full.pss_mb:.0f} MB"),
        ("verdicts from the worker", "", f"{worker_share:.0%} of {judged:.0f}"),
        (
            "CPU in the burst: bot / worker",
            f"{noop.burst_cpu.get('bot', 0):.0%}",
            f"{full.burst_cpu.get('bot', 0):.0%} / {full.burst_cpu.get('worker', 0):.0%}",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    for name, a, b in rows:
        click.echo(f"{name:<{width}}  {a:>14}  {b}")
    click.echo("targets: " + ", ".join(f"{k} {'ok' if v else 'MISSED'}" for k, v in targets.items()))
    figures = {
        "bench": "e2e",
        "messages": full.messages,
        "solicitation_share": SPAM_SHARE,
        "noop_updates_per_s": round(noop.updates_per_s, 1),
        "updates_per_s": round(full.updates_per_s, 1),
        "ratio": round(ratio, 3),
        "paced_rate": rate,
        "paced_solicitations": len(full.paced_latencies_ms),
        "p50_ms": round(p50, 2),
        "p99_ms": round(p99, 2),
        "burst_p50_ms": round(sat_p50, 1),
        "burst_p99_ms": round(sat_p99, 1),
        "start_to_ready_s": round(full.start_to_ready_s, 3),
        "rss_mb": round(full.rss_mb, 1),
        "noop_rss_mb": round(noop.rss_mb, 1),
        "worker_rss_mb": round(full.worker_rss_mb, 1),
        "pss_mb": round(full.pss_mb, 1),
        "verdicts": full.verdicts,
        "burst_cpu": {k: round(v, 2) for k, v in full.burst_cpu.items()},
        "noop_burst_cpu": round(noop.burst_cpu.get("bot", 0.0), 2),
        "mean_latency_ms": round(statistics.fmean(full.paced_latencies_ms), 2)
        if full.paced_latencies_ms
        else None,
        "targets_met": all(targets.values()),
    }
    click.echo(json.dumps(figures, ensure_ascii=False))
    return 0 if all(targets.values()) else 1


# --- the no-op bot (python -m bot.bench BASE_URL) -----------------------------------------------


def _noop_main(base_url: str) -> None:
    """Plain PTB with the bot's polling settings and a handler that does nothing, except delete the
    sentinel message so the harness sees the end the same way."""
    from telegram import Update
    from telegram.ext import ApplicationBuilder, ContextTypes, MessageHandler, filters

    from bot.app import ALLOWED_UPDATES

    async def noop(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is not None and message.from_user is not None and message.from_user.id == SENTINEL_USER:
            await context.bot.delete_message(message.chat.id, message.message_id)

    app = (
        ApplicationBuilder()
        .token(os.environ["QINGLANG_TELEGRAM_TOKEN"])
        .base_url(base_url)
        .concurrent_updates(False)
        .build()
    )
    app.add_handler(MessageHandler(filters.ALL, noop))
    app.run_polling(allowed_updates=ALLOWED_UPDATES)


if __name__ == "__main__":
    _noop_main(sys.argv[1])
