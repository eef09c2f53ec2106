"""Prometheus metrics and a health check, served on their own small HTTP port.

`Metrics` keeps its collectors in a registry of its own (never prometheus_client's global one), so
several bots in one process, as in the tests, never collide. It is fed three ways: `observe` is one of
the app's observers (called with each group message's record and outcome), `api_error` is SafeTelegram's
error callback, and the spool-depth gauge reads a callable when scraped.

`MetricsServer` answers `GET /metrics` (Prometheus text format) and `GET /healthz` (JSON; 200 when the
database answers a trivial query, 503 otherwise) with a few lines of asyncio: prometheus_client's own
server cannot serve a health check, and the bot needs no web framework for two fixed paths.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterator, Sequence
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, get_args
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString
from sqlalchemy import text

from bot.telegram_io import ErrorKind

if TYPE_CHECKING:
    from bot.context import Services
    from bot.moderation import MessageRecord, Outcome

log = logging.getLogger(__name__)

# Outcome statuses that mean "an incident was recorded and this is what was done about it". A duplicate
# is an incident seen again, not a new one.
INCIDENT_ACTIONS = ("deleted", "delete_failed", "review", "dry_run")

# Classification runs inline on the event loop and usually takes well under a millisecond.
CLASSIFY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
# Handling includes database commits and Telegram round trips, and flood-control waits of up to 30 s.
HANDLE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Tally:
    """A histogram's counts as plain numbers: `observe` costs a bisect and two additions, against
    prometheus_client's lock and bucket loop (it runs for every message)."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self.bounds = tuple(float(b) for b in buckets)
        self.counts = [0] * (len(self.bounds) + 1)  # the last: above every bound (+Inf only)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def family(self, name: str, documentation: str, created: float) -> HistogramMetricFamily:
        """The histogram as prometheus_client's own `Histogram` would expose it."""
        cumulative, buckets = 0, []
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            cumulative += count
            buckets.append((floatToGoString(bound), cumulative))
        family = HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=self.sum)
        family.samples.append(Sample(f"{name}_created", {}, created))
        return family


class MessageTallies(Collector):
    """What is counted for every group message, as plain numbers on the event loop (the only thread
    that observes or scrapes), exposed at each scrape under the names and types they always had."""

    def __init__(self) -> None:
        self.created = time.time()
        self.seen: dict[str, int] = {}  # by outcome status
        self.sources: dict[str, int] = {}  # verdicts by where they were computed
        self.classify = Tally(CLASSIFY_BUCKETS)
        self.handled = Tally(HANDLE_BUCKETS)

    def collect(self) -> Iterator[Metric]:
        seen = CounterMetricFamily(
            "qinglang_messages_seen",
            "Group messages and edits seen by moderation, by outcome status",
            labels=["status"],
        )
        for status, count in self.seen.items():
            seen.add_metric([status], count, created=self.created)
        yield seen
        sources = CounterMetricFamily(
            "qinglang_verdicts",
            "Verdicts by where they were computed: the classifier worker ahead of the handler (fast_pass: "
            "a clean message passed before PTB parsed it), or the bot's own process (worker behind, gone or "
            "off; per-chat thresholds changed the label)",
            labels=["source"],
        )
        for source, count in self.sources.items():
            sources.add_metric([source], count, created=self.created)
        yield sources
        yield self.classify.family("qinglang_classify_seconds", "Time to classify one message", self.created)
        yield self.handled.family(
            "qinglang_end_to_end_seconds",
            "Time from a group message reaching its handler to the end of its moderation "
            "(evidence committed, Telegram actions done)",
            self.created,
        )


class Metrics:
    """The bot's collectors, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.incidents = Counter(
            "qinglang_incidents",
            "Incidents recorded, by category and the action taken",
            ["category", "action"],
            registry=r,
        )
        self.delete_failures = Counter(
            "qinglang_delete_failures",
            "Flagged messages whose delete failed, by error kind",
            ["kind"],
            registry=r,
        )
        self.api_errors = Counter(
            "qinglang_telegram_api_errors",
            "Bot API calls that failed after retries, by method and error kind",
            ["method", "kind"],
            registry=r,
        )
        self.spool_depth = Gauge(
            "qinglang_spool_depth",
            "Evidence entries waiting in the local spool for the database",
            registry=r,
        )
        # Counted for every message: plain tallies, read at each scrape (`MessageTallies`).
        self.tallies = MessageTallies()
        r.register(self.tallies)
        # Zeros from the start, so a rate() over the first failure is not lost.
        for kind in get_args(ErrorKind):
            self.delete_failures.labels(kind=kind)
        self.spool_depth.set(0)
        self.server: MetricsServer | None = None

    def read_spool_depth(self, depth: Callable[[], float] | None) -> None:
        """Read the spool depth from `depth()` at each scrape (None: report 0)."""
        if depth is None:
            self.spool_depth.set_function(lambda: 0.0)
        else:
            self.spool_depth.set_function(lambda: float(depth()))

    def observe(self, record: MessageRecord, outcome: Outcome) -> None:
        """App observer: count one moderated message (never its content)."""
        tallies = self.tallies
        extra = outcome.extra
        if "decided_by" not in extra:  # an admin's delete acts on a message already counted
            seen = tallies.seen
            seen[outcome.status] = seen.get(outcome.status, 0) + 1
        source = extra.get("verdict_source")
        if isinstance(source, str):
            tallies.sources[source] = tallies.sources.get(source, 0) + 1
        classify = extra.get("classify_seconds")
        if isinstance(classify, float):
            tallies.classify.observe(classify)
        handled = extra.get("handled_seconds")
        if isinstance(handled, float):
            tallies.handled.observe(handled)
        if outcome.status in INCIDENT_ACTIONS:
            self.incidents.labels(category=outcome.category or "unknown", action=outcome.status).inc()
        if outcome.status == "delete_failed":
            self.delete_failures.labels(kind=str(outcome.extra.get("delete_error_kind") or "unknown")).inc()

    def api_error(self, method: str, kind: str) -> None:
        """SafeTelegram callback: one Bot API call ended in an error."""
        self.api_errors.labels(method=method, kind=kind).inc()

    def exposition(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)

    async def serve(self, health: HealthCheck, *, host: str, port: int) -> tuple[str, int] | None:
        """Serve /metrics and /healthz on host:port; the address bound, or None (off, or port taken).

        Fail safe: a busy port is logged, not raised, so metrics never keep the bot from moderating.
        """
        if port == 0:
            return None
        server = MetricsServer(self, health)
        try:
            address = await server.start(host, port)
        except OSError as exc:
            log.error("metrics: cannot listen on %s:%s (%s); /metrics and /healthz are off", host, port, exc)
            return None
        self.server = server
        log.info("metrics on http://%s:%s/metrics, health on /healthz", *address)
        return address

    async def close(self) -> None:
        """Stop serving (post_shutdown)."""
        if self.server is not None:
            await self.server.close()
            self.server = None


# --- health -------------------------------------------------------------------------------------

HealthCheck = Callable[[], Awaitable[tuple[int, dict[str, Any]]]]


async def check_health(services: Services | None, *, timeout: float = 3.0) -> tuple[int, dict[str, Any]]:
    """200 and the model version when the database answers `SELECT 1` within `timeout`, else 503."""
    if services is None:
        return 503, {"status": "starting", "model": None, "db": "not open"}
    body: dict[str, Any] = {
        "status": "ok",
        "model": getattr(services.classifier, "version", None),
        "db": "ok",
    }
    try:
        async with asyncio.timeout(timeout), services.db.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:
        # The exception's class only: its message may carry a host name or a DSN.
        body.update(status="unavailable", db=f"error: {type(exc).__name__}")
        return 503, body
    return 200, body


# --- the HTTP server ----------------------------------------------------------------------------

_MAX_HEAD = 8192  # bytes of request line and headers we read; a scraper sends a few hundred
_READ_TIMEOUT = 5.0


class MetricsServer:
    """`/metrics` and `/healthz` over plain HTTP/1.1, one request a connection."""

    def __init__(self, metrics: Metrics, health: HealthCheck) -> None:
        self.metrics = metrics
        self.health = health
        self._server: asyncio.Server | None = None
        self.address: tuple[str, int] | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen on host:port (port 0: any free port); returns the address bound."""
        self._server = await asyncio.start_server(self._handle, host, port, limit=_MAX_HEAD)
        sockname = self._server.sockets[0].getsockname()
        self.address = (str(sockname[0]), int(sockname[1]))
        return self.address

    async def close(self) -> None:
        """Stop listening (requests in flight finish on their own; each is bounded by a timeout)."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _READ_TIMEOUT)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
                return
            status, content_type, body, head_only = await self._respond(head)
            lines = [
                f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
                f"Content-Type: {content_type}",
                f"Content-Length: {len(body)}",
                "Cache-Control: no-store",
                "Connection: close",
            ]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + (b"" if head_only else body))
            await asyncio.wait_for(writer.drain(), _READ_TIMEOUT)
        except Exception:  # a scrape must never disturb the bot
            log.debug("metrics: request failed", exc_info=True)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _respond(self, head: bytes) -> tuple[int, str, bytes, bool]:
        parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return 400, "text/plain; charset=utf-8", b"bad request\n", False
        method, target = parts[0], parts[1]
        head_only = method == "HEAD"
        if method not in ("GET", "HEAD"):
            return 405, "text/plain; charset=utf-8", b"method not allowed\n", head_only
        path = urlsplit(target).path
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, self.metrics.exposition(), head_only
        if path == "/healthz":
            status, payload = await self.health()
            return status, "application/json", json.dumps(payload).encode() + b"\n", head_only
        return 404, "text/plain; charset=utf-8", b"not found: try /metrics or /healthz\n", head_only
