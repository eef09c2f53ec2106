"""`qinglang demo`: the real bot, polling the local Bot API emulator over 127.0.0.1, plays a scripted group.

No token and no network: the emulator stands in for Telegram. Prints what happened to each message,
then exports the incident log and verifies its hash chains (in the database and in the export file).
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

import storage
from bot.app import ALLOWED_UPDATES, build_application
from bot.config import Settings
from bot.demo_script import CAST, GROUP_ID, GROUP_TITLE, SCRIPT, Line
from bot.logs import configure_logging
from bot.moderation import MessageRecord, Outcome

STEP_TIMEOUT = 10.0


@dataclass
class DemoReport:
    """What the demo saw: one row per scripted line, plus the export and its verification."""

    rows: list[tuple[Line, Outcome | None, str]]
    export_path: Path
    export_rows: int
    incidents: int
    chain_ok: bool
    export_ok: bool
    errors: list[BaseException]
    unexpected: list[int]

    @property
    def ok(self) -> bool:
        return self.chain_ok and self.export_ok and not self.errors


def _short(text: str, width: int = 30) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def _inject(emu: Any, line: Line, sent: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Queue the update for one scripted line; returns the message as Telegram would send it."""
    user_id = CAST[line.who].user_id
    if line.kind == "edit":
        assert line.edit_of is not None
        return emu.edit(GROUP_ID, sent[line.edit_of]["message_id"], line.text)
    if line.kind in ("photo", "video", "document"):
        return emu.message(GROUP_ID, user_id, caption=line.text, **{line.kind: True})
    if line.kind == "forward":
        channel = {"id": -1009000000001, "type": "channel", "title": line.from_channel}
        origin = {"type": "channel", "date": int(time.time()) - 3600, "chat": channel, "message_id": 42}
        return emu.message(GROUP_ID, user_id, line.text, forward_origin=origin)
    if line.kind == "text_link":
        length = len(line.text.encode("utf-16-le")) // 2
        entity = {"type": "text_link", "offset": 0, "length": length, "url": line.url}
        return emu.message(GROUP_ID, user_id, line.text, entities=[entity])
    if line.kind == "button":
        markup = {"inline_keyboard": [[{"text": "点击领取", "url": line.url}]]}
        via = {"id": 7000001, "is_bot": True, "first_name": "推广助手", "username": "promo_helper_bot"}
        return emu.message(GROUP_ID, user_id, line.text, reply_markup=markup, via_bot=via)
    return emu.message(GROUP_ID, user_id, line.text)


def _what_telegram_saw(emu: Any, message: dict[str, Any], outcome: Outcome | None, sent_before: int) -> str:
    """A short account of the bot's visible reaction: deleted, notice posted, muted, replies."""
    notes = []
    if emu.is_deleted(GROUP_ID, message["message_id"]):
        notes.append("message deleted")
    if outcome is not None and outcome.notice_message_id:
        notes.append("notice posted (removes itself)")
    if outcome is not None and outcome.escalation:
        notes.append(f"sender {outcome.escalation}")
    replies = [m for m in emu.sent()[sent_before:] if m.get("text")]
    if outcome is None or outcome.status in ("skipped", "ok"):
        for reply in replies[:1]:
            notes.append(f"bot replied: {_short(str(reply['text']).splitlines()[0], 40)}")
    return "; ".join(notes)


async def play(workdir: Path, *, echo: Any = click.echo) -> DemoReport:
    """Run the whole demo in the current event loop; returns what happened."""
    from bot.emulator import Emulator

    emu = Emulator()
    owner = CAST["owner"]
    for person in CAST.values():
        emu.add_user(person.user_id, person.name, username=person.username)
    emu.add_chat(GROUP_ID, GROUP_TITLE, owner=owner.user_id, members=[p.user_id for p in CAST.values()])

    outcomes: dict[tuple[int, bool], Outcome] = {}

    def observe(record: MessageRecord, outcome: Outcome) -> None:
        outcomes[(record.message_id, record.is_edit)] = outcome

    # Predicate factories bind the loop's values (a lambda default argument would too, but mypy
    # cannot infer a lambda's type when it has one).
    def moderated(key: tuple[int, bool]) -> Callable[[], bool]:
        return lambda: key in outcomes

    def sent_since(n: int) -> Callable[[], bool]:
        return lambda: len(emu.sent()) > n

    db_path = workdir / "demo.db"
    for stale in workdir.glob("demo.db*"):
        stale.unlink()
    errors: list[BaseException] = []
    rows: list[tuple[Line, Outcome | None, str]] = []
    unexpected: list[int] = []

    async with emu.serve() as base_url:
        settings = Settings(
            telegram_token=emu.token,  # type: ignore[arg-type]
            base_url=base_url,
            database_url=f"sqlite+aiosqlite:///{db_path}",
            notice_min_interval_seconds=0,
            telegram_retries=1,
            metrics_port=0,  # the demo must not take the metrics port of a bot running on this machine
            _env_file=None,  # type: ignore[call-arg]
        )
        app = build_application(settings, observers=[observe])

        async def record_error(update: object, context: Any) -> None:
            errors.append(context.error)

        app.add_error_handler(record_error)
        started = time.monotonic()
        await app.initialize()
        await app.post_init(app)  # type: ignore[misc]  # run_polling() would call it
        assert app.updater is not None
        await app.updater.start_polling(allowed_updates=ALLOWED_UPDATES, poll_interval=0, timeout=1)
        await app.start()
        echo(f"bot ready in {time.monotonic() - started:.1f}s, polling {base_url} (the local emulator)\n")
        try:
            sent: dict[int, dict[str, Any]] = {}
            for i, line in enumerate(SCRIPT):
                sent_before = len(emu.sent())
                message = _inject(emu, line, sent)
                sent[i] = message
                key = (message["message_id"], line.kind == "edit")
                with contextlib.suppress(TimeoutError):
                    await emu.wait_for(moderated(key), timeout=STEP_TIMEOUT)
                if line.text.startswith("/"):  # give the command handler a moment to answer
                    with contextlib.suppress(TimeoutError):
                        await emu.wait_for(sent_since(sent_before), timeout=2.0)
                outcome = outcomes.get(key)
                seen = _what_telegram_saw(emu, message, outcome, sent_before)
                rows.append((line, outcome, seen))
                status = outcome.status if outcome is not None else "none"
                if line.expect not in (None, "any") and status != line.expect:
                    unexpected.append(i)
                mark = "!" if i in unexpected else " "
                result = outcome.summary() if outcome is not None else "(no outcome)"
                who = CAST[line.who].name
                echo(f"{mark}{i + 1:>3} {who:<8} {_short(line.text):<31} → {result}")
                echo(f"      {line.shows}" + (f" — {seen}" if seen else ""))
        finally:
            await app.updater.stop()
            await app.stop()
            services = app.bot_data.services
            assert services is not None
            export_path = workdir / "incidents.jsonl"
            exported = await storage.export_records(services.db.engine, path=export_path, fmt="jsonl")
            chain = await storage.verify_database(services.db.engine)
            await app.shutdown()
            await app.post_shutdown(app)  # type: ignore[misc]

    file_check = storage.verify_export(export_path)
    report = DemoReport(
        rows=rows,
        export_path=export_path,
        export_rows=exported.rows,
        incidents=exported.incidents,
        chain_ok=chain.ok,
        export_ok=file_check.ok,
        errors=errors,
        unexpected=unexpected,
    )
    counts: dict[str, int] = {}
    for _, outcome, _ in rows:
        status = outcome.status if outcome else "none"
        counts[status] = counts.get(status, 0) + 1
    echo("")
    echo("summary: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    echo(f"incident log: {export_path} ({exported.incidents} incidents, {exported.records} chain records)")
    echo(f"hash chain in the database: {'verified' if chain.ok else 'BROKEN: ' + '; '.join(chain.problems)}")
    export_state = "verified" if file_check.ok else "BROKEN: " + "; ".join(file_check.problems)
    echo(f"hash chain in the export:   {export_state}")
    if unexpected:
        echo(f"lines marked ! ({len(unexpected)}) came out differently from what the script expected")
    if errors:
        echo(f"handler errors: {errors!r}")
    return report


def run_demo(*, workdir: Path | None = None, verbose: bool = False) -> int:
    """The `qinglang demo` command: 0 when the log verifies and no handler failed."""
    configure_logging("INFO" if verbose else "WARNING")
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="qinglang-demo-") as tmp:
            report = asyncio.run(play(Path(tmp)))
    else:
        workdir.mkdir(parents=True, exist_ok=True)
        report = asyncio.run(play(workdir))
    return 0 if report.ok else 1


__all__ = ["DemoReport", "play", "run_demo"]
