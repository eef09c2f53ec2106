"""A durable journal of fetched updates, so a crash never loses one that polling already confirmed.

python-telegram-bot's polling confirms a batch to Telegram (the next getUpdates carries a higher
`offset`) as soon as it has fetched it, before the handlers run; Telegram never sends a confirmed update
again. So `JournalingRequest` (a public `BaseRequest` wrapped around the getUpdates client) writes every
fetched update to a local SQLite journal, committed with synchronous=FULL, *before* PTB sees the
response. Once an update's handlers have all run it is marked done (bot/app.py: `ServicesGate`); the
marks are written with the next fetched batch's commit, or after `IDLE_FLUSH` seconds when no batch
comes (a lost mark only replays an update, which is never acted on twice); on start,
`replay_unfinished` runs the updates that were fetched but never finished, before polling begins.

Telegram resends the last, unconfirmed batch after a restart: updates already in the journal are handed
to PTB as empty updates (just the id), so the offset still advances and nothing is judged twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sqlite3
import threading
import time
import warnings
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from telegram import Update
from telegram.request import BaseRequest, RequestData

if TYPE_CHECKING:
    from bot.context import QinglangApp

log = logging.getLogger(__name__)

KEEP_DONE = 10_000  # finished entries kept (duplicates of older updates cannot arrive any more)
IDLE_FLUSH = 0.25  # seconds a done-mark waits for a fetched batch's commit to carry it (see flush_soon)


class UpdateJournal:
    """The journal file (SQLite, 0600). Opened on first use; safe to call from any thread."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._done_since_prune = 0
        self._done: list[int] = []  # done-marks not yet written (see mark_done)
        self._done_lock = threading.Lock()
        self._flush_timer: asyncio.TimerHandle | None = None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not self.path.exists():
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS updates (update_id INTEGER PRIMARY KEY, raw TEXT NOT NULL,"
                " fetched_at REAL NOT NULL, done_at REAL)"
            )
            self._conn = conn
        return self._conn

    def exists(self) -> bool:
        return self._conn is not None or self.path.exists()

    def add(self, updates: list[dict[str, Any]]) -> set[int]:
        """Journal fetched updates durably; returns the ids that were not in the journal before."""
        return self.add_encoded([(int(u["update_id"]), json.dumps(u, ensure_ascii=False)) for u in updates])

    def add_encoded(self, updates: list[tuple[int, str]]) -> set[int]:
        """`add` for updates already in JSON, as (update id, JSON text). The done-marks waiting are
        written in the same commit: under load, marks cost no transaction of their own."""
        with self._lock:
            db = self._db()
            db.execute("PRAGMA synchronous=FULL")  # fsync at commit: on disk before PTB confirms them
            now = time.time()
            db.execute("BEGIN IMMEDIATE")
            try:
                new: set[int] = set()
                if updates:
                    ids = [uid for uid, _ in updates]
                    # Journaled before (resent after a restart): one range read tells which.
                    known = {
                        uid
                        for (uid,) in db.execute(
                            "SELECT update_id FROM updates WHERE update_id BETWEEN ? AND ?",
                            (min(ids), max(ids)),
                        )
                    }
                    fresh = [(uid, raw, now) for uid, raw in updates if uid not in known]
                    db.executemany(
                        "INSERT OR IGNORE INTO updates (update_id, raw, fetched_at) VALUES (?, ?, ?)", fresh
                    )
                    new = {uid for uid, _, _ in fresh}
                self._write_done(db)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return new

    def forget(self, update_ids: Iterable[int]) -> None:
        """Drop entries fetched ahead and never handed to PTB: fetched again, they are new."""
        ids = [(int(u),) for u in update_ids]
        with self._lock:
            db = self._db()
            db.executemany("DELETE FROM updates WHERE update_id = ?", ids)
            db.commit()

    def mark_done(self, update_ids: Iterable[int], *, flush: bool = True) -> int:
        """Handlers have finished with these updates. With flush=False the marks wait for `flush_done`
        and the call never waits for the journal (a lost "done" only means a harmless replay: incidents
        are idempotent, and an update whose action was taken is never acted on twice). Returns how
        many marks are waiting."""
        with self._done_lock:  # held for microseconds, never across I/O
            self._done.extend(int(u) for u in update_ids)
            waiting = len(self._done)
        if flush:
            self.flush_done()
        return waiting

    def flush_done(self) -> None:
        """Write the done-marks that are waiting (nothing once closed: close() wrote them)."""
        with self._lock:
            if self._conn is not None:
                self._flush_done()

    def flush_soon(self, loop: asyncio.AbstractEventLoop) -> None:
        """Write the waiting marks in `IDLE_FLUSH` seconds, in a thread, unless a fetched batch's commit
        carries them first (at a low rate the next batch may be a long poll away)."""
        if self._flush_timer is not None:
            return

        def flush() -> None:
            self._flush_timer = None
            if self._done:
                loop.run_in_executor(None, self.flush_done)

        self._flush_timer = loop.call_later(IDLE_FLUSH, flush)

    def _flush_done(self) -> None:
        if not self._done:
            return
        db = self._db()
        # No fsync needed, for the same reason as above.
        db.execute("PRAGMA synchronous=NORMAL")
        self._write_done(db)

    def _write_done(self, db: sqlite3.Connection) -> None:
        with self._done_lock:
            done, self._done = self._done, []
        if not done:
            return
        now = time.time()
        ids = [(now, u) for u in done]
        db.executemany("UPDATE updates SET done_at = ? WHERE update_id = ? AND done_at IS NULL", ids)
        self._done_since_prune += len(ids)
        if self._done_since_prune >= 1000:
            self._done_since_prune = 0
            db.execute(
                "DELETE FROM updates WHERE done_at IS NOT NULL AND update_id < "
                "(SELECT COALESCE(MAX(update_id), 0) FROM updates) - ?",
                (KEEP_DONE,),
            )

    def unfinished(self) -> list[dict[str, Any]]:
        """Updates fetched but not finished, oldest first."""
        if not self.exists():
            return []
        with self._lock:
            self._flush_done()
            rows = (
                self._db()
                .execute("SELECT raw FROM updates WHERE done_at IS NULL ORDER BY update_id")
                .fetchall()
            )
        return [json.loads(raw) for (raw,) in rows]

    def close(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        with self._lock:
            if self._conn is not None:
                self._flush_done()
                self._conn.close()
                self._conn = None


_DECODER = json.JSONDecoder()
_RESULT_START = re.compile(r'\s*\{\s*"ok"\s*:\s*true\s*,\s*"result"\s*:\s*\[\s*')
_SEPARATOR = re.compile(r"\s*(,|\])\s*")
_END = re.compile(r"\s*\}\s*")


def split_updates(body: bytes) -> tuple[dict[str, Any], list[str]] | None:
    """A getUpdates body parsed, with each update's own JSON text (a slice of the body, so the journal
    stores the bytes Telegram sent instead of encoding every update again); None for any other shape."""
    try:
        text = body.decode()
    except UnicodeDecodeError:
        return None
    match = _RESULT_START.match(text)
    if match is None:
        return None
    pos = match.end()
    updates: list[Any] = []
    raws: list[str] = []
    try:
        if text.startswith("]", pos):
            pos += 1
        else:
            while True:
                update, end = _DECODER.raw_decode(text, pos)
                updates.append(update)
                raws.append(text[pos:end])
                sep = _SEPARATOR.match(text, end)
                if sep is None:
                    return None
                pos = sep.end()
                if sep.group(1) == "]":
                    break
    except json.JSONDecodeError:
        return None
    if _END.fullmatch(text, pos) is None or not all(isinstance(u, dict) for u in updates):
        return None
    return {"ok": True, "result": updates}, raws


class DelegatingRequest(BaseRequest):
    """A `BaseRequest` that hands every call to `inner`; subclasses override `do_request` to step in."""

    def __init__(self, inner: BaseRequest) -> None:
        self.inner = inner

    @property
    def read_timeout(self) -> float | None:
        return self.inner.read_timeout

    async def initialize(self) -> None:
        await self.inner.initialize()

    async def shutdown(self) -> None:
        await self.inner.shutdown()

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: Any = BaseRequest.DEFAULT_NONE,
        write_timeout: Any = BaseRequest.DEFAULT_NONE,
        connect_timeout: Any = BaseRequest.DEFAULT_NONE,
        pool_timeout: Any = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        return await self.inner.do_request(
            url,
            method,
            request_data,
            read_timeout=read_timeout,
            write_timeout=write_timeout,
            connect_timeout=connect_timeout,
            pool_timeout=pool_timeout,
        )


class JournalingRequest(DelegatingRequest):
    """Wraps the getUpdates `BaseRequest`: journals each fetched batch before PTB gets it, then shows
    the batch to `on_batch` (the classifier worker starts judging it while the handlers are busy)."""

    def __init__(self, inner: BaseRequest, journal: UpdateJournal | None) -> None:
        super().__init__(inner)
        self.journal = journal
        self.on_batch: Callable[[list[dict[str, Any]]], object] | None = None
        # Then the ids of updates already handled (bot/fast_pass.py): PTB gets only their update_id.
        self.on_fetched: Callable[[list[dict[str, Any]]], Awaitable[set[int]]] | None = None
        self.read_ahead = False  # fetch the next batch while this one is handled (see do_request)
        self._ahead: tuple[int, asyncio.Future[_Fetched]] | None = None
        # The last body parsed here and what it parsed to: PTB's parse of the same bytes reuses it.
        self._parsed: tuple[bytes, dict[str, Any]] | None = None

    async def shutdown(self) -> None:
        await self.cancel_ahead()
        await super().shutdown()

    def parse_json_payload(self, payload: bytes) -> dict[str, Any]:  # type: ignore[override]
        """PTB's JSON parse of a response (a public hook): a getUpdates body was parsed already."""
        parsed, self._parsed = self._parsed, None
        if parsed is not None and parsed[0] is payload:
            return parsed[1]
        return BaseRequest.parse_json_payload(payload)

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: Any = BaseRequest.DEFAULT_NONE,
        write_timeout: Any = BaseRequest.DEFAULT_NONE,
        connect_timeout: Any = BaseRequest.DEFAULT_NONE,
        pool_timeout: Any = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        timeouts = {
            "read_timeout": read_timeout,
            "write_timeout": write_timeout,
            "connect_timeout": connect_timeout,
            "pool_timeout": pool_timeout,
        }
        if not url.endswith("/getUpdates"):
            return await super().do_request(url, method, request_data, **timeouts)
        params = request_data.parameters if request_data is not None else {}
        fetched = await self._take_ahead(params.get("offset"))
        if fetched is None:
            fetched = await self._fetch(url, method, request_data, timeouts)
        limit = int(str(params.get("limit") or 100))
        if self.read_ahead and len(fetched.updates) >= limit and request_data is not None:
            # A full batch: more are waiting. Fetch the next one now (no long poll), before waiting for
            # this one's verdicts: the worker goes on to it while PTB and the handlers deal with this one.
            offset = max(int(u["update_id"]) for u in fetched.updates) + 1
            # The parameters go in the query string (the Bot API reads them there too): PTB's
            # RequestData is final, and its parameter type private.
            query = urlencode({**request_data.json_parameters, "offset": str(offset), "timeout": "0"})
            fetch = self._fetch(f"{url}?{query}", method, None, timeouts)
            self._ahead = (offset, asyncio.ensure_future(fetch))
        if fetched.updates and fetched.payload is not None and self.on_fetched is not None:
            try:
                handled = await self.on_fetched(fetched.updates)
            except Exception:  # the handlers judge them instead
                log.exception("passing clean messages of a fetched batch failed")
                handled = set()
            if handled:
                # Not encoded again: PTB reads the payload through `parse_json_payload` (body unchanged).
                fetched.payload["result"] = [
                    {"update_id": u["update_id"]} if u["update_id"] in handled else u for u in fetched.updates
                ]
        if fetched.payload is not None:
            self._parsed = (fetched.body, fetched.payload)
        return fetched.code, fetched.body

    async def _take_ahead(self, offset: object) -> _Fetched | None:
        """The batch fetched ahead, when it is the one PTB asks for now."""
        if self._ahead is None:
            return None
        ahead_offset, task = self._ahead
        self._ahead = None
        try:
            fetched = await task
        except Exception:  # fetched again below, as if never fetched ahead
            log.warning("fetching updates ahead failed", exc_info=True)
            return None
        if fetched.code == 200 and offset == ahead_offset:
            return fetched
        if fetched.updates and self.journal is not None:  # PTB asked for another offset: fetched again
            await asyncio.to_thread(self.journal.forget, [u["update_id"] for u in fetched.updates])
        return None

    async def cancel_ahead(self) -> None:
        """At shutdown: drop a batch fetched ahead (unconfirmed, so Telegram sends it again)."""
        await self._take_ahead(object())

    async def _fetch(
        self, url: str, method: str, request_data: RequestData | None, timeouts: dict[str, Any]
    ) -> _Fetched:
        code, body = await super().do_request(url, method, request_data, **timeouts)
        if code != 200:
            return _Fetched(code, body, None, [])
        split = split_updates(body)
        if split is None:  # not the shape Telegram sends: parsed and encoded again
            payload = json.loads(body)
            raws = None
        else:
            payload, raws = split
        updates = payload.get("result") or []
        if not updates:
            return _Fetched(code, body, payload, [])
        if self.journal is not None:
            if raws is None:
                new = await asyncio.to_thread(self.journal.add, updates)
            else:
                entries = [(int(u["update_id"]), raw) for u, raw in zip(updates, raws, strict=True)]
                new = await asyncio.to_thread(self.journal.add_encoded, entries)
            if len(new) != len(updates):
                # Seen before (resent after a restart): keep only the id, so PTB advances the offset past it.
                updates = [u if u["update_id"] in new else {"update_id": u["update_id"]} for u in updates]
                payload["result"] = updates
                body = json.dumps(payload).encode()
        if self.on_batch is not None:
            try:
                self.on_batch(updates)
            except Exception:  # only a head start: the handlers judge every message regardless
                log.exception("prefetching a fetched batch failed")
        return _Fetched(code, body, payload, updates)


@dataclass(slots=True)
class _Fetched:
    """A getUpdates answer: status, body as received, what it parsed to, the updates (journaled)."""

    code: int
    body: bytes
    payload: dict[str, Any] | None
    updates: list[dict[str, Any]]


async def replay_unfinished(
    application: QinglangApp,
    journal: UpdateJournal,
    pending: list[dict[str, Any]] | None = None,
    finished: Callable[[object], None] | None = None,
) -> int:
    """Run every journaled update whose handlers never finished (call before polling starts), or those
    of `pending`, read from the journal before polling started; `finished` is called after each, as
    polling's `ServicesGate` does (bot/app.py)."""
    if pending is None:
        pending = await asyncio.to_thread(journal.unfinished)
    if not pending:
        return 0
    log.info("replaying %d journaled updates that were fetched but not finished", len(pending))
    with warnings.catch_warnings():
        # Tasks a handler creates are awaited by `settle`/shutdown, not by the not-yet-running Application.
        warnings.filterwarnings("ignore", message=".*is not running.*")
        for raw in pending:
            update = Update.de_json(raw, application.bot)
            await application.process_update(update)
            if finished is not None:
                finished(update)
    return len(pending)
