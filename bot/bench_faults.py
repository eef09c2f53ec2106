"""Telegram faults at scale: the harness behind `qinglang bench faults` and tests/bot/test_faults.py.

Issue 5, fault 1: N solicitations (2,000 in the bench) through the real Application and the in-process
Bot API emulator, with a fifth of the answers failing at random: a deleteMessage fault scripted for a
random fifth of the messages (drawn from `FAULTS`: gone, no rights, forbidden, flood control waited out or
too long, 5xx retried or exhausted) and a fifth of every sendMessage and restrictChatMember answer a 5xx.
Promises checked: exactly one incident per solicitation, each with exactly one action outcome, `deleted`
(and deleted exactly once) or `delete_failed` with its error and the kind its fault implies; the chains
verify.
"""

from __future__ import annotations

import asyncio
import json
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BOT_ID = 777000333
TOKEN = f"{BOT_ID}:AAbench-faults-token-0123456789abcdefgh"
GROUP = -1001500000777
ADMIN = 1002
FIRST_SENDER = 50_000  # one sender per message: one strike each, no mutes in the way of the outcome
# Solicitations the shipped model deletes (`run_telegram_faults` checks, and uses only those).
SOLICITATIONS = [
    "出冰，货真价实，量大从优，需要的加V：bing8888",
    "急招刷单员，手机操作，日结300-500，加QQ 2837465910",
    "澳门新葡京线上娱乐，注册就送88元，百家乐真人荷官，加微信 amxpj888",
    "兼职刷单，一单一结，佣金日结，有意者加V：shuadan668",
]

# What a scripted deleteMessage failure is, and how the incident must end. With telegram_retries=3,
# four failures of a retryable kind exhaust them; retry_after 5 exceeds max_retry_after_seconds=2.
# name, status, description, consecutive failures, retry_after, expected (action, kind)
FAULTS: list[tuple[str, int, str | None, int, int | None, tuple[str, str | None]]] = [
    ("gone", 400, "Bad Request: message to delete not found", 1, None, ("delete_failed", "gone")),
    ("no_rights", 400, "Bad Request: message can't be deleted", 1, None, ("delete_failed", "no_rights")),
    (
        "forbidden",
        403,
        "Forbidden: bot was kicked from the supergroup chat",
        1,
        None,
        ("delete_failed", "forbidden"),
    ),
    ("flood", 429, None, 1, 1, ("deleted", None)),  # waited out, then retried
    ("flood_too_long", 429, None, 1, 5, ("delete_failed", "flood")),  # longer than the bound: give up
    ("5xx", 500, None, 3, None, ("deleted", None)),
    ("5xx_exhausted", 502, None, 4, None, ("delete_failed", "network")),
]


@dataclass
class FaultsRun:
    """Outcomes and checks of one run."""

    messages: int
    seconds: float = 0.0
    scripted: dict[str, int] = field(default_factory=dict)  # delete faults scripted, by name
    outcomes: dict[str, int] = field(default_factory=dict)  # "deleted" / "delete_failed:<kind>" -> count
    random_failures: int = 0  # sendMessage / restrictChatMember answers failed at random
    answers: int = 0  # every answer the emulator gave
    incidents: int = 0
    wrong: list[str] = field(default_factory=list)  # one line per broken promise
    handler_errors: list[str] = field(default_factory=list)
    verify_ok: bool = False
    rights_warnings: int = 0  # "the bot lacks the right to delete" told to the group: once per process

    def problems(self) -> list[str]:
        """What went wrong; empty when every promise held."""
        out = list(self.wrong[:20])
        if len(self.wrong) > 20:
            out.append(f"... and {len(self.wrong) - 20} more")
        if self.incidents != self.messages:
            out.append(f"{self.incidents} incidents for {self.messages} solicitations")
        if not self.verify_ok:
            out.append("the chains do not verify")
        if self.rights_warnings > 1:
            out.append(f"the group was told {self.rights_warnings} times that a right is missing")
        out.extend(self.handler_errors)
        return out


async def run_telegram_faults(
    *, messages: int, database_url: str, seed: int = 20240605, classifier: Any = None
) -> FaultsRun:
    """Deliver `messages` solicitations under faults (one at a time, as polling does) and check."""
    from sqlalchemy import text
    from telegram import Update

    import storage
    from bot.app import build_application
    from bot.config import Settings
    from bot.emulator import ApiError, Emulator
    from bot.i18n import t

    if classifier is None:
        import classifier as classifier_package

        classifier = classifier_package.load()
    texts = [s for s in SOLICITATIONS if classifier.classify(s).action == "delete"]
    if not texts:
        raise RuntimeError("the model deletes none of the bench's solicitations")
    rng = random.Random(seed)
    emu = Emulator(TOKEN, bot_username="qinglang_faults_bench_bot")
    emu.add_user(ADMIN, "管理员")
    emu.add_chat(GROUP, "故障群", admins=[ADMIN], owner=ADMIN)
    emu.fail_randomly(["sendMessage", "restrictChatMember"], 0.2, seed=seed, statuses=(500, 502))

    # Scripted delete faults, keyed by message: the next `times` deleteMessage calls for it fail.
    plan: dict[int, list[Any]] = {}

    def scripted_fault(params: dict[str, Any]) -> None:
        pending = plan.get(int(params["message_id"]))
        if pending:
            raise pending.pop()

    emu.before("deleteMessage", scripted_fault)
    config = Settings(
        telegram_token=TOKEN,  # type: ignore[arg-type]
        database_url=database_url,
        _env_file=None,  # type: ignore[call-arg]
        telegram_retries=3,
        telegram_backoff_seconds=0.01,
        max_retry_after_seconds=2,
        notice_min_interval_seconds=0,
    )
    app = build_application(
        config, request=emu.request(), get_updates_request=emu.request(), classifier=classifier
    )
    errors: list[BaseException] = []

    async def record_error(update: object, context: Any) -> None:
        errors.append(context.error)

    app.add_error_handler(record_error)
    run = FaultsRun(messages=messages)
    expected: dict[int, tuple[str, str | None]] = {}
    await app.initialize()
    assert app.post_init is not None
    await app.post_init(app)
    try:
        updates = []
        for i in range(messages):
            sender = FIRST_SENDER + i
            emu.add_user(sender, f"推广{i}")
            msg = emu.message(GROUP, sender, texts[i % len(texts)], push=False)
            expected[msg["message_id"]] = ("deleted", None)
            if rng.random() < 0.2:
                name, status, description, times, retry_after, outcome = rng.choice(FAULTS)
                if description is None:
                    description = (
                        f"Too Many Requests: retry after {retry_after}" if status == 429 else "Bad Gateway"
                    )
                plan[msg["message_id"]] = [ApiError(status, description, retry_after)] * times
                expected[msg["message_id"]] = outcome
                run.scripted[name] = run.scripted.get(name, 0) + 1
            updates.append({"update_id": 1 + i, "message": msg})
        start = time.monotonic()
        services = app.bot_data.services
        assert services is not None  # post_init built them
        for update in updates:
            await app.process_update(Update.de_json(update, app.bot))
            # One message at a time: the faults are scripted per message (deleteMessage), not per batch.
            if services.deletions is not None:
                await services.deletions.wait_idle()
        run.seconds = time.monotonic() - start
        engine = services.db.engine
        run.verify_ok = (await storage.verify_database(engine)).ok
        async with engine.connect() as conn:
            rows = await conn.execute(text("select id, message_id from incidents"))
            incidents: dict[int, int] = {int(i): int(m) for i, m in rows.all()}
            result = await conn.execute(
                text(
                    "select incident_id, value, detail from incident_events"
                    " where kind = 'action' order by seq"
                )
            )
            events = list(result.all())
    finally:
        await app.shutdown()
        if app.post_shutdown is not None:
            await app.post_shutdown(app)
    run.incidents = len(incidents)
    run.handler_errors = [f"handler error: {e!r}" for e in errors] + [
        f"emulator error: {e}" for e in emu.internal_errors
    ]
    missing_right = t("rights.missing_delete", "zh")
    run.rights_warnings = sum(1 for m in emu.sent(GROUP) if m.get("text") == missing_right)
    calls = emu.calls()
    run.answers = len(calls)
    run.random_failures = sum(
        1 for c in calls if c.method in ("sendMessage", "restrictChatMember") and c.error is not None
    )
    _check(run, expected, incidents, events, emu)
    return run


def _check(
    run: FaultsRun,
    expected: dict[int, tuple[str, str | None]],
    incidents: dict[int, int],
    events: list[Any],
    emu: Any,
) -> None:
    outcomes: dict[int, list[tuple[str, dict[str, Any]]]] = {m: [] for m in incidents.values()}
    for incident_id, value, detail in events:
        outcomes[incidents[incident_id]].append((value, json.loads(detail) if detail else {}))
    if len(outcomes) != len(incidents):
        run.wrong.append(f"{len(incidents) - len(outcomes)} messages with more than one incident")
    deleted_ok: dict[int, int] = {}
    for call in emu.calls("deleteMessage"):
        if call.error is None:
            key = int(call.params["message_id"])
            deleted_ok[key] = deleted_ok.get(key, 0) + 1
    for message_id, (want_value, want_kind) in expected.items():
        got = outcomes.get(message_id)
        if got is None:
            run.wrong.append(f"message {message_id}: no incident")
            continue
        if len(got) != 1:
            run.wrong.append(f"message {message_id}: {len(got)} action outcomes {[v for v, _ in got]}")
            continue
        value, detail = got[0]
        kind = detail.get("kind")
        label = value if value == "deleted" else f"{value}:{kind}"
        run.outcomes[label] = run.outcomes.get(label, 0) + 1
        if value != want_value or (
            value == "delete_failed" and (kind != want_kind or not detail.get("error"))
        ):
            run.wrong.append(f"message {message_id}: {value} {detail}, expected {want_value} {want_kind}")
        times = deleted_ok.get(message_id, 0)
        if times != (1 if value == "deleted" else 0):
            run.wrong.append(f"message {message_id}: {value}, deleted {times} times")


# --- qinglang bench faults -----------------------------------------------------------------------


def run_bench_faults(*, messages: int, database_url: str | None, seed: int) -> int:
    """Print a table and one JSON line; 0 when every promise held."""
    import click

    with tempfile.TemporaryDirectory(prefix="qinglang-faults-") as tmp:
        url = database_url or f"sqlite+aiosqlite:///{Path(tmp) / 'faults.db'}"
        run = asyncio.run(run_telegram_faults(messages=messages, database_url=url, seed=seed))
    problems = run.problems()
    click.echo(f"{messages} solicitations in {run.seconds:.1f} s ({messages / run.seconds:.0f}/s)")
    click.echo(f"{'scripted delete fault':<24} {'messages':>8}")
    for name, *_ in FAULTS:
        click.echo(f"{name:<24} {run.scripted.get(name, 0):>8}")
    click.echo(f"random 5xx (sendMessage, restrictChatMember): {run.random_failures} of {run.answers} calls")
    click.echo(f"{'outcome':<24} {'incidents':>9}")
    for label, count in sorted(run.outcomes.items()):
        click.echo(f"{label:<24} {count:>9}")
    click.echo(f"{'total':<24} {sum(run.outcomes.values()):>9}")
    click.echo("checks: " + ("ok" if not problems else "FAILED: " + "; ".join(problems)))
    figures = {
        "bench": "faults",
        "messages": messages,
        "seconds": round(run.seconds, 2),
        "incidents": run.incidents,
        "scripted_delete_faults": sum(run.scripted.values()),
        "random_failures": run.random_failures,
        "answers": run.answers,
        "outcomes": dict(sorted(run.outcomes.items())),
        "wrong": len(run.wrong),
        "verify_ok": run.verify_ok,
        "ok": not problems,
    }
    click.echo(json.dumps(figures, ensure_ascii=False))
    return 0 if not problems else 1
