"""Operations: /metrics and /healthz of the real bot polling the emulator, and structured, content-free logs.

The bot runs as in production (post_init, polling, post_shutdown) against the in-process Bot API
emulator; its metrics port is a free loopback port, scraped over real TCP.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from botenv import shared_model
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bot.app import ALLOWED_UPDATES, build_application
from bot.config import Settings
from bot.emulator import Emulator
from bot.logfmt import JsonFormatter, KeyValueFormatter
from bot.logs import REDACTED, add_secret
from bot.metrics import CLASSIFY_BUCKETS, HANDLE_BUCKETS, Metrics
from bot.moderation import Outcome

BOT_ID = 777000333
TOKEN = f"{BOT_ID}:AAmetrics-tests-token-0123456789abcdefgh"
GROUP = -1001600000001
ADMIN = 1201
MEMBER = 1202
SPAMMER = 1203

SPAM = "出冰，货真价实，量大从优，需要的加V：bing8888"
FRAUD = "急招刷单员，手机操作，日结300-500，加QQ 2837465910"
CLEAN = ["大家早上好！今天天气不错，周末有人一起去爬山吗？", "请问群里有人知道附近哪家面馆好吃吗"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class OpsEnv:
    app: Any
    emu: Emulator
    port: int
    db_dir: Path
    outcomes: list[Outcome]
    errors: list[BaseException]

    @property
    def services(self) -> Any:
        return self.app.bot_data.services

    async def say(self, text: str, sender: int) -> Outcome:
        """A group message, through getUpdates polling; returns what moderation did with it."""
        before = len(self.outcomes)
        self.emu.message(GROUP, sender, text)
        await self.emu.wait_for(lambda: len(self.outcomes) > before, timeout=10)
        return self.outcomes[before]

    async def get(self, path: str, method: str = "GET") -> httpx.Response:
        async with httpx.AsyncClient(trust_env=False, timeout=10) as client:  # no proxy for loopback
            return await client.request(method, f"http://127.0.0.1:{self.port}{path}")

    async def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """{(sample name, sorted labels): value} from one scrape of /metrics."""
        response = await self.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return out


@pytest.fixture
async def ops(tmp_path: Path) -> AsyncIterator[OpsEnv]:
    emu = Emulator(TOKEN, bot_username="qinglang_metrics_bot")
    for user, name in ((ADMIN, "管理员"), (MEMBER, "小王"), (SPAMMER, "推广")):
        emu.add_user(user, name)
    emu.add_chat(GROUP, "运维测试群", admins=[ADMIN], owner=ADMIN)
    db_dir = tmp_path / "db"
    db_dir.mkdir()
    port = free_port()
    settings = Settings(
        telegram_token=TOKEN,  # type: ignore[arg-type]
        database_url=f"sqlite+aiosqlite:///{db_dir / 'qinglang.db'}",
        spool_dir=tmp_path / "spool",
        metrics_host="127.0.0.1",
        metrics_port=port,
        notice_min_interval_seconds=0,
        telegram_retries=0,
        _env_file=None,  # type: ignore[call-arg]
    )
    outcomes: list[Outcome] = []
    app = build_application(
        settings,
        request=emu.request(),
        get_updates_request=emu.request(),
        classifier=shared_model(),
        observers=[lambda record, outcome: outcomes.append(outcome)],
    )
    errors: list[BaseException] = []

    async def record_error(update: object, context: Any) -> None:
        errors.append(context.error)

    app.add_error_handler(record_error)
    await app.initialize()
    await app.post_init(app)  # run_polling() would call it
    await app.updater.start_polling(allowed_updates=ALLOWED_UPDATES, poll_interval=0, timeout=1)
    await app.start()
    try:
        yield OpsEnv(app=app, emu=emu, port=port, db_dir=db_dir, outcomes=outcomes, errors=errors)
    finally:
        emu.close()  # release the long poll
        await app.updater.stop()
        await app.stop()
        await app.shutdown()
        await app.post_shutdown(app)
    assert not errors, errors
    assert emu.internal_errors == []


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_counters_and_histograms_move_with_the_messages(ops: OpsEnv) -> None:
    before = await ops.samples()
    assert value(before, "qinglang_messages_seen_total", status="ok") == 0
    assert value(before, "qinglang_spool_depth") == 0
    assert (("qinglang_delete_failures_total", (("kind", "no_rights"),))) in before, "kinds start at 0"

    for text in CLEAN:
        assert (await ops.say(text, MEMBER)).status == "ok"
    deleted = await ops.say(SPAM, SPAMMER)
    assert deleted.status == "deleted"
    ops.emu.fail("deleteMessage", 400, "Bad Request: message can't be deleted")
    failed = await ops.say(FRAUD, SPAMMER)
    assert failed.status == "delete_failed"

    after = await ops.samples()
    assert value(after, "qinglang_messages_seen_total", status="ok") == 2
    assert value(after, "qinglang_messages_seen_total", status="deleted") == 1
    assert value(after, "qinglang_messages_seen_total", status="delete_failed") == 1
    assert value(after, "qinglang_incidents_total", category=deleted.category or "", action="deleted") == 1
    assert (
        value(after, "qinglang_incidents_total", category=failed.category or "", action="delete_failed") == 1
    )
    assert value(after, "qinglang_delete_failures_total", kind="no_rights") == 1
    assert value(after, "qinglang_telegram_api_errors_total", method="deleteMessage", kind="no_rights") == 1
    assert value(after, "qinglang_classify_seconds_count") == 4
    assert value(after, "qinglang_end_to_end_seconds_count") == 4
    classify, handled = (value(after, f"qinglang_{h}_seconds_sum") for h in ("classify", "end_to_end"))
    assert 0 < classify <= handled
    assert value(after, "qinglang_spool_depth") == 0
    scraped = (await ops.get("/metrics")).text + (await ops.get("/healthz")).text
    for secret in (SPAM, "bing8888", TOKEN, TOKEN.split(":")[1]):
        assert secret not in scraped, "metrics and health never carry content or the token"


def _scraped(exposition: bytes, names: tuple[str, ...]) -> dict[tuple[str, tuple[Any, ...]], float]:
    out = {}
    for family in text_string_to_metric_families(exposition.decode()):
        if family.name in names:
            for sample in family.samples:
                created = sample.name.endswith("_created")  # a time: only its presence is compared
                out[(sample.name, tuple(sorted(sample.labels.items())))] = 1.0 if created else sample.value
    return out


def test_per_message_tallies_scrape_as_prometheus_client_would() -> None:
    """Messages, verdict sources and both histograms are plain tallies on the hot path: a scrape shows
    the very samples prometheus_client's own Counter and Histogram would for the same messages."""
    ours = Metrics()
    reference = CollectorRegistry()
    seen = Counter("qinglang_messages_seen", "seen", ["status"], registry=reference)
    sources = Counter("qinglang_verdicts", "sources", ["source"], registry=reference)
    classify = Histogram("qinglang_classify_seconds", "c", buckets=CLASSIFY_BUCKETS, registry=reference)
    handled = Histogram("qinglang_end_to_end_seconds", "h", buckets=HANDLE_BUCKETS, registry=reference)
    # on a bound, between bounds, below the first and above the last
    times = [0.00005, 0.0001, 0.0003, 0.001, 0.7, 2.0, 75.0]
    for i, seconds in enumerate(times):
        status = ("ok", "queued", "deleted")[i % 3]
        extra: dict[str, Any] = {"classify_seconds": seconds, "handled_seconds": seconds * 2}
        if i % 2:
            extra["verdict_source"] = "worker"
        ours.observe(None, Outcome(status, extra=extra))  # type: ignore[arg-type]
        seen.labels(status=status).inc()
        if i % 2:
            sources.labels(source="worker").inc()
        classify.observe(seconds)
        handled.observe(seconds * 2)
    # an admin's delete of a message already counted: its timing counts, the message does not again
    ours.observe(None, Outcome("deleted", extra={"decided_by": "admin:1", "handled_seconds": 0.5}))  # type: ignore[arg-type]
    handled.observe(0.5)

    names = (
        "qinglang_messages_seen",
        "qinglang_verdicts",
        "qinglang_classify_seconds",
        "qinglang_end_to_end_seconds",
    )
    got = _scraped(ours.exposition(), names)
    assert got == _scraped(generate_latest(reference), names)
    assert got[("qinglang_messages_seen_total", (("status", "ok"),))] == 3
    assert got[("qinglang_end_to_end_seconds_count", ())] == len(times) + 1


async def test_healthz_answers_200_then_503_when_the_database_is_gone(ops: OpsEnv) -> None:
    response = await ops.get("/healthz")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"status": "ok", "model": shared_model().version, "db": "ok"}

    # The database goes away: its directory moves, and pooled connections are dropped.
    ops.db_dir.rename(ops.db_dir.with_name("elsewhere"))
    await ops.services.db.engine.dispose()
    response = await ops.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable" and body["db"].startswith("error: ")
    assert str(ops.db_dir) not in response.text, "no paths or DSNs in the health answer"

    ops.db_dir.with_name("elsewhere").rename(ops.db_dir)  # and comes back
    assert (await ops.get("/healthz")).status_code == 200


async def test_only_two_paths_and_two_methods(ops: OpsEnv) -> None:
    assert (await ops.get("/")).status_code == 404
    assert (await ops.get("/metrics/../admin")).status_code == 404
    assert (await ops.get("/metrics", method="POST")).status_code == 405
    head = await ops.get("/healthz", method="HEAD")
    assert head.status_code == 200 and head.content == b""
    assert (await ops.get("/metrics?name[]=qinglang_spool_depth")).status_code == 200


async def test_garbage_and_silence_do_not_disturb_the_server(ops: OpsEnv) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", ops.port)
    writer.write(b"\x16\x03\x01 not http at all\r\n\r\n")
    await writer.drain()
    assert (await reader.read()).startswith(b"HTTP/1.1 400")
    writer.close()
    _, idle = await asyncio.open_connection("127.0.0.1", ops.port)  # says nothing, stays open
    reader, writer = await asyncio.open_connection("127.0.0.1", ops.port)
    writer.write(b"X" * 20000)  # a head longer than the server reads
    await writer.drain()
    assert await reader.read() == b""
    writer.close()
    assert (await ops.get("/healthz")).status_code == 200
    idle.close()


async def test_metrics_port_taken_or_zero_leaves_the_bot_running(tmp_path: Path) -> None:
    emu = Emulator(TOKEN)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        for port in (taken, 0):
            settings = Settings(
                telegram_token=TOKEN,  # type: ignore[arg-type]
                database_url=f"sqlite+aiosqlite:///{tmp_path / f'q{port}.db'}",
                spool_dir=tmp_path / f"spool{port}",
                metrics_port=port,
                _env_file=None,  # type: ignore[call-arg]
            )
            app = build_application(
                settings, request=emu.request(), get_updates_request=emu.request(), classifier=shared_model()
            )
            await app.initialize()
            await app.post_init(app)
            services = app.bot_data.services
            assert services.metrics is not None and services.metrics.server is None
            await app.shutdown()
            await app.post_shutdown(app)


def test_settings_default_to_loopback_9108(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QINGLANG_METRICS_PORT", raising=False)
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert (s.metrics_host, s.metrics_port, s.log_format) == ("127.0.0.1", 9108, "text")
    monkeypatch.setenv("QINGLANG_LOG_FORMAT", "json")
    monkeypatch.setenv("QINGLANG_METRICS_PORT", "0")
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert (s.metrics_port, s.log_format) == (0, "json")


# --- logs -----------------------------------------------------------------------------------------


async def test_info_logs_never_carry_message_text_or_the_token(
    ops: OpsEnv, caplog: pytest.LogCaptureFixture
) -> None:
    add_secret(TOKEN)
    caplog.set_level(logging.INFO)
    # httpx's request lines carry the token in the URL; configure_logging quiets them, but not here.
    caplog.set_level(logging.INFO, logger="httpx")
    deleted = await ops.say(SPAM, SPAMMER)
    ops.emu.fail("deleteMessage", 400, "Bad Request: message can't be deleted")
    failed = await ops.say(FRAUD, SPAMMER)
    clean = await ops.say(CLEAN[0], MEMBER)
    assert (deleted.status, failed.status, clean.status) == ("deleted", "delete_failed", "ok")

    records = [r for r in caplog.records if r.levelno >= logging.INFO]
    lines = [f.format(r) for r in records for f in (KeyValueFormatter(), JsonFormatter())]
    # The solicitations, their contacts and the clean text: none of it at INFO or above.
    for secret in (SPAM, FRAUD, CLEAN[0], "bing8888", "2837465910", "货真价实", TOKEN, TOKEN.split(":")[1]):
        offenders = [line for line in lines if secret in line]
        assert not offenders, f"{secret!r} logged: {offenders[:3]}"
    # Not vacuous: the moderation events are logged, as structured fields.
    events = [json.loads(JsonFormatter().format(r)) for r in records if getattr(r, "event", None)]
    moderated = [e for e in events if e["event"] == "moderated"]
    assert {e["status"] for e in moderated} == {"deleted", "delete_failed"}
    assert all(e["chat_id"] == GROUP and e["incident_id"] for e in moderated)
    assert any(REDACTED in line for line in lines), "httpx's request lines were captured, redacted"


def _record(msg: str, *args: Any, **extra: Any) -> logging.LogRecord:
    record = logging.getLogger("bot.test").makeRecord(
        "bot.test", logging.INFO, __file__, 1, msg, args, None, extra=extra
    )
    return record


def test_text_format_is_one_key_value_line() -> None:
    line = KeyValueFormatter().format(
        _record("chat %s: %s", -100, "two\nlines", chat_id=-100, status="deleted", note='a "b" c')
    )
    assert "\n" not in line
    fields = dict(part.split("=", 1) for part in line.split(" ") if "=" in part and part[0].isalpha())
    assert fields["level"] == "info" and fields["logger"] == "bot.test"
    assert fields["chat_id"] == "-100" and fields["status"] == "deleted"
    assert 'msg="chat -100: two\\nlines"' in line
    assert 'note="a \\"b\\" c"' in line


def test_json_format_is_one_object_a_line_with_the_traceback() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        import sys

        record = logging.getLogger("bot.test").makeRecord(
            "bot.test", logging.ERROR, __file__, 1, "failed", (), sys.exc_info(), extra={"chat_id": 5}
        )
    line = JsonFormatter().format(record)
    assert "\n" not in line
    data = json.loads(line)
    assert data["level"] == "error" and data["msg"] == "failed" and data["chat_id"] == 5
    assert "RuntimeError: boom" in data["exc"]
    assert data["ts"].endswith("+00:00")


def test_formatters_redact_extra_fields() -> None:
    add_secret(TOKEN)
    for formatter in (KeyValueFormatter(), JsonFormatter()):
        line = formatter.format(_record("url", url=f"https://api.telegram.org/bot{TOKEN}/getMe"))
        assert TOKEN not in line and REDACTED in line
