"""Classification on the second core: a forked worker process judges fetched batches ahead of the handlers.

Why: with sequential updates the event loop's core does everything (HTTP, PTB parsing, dispatch, evidence),
and classify alone costs about as much as all of PTB's work for an update. The getUpdates wrapper
(bot/journal.py) hands every fetched batch to `prefetch_updates` before PTB parses it; PTB's updater keeps
fetching while the handlers run, so under load the worker is judging batch N+1 while the loop handles N.

`verdict()` takes the worker's result if it has arrived. If not, and the worker is about to reach it
(at most `WAIT_AHEAD` messages before it), the handler awaits it for up to `WAIT_LIMIT` seconds, which
costs the bot no CPU (the worker answers at once instead of filling its chunk); otherwise, or when the
wait runs out, it classifies in-process (and tells the worker to skip past that message). Judging here
whenever the worker was a little behind kept the two in lockstep: a quarter of the verdicts were
computed twice. So a slow, dead or missing worker costs speed, never a message.

The worker's verdict is judged with the model's own thresholds; per-chat
thresholds are applied here from its scores, and when they change the label the message is classified
again in-process, so a verdict always equals `model.classify(text, thresholds, reasons="flagged")`: the
reasons of a pass verdict are left out (only delete and review verdicts are recorded with their reasons),
which spares the worker about a fifth of its work and the pipe most of each pass verdict's bytes.

The worker is forked once the model is loaded and warm, so it shares the model's memory pages with the
bot (copy-on-write; `gc.freeze()` keeps the collector from writing to them). `/reload` and SIGHUP replace
`services.classifier`; the next batch then finds a different model and launches a new worker from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Literal

from bot.moderation import GROUP_TYPES, raw_hidden_links
from classifier.verdict import Verdict, decide

log = logging.getLogger(__name__)

CHUNK = 16  # verdicts per reply: the first of a batch arrives after 16 classifications, not 100
MAX_PENDING = 20_000  # prefetched verdicts never asked for (admins' messages, chats that are off…)
RESTART_PAUSE = 30.0  # seconds between forks after a worker died
WAIT_AHEAD = 64  # messages before ours the worker may still have to judge for the handler to wait
WAIT_LIMIT = 0.05  # seconds the handler waits for a verdict in flight (a stalled worker: judged here)
WARM_TEXT = "预热：出冰 加V bing8888 QQ 2837465910 https://t.me/x"  # segmenter, normalizer, contacts

Key = tuple[int, int, int | None]  # chat id, message id, edit date (unix seconds) for edits
Source = Literal["worker", "in_process", "rejudged"]


def message_key(chat_id: int, message_id: int, edit_date: int | None) -> Key:
    """The key a prefetched verdict is filed under (an edit is a message of its own)."""
    return (chat_id, message_id, edit_date)


def raw_judged(update: Mapping[str, Any]) -> tuple[Key, str] | None:
    """(key, judged text) of a raw update's group message or edit, as `MessageRecord.judged_text` reads
    it; None when there is nothing to judge. A mismatch is harmless: the handler compares the text."""
    message = update.get("message")
    edit = False
    if message is None:
        message = update.get("edited_message")
        edit = True
    if not isinstance(message, dict):
        return None
    chat = message.get("chat") or {}
    if chat.get("type") not in GROUP_TYPES:
        return None
    text = message.get("text") or message.get("caption") or ""
    links = raw_hidden_links(message)
    judged = "\n".join((text, *links)) if links else text
    if not judged.strip():
        return None
    try:
        edit_date = message.get("edit_date") if edit else None
        key = message_key(int(chat["id"]), int(message["message_id"]), edit_date)
    except (KeyError, TypeError, ValueError):
        return None
    return key, judged


@dataclass(slots=True)
class _Pending:
    seq: int
    text: str
    fields: tuple[Any, ...] | None = None  # the worker's Verdict fields, once they arrive


@dataclass(slots=True)
class WorkerStats:
    """How verdicts were reached (the bench prints them)."""

    from_worker: int = 0
    in_process: int = 0  # not ready in time, not prefetched, or the worker is gone
    rejudged: int = 0  # per-chat thresholds changed the label: classified again in-process
    fast_passed: int = 0  # clean messages passed before PTB parsed them (bot/fast_pass.py)
    forks: int = 0
    deaths: int = 0


class ClassifyWorker:
    """The bot's side of the worker process: `prefetch_updates` feeds it, `verdict` reads it."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.stats = WorkerStats()
        self._conn: Connection | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self._pending: dict[Key, _Pending] = {}
        self._by_seq: dict[int, _Pending] = {}
        self._seq = 0
        self._answered = 0  # the highest seq the worker has answered (it judges in seq order)
        self._arrival: asyncio.Future[None] | None = None  # resolved when replies arrive or it dies
        self._reading = False
        self._last_fork = -RESTART_PAUSE
        self._launching: asyncio.Task[bool] | None = None

    @staticmethod
    def usable(model: Any) -> bool:
        """Only a model whose thresholds we can re-apply here (classifier.load() gives one)."""
        return hasattr(model, "categories") and hasattr(model, "thresholds")

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None and self._process.is_alive() else None

    def alive(self) -> bool:
        return self._conn is not None and self._process is not None and self._process.is_alive()

    # --- lifecycle -----------------------------------------------------------------------------

    def launch(self) -> None:
        """Warm the model in a thread, then fork (in the background: the bot is ready meanwhile).

        The first classify builds the word segmenter (~60 MB, about a second); built before the fork,
        its pages are shared instead of built twice. Messages are classified in-process until then."""
        if self._launching is not None and not self._launching.done():
            return
        self._last_fork = time.monotonic()
        model = self.model

        async def warm_then_fork() -> bool:
            try:
                await asyncio.to_thread(model.classify, WARM_TEXT)
            except Exception:
                log.exception("warming the model failed; classifying in-process")
                return False
            # A /reload while warming: the newer model has its own launch.
            return model is self.model and self._conn is None and self.start()

        self._launching = asyncio.get_running_loop().create_task(warm_then_fork())

    def start(self) -> bool:
        """Fork the worker from the current model; False (and in-process classification) if that fails."""
        self._last_fork = time.monotonic()
        ctx = multiprocessing.get_context("fork")
        parent, child = ctx.Pipe(duplex=True)
        # Objects alive now (the model above all) move to a generation the collector never scans, so
        # neither process's GC writes to the shared pages; they stay frozen while the model lives. A
        # later fork (reload, restart) first lets the collector at what was frozen before, so a
        # replaced model with reference cycles is not kept forever.
        if self.stats.forks:
            gc.unfreeze()
            gc.collect()
        gc.freeze()
        process = ctx.Process(
            target=_worker_main, args=(self.model, child, parent), name="qinglang-classify", daemon=True
        )
        try:
            process.start()
        except OSError:
            log.exception("cannot fork the classifier worker; classifying in-process")
            parent.close()
            child.close()
            return False
        child.close()  # the worker's end: ours must go, or its death would never read as EOF
        self._conn, self._process = parent, process
        self._answered = self._seq  # it is sent only what comes after
        self.stats.forks += 1
        self._watch()
        log.info("classifier worker %s started (model %s)", process.pid, getattr(self.model, "version", "?"))
        return True

    def _watch(self) -> None:
        with contextlib.suppress(RuntimeError):  # no running loop (sync tests): read on demand
            asyncio.get_running_loop().add_reader(self._conn.fileno(), self._read)  # type: ignore[union-attr]
            self._reading = True

    def close(self) -> None:
        """Stop the worker (post_shutdown, or before a fork with a new model)."""
        if self._launching is not None:
            self._launching.cancel()
            self._launching = None
        conn, process = self._conn, self._process
        self._conn = self._process = None
        self._forget_all()
        if conn is not None:
            if self._reading:
                with contextlib.suppress(RuntimeError, ValueError, OSError):
                    asyncio.get_running_loop().remove_reader(conn.fileno())
                self._reading = False
            with contextlib.suppress(OSError, ValueError):
                conn.send(("stop",))
            conn.close()
        if process is not None:
            process.join(timeout=2)
            if process.is_alive():
                process.kill()
                process.join(timeout=2)

    def _died(self) -> None:
        if self._conn is None:
            return
        self.stats.deaths += 1
        log.warning("classifier worker stopped; classifying in-process until it is forked again")
        self.close()

    def _forget_all(self) -> None:
        self._pending.clear()
        self._by_seq.clear()
        self._wake()

    def _wake(self) -> None:
        arrival, self._arrival = self._arrival, None
        if arrival is not None and not arrival.done():
            arrival.set_result(None)

    def _ensure(self, model: Any) -> bool:
        """A live worker judging with `model`. If there is none, one is launched (on the first batch,
        after /reload, or a pause after a death) and this batch is left to the handlers."""
        if model is not self.model:
            self.close()
            self.model = model
            self._last_fork = -RESTART_PAUSE  # a new model: launch at once
        if self.alive():
            return True
        if self._conn is not None:
            self._died()
        if time.monotonic() - self._last_fork >= RESTART_PAUSE and self.usable(model):
            self.launch()
        return False

    # --- the bot's side ------------------------------------------------------------------------

    def prefetch_updates(self, updates: Sequence[Mapping[str, Any]], model: Any) -> int:
        """Send a fetched batch's group messages to the worker; returns how many were sent."""
        items = [found for found in map(raw_judged, updates) if found is not None]
        if not items or not self._ensure(model):
            return 0
        batch = []
        for key, text in items:
            self._seq += 1
            pending = _Pending(self._seq, text)
            old = self._pending.pop(key, None)
            if old is not None:
                self._by_seq.pop(old.seq, None)
            self._pending[key] = pending
            self._by_seq[pending.seq] = pending
            batch.append((pending.seq, text))
        while len(self._pending) > MAX_PENDING:
            _, oldest = next(iter(self._pending.items()))
            self._pending.pop(next(iter(self._pending)))
            self._by_seq.pop(oldest.seq, None)
        if not self._send(("judge", batch)):
            return 0
        return len(batch)

    def _send(self, message: tuple[Any, ...]) -> bool:
        try:
            self._conn.send(message)  # type: ignore[union-attr]
        except (OSError, ValueError, AttributeError):
            self._died()
            return False
        return True

    def _read(self) -> None:
        """Take every reply waiting in the pipe (the loop calls this when it is readable)."""
        conn = self._conn
        if conn is None:
            return
        try:
            while conn.poll():
                for seq, fields in conn.recv():
                    pending = self._by_seq.pop(seq, None)
                    if pending is not None:
                        pending.fields = fields
                    self._answered = seq
                self._wake()
        except (EOFError, OSError):
            self._died()

    def discard(self, key: Key) -> None:
        """The handler is done with this message without asking for its verdict (skipped, chat off)."""
        pending = self._pending.pop(key, None)
        if pending is not None:
            self._by_seq.pop(pending.seq, None)

    async def verdict(
        self, key: Key, text: str, model: Any, thresholds: Mapping[str, float] | None
    ) -> tuple[Verdict, Source]:
        """`model.classify(text, thresholds, reasons="flagged")`: the worker's result when it is here or
        about to be, else computed now; and where it came from."""
        pending = self._pending.pop(key, None)
        source: Source = "in_process"
        if pending is not None and pending.text == text and model is self.model and self._conn is not None:
            if pending.fields is None:
                self._read()
            if pending.fields is None:
                await self._await_answer(pending)
            fields = pending.fields
            if fields is None:
                self._by_seq.pop(pending.seq, None)
                # Not close, or stalled: judged here; the worker skips what it has not started.
                self._send(("skip", pending.seq))
            else:
                verdict = self.with_thresholds(Verdict(*fields), model, thresholds)
                if verdict is not None:
                    self.stats.from_worker += 1
                    return verdict, "worker"
                source = "rejudged"
        if source == "rejudged":
            self.stats.rejudged += 1
        else:
            self.stats.in_process += 1
        return model.classify(text, thresholds=thresholds, reasons="flagged"), source

    async def ready(
        self, wanted: Sequence[tuple[Key, str]], model: Any, *, limit: float = WAIT_LIMIT
    ) -> dict[Key, Verdict]:
        """The worker's verdicts (model thresholds) for these messages that arrive within `limit`
        seconds; they stay filed for `verdict()` until `discard()`."""
        if model is not self.model or self._conn is None:
            return {}
        mine = [
            (key, p) for key, text in wanted if (p := self._pending.get(key)) is not None and p.text == text
        ]
        if not mine:
            return {}
        self._read()
        last = max(p.seq for _, p in mine)
        if self._answered < last and self._reading and self._send(("want", last)):
            await self._wait_answered(last, limit)
        return {key: Verdict(*p.fields) for key, p in mine if p.fields is not None}

    async def _await_answer(self, pending: _Pending) -> bool:
        """Wait, without using the CPU, for a verdict the worker is close to; False when it is not close,
        or it did not come within `WAIT_LIMIT` (the worker is stalled or gone)."""
        if not self._reading or pending.seq - self._answered > WAIT_AHEAD:
            return False
        if not self._send(("want", pending.seq)):  # answer as soon as this one is judged
            return False
        await self._wait_answered(pending.seq, WAIT_LIMIT)
        return pending.fields is not None

    async def _wait_answered(self, seq: int, limit: float) -> None:
        """Until the worker's replies up to `seq` have been read, the worker is gone, or `limit` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while self._answered < seq and self._conn is not None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            if self._arrival is None:
                self._arrival = loop.create_future()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._arrival), remaining)

    @staticmethod
    def with_thresholds(
        verdict: Verdict, model: Any, thresholds: Mapping[str, float] | None
    ) -> Verdict | None:
        """The verdict under per-chat thresholds, or None when they change its label: the reasons name
        the label's top features, so only a fresh classify gives them."""
        if not thresholds:
            return verdict
        label, action = decide(verdict.scores, model.categories, model.thresholds.with_overrides(thresholds))
        if label != verdict.label:
            return None
        return dataclasses.replace(verdict, action=action)


# --- the worker process ---------------------------------------------------------------------------


def _worker_main(model: Any, conn: Connection, parent_end: Connection) -> None:
    """Judge batches until told to stop or the bot goes away (EOF on the pipe)."""
    parent_end.close()  # ours to close: the bot's death must read as EOF here
    # The bot owns shutdown and reloads: a Ctrl-C to the process group or a SIGHUP is not for us.
    signal.set_wakeup_fd(-1)  # inherited from the bot's event loop: its self-pipe is not ours
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    work: queue.SimpleQueue[list[tuple[int, str]] | None] = queue.SimpleQueue()
    skip_upto = [0]  # the bot judged everything up to here itself
    want = [0]  # the bot is waiting for this one: sent as soon as it is judged, not with its chunk

    def receive() -> None:
        # Drains the pipe at once, so the bot's sends never block on a busy worker.
        try:
            while True:
                message = conn.recv()
                if message[0] == "judge":
                    work.put(message[1])
                elif message[0] == "skip":
                    skip_upto[0] = max(skip_upto[0], message[1])
                elif message[0] == "want":
                    want[0] = max(want[0], message[1])
                else:
                    break
        except (EOFError, OSError):
            pass
        work.put(None)

    threading.Thread(target=receive, name="receive", daemon=True).start()
    fields = [f.name for f in dataclasses.fields(Verdict)]
    sent_upto = 0
    while (batch := work.get()) is not None:
        out: list[tuple[int, tuple[Any, ...] | None]] = []
        for seq, text in batch:
            if seq <= skip_upto[0]:
                continue
            try:
                verdict = model.classify(text, reasons="flagged")
                out.append((seq, tuple(getattr(verdict, f) for f in fields)))
            except Exception:  # the bot classifies it again in-process and sees the error there
                out.append((seq, None))
            if len(out) >= CHUNK or seq >= want[0] > sent_upto:
                conn.send(out)
                out = []
                sent_upto = seq
        if out:
            conn.send(out)
            sent_upto = out[-1][0]
    os._exit(0)
