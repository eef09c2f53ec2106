"""CLI commands of the bot: `qinglang run`, `qinglang demo`, `qinglang bench e2e`, `bench workers` and
`bench faults`."""

from __future__ import annotations

from pathlib import Path

import click


def register(main: click.Group, bench: click.Group) -> None:
    """Attach this area's commands to the top-level group and the bench group."""
    main.add_command(run)
    main.add_command(demo)
    bench.add_command(bench_e2e)
    bench.add_command(bench_workers)
    bench.add_command(bench_faults)


@click.command()
@click.option(
    "--token",
    metavar="TOKEN",
    help="Bot token (default: QINGLANG_TELEGRAM_TOKEN). Prefer the environment: options show up in `ps`.",
)
@click.option("--base-url", metavar="URL", help="Bot API base URL of a local Bot API server (…/bot).")
@click.option(
    "--database-url", metavar="URL", help="Database (default: QINGLANG_DATABASE_URL or ./qinglang.db)."
)
@click.option(
    "--webhook",
    "webhook_url",
    metavar="URL",
    help="Serve webhooks instead of polling: the public URL Telegram posts to (QINGLANG_WEBHOOK_URL).",
)
@click.option("--listen", metavar="HOST", help="Webhook: address to listen on (default 127.0.0.1).")
@click.option("--port", type=int, help="Webhook: port to listen on (default 8443).")
@click.option(
    "--secret-token",
    metavar="TOKEN",
    help="Webhook: secret Telegram sends with each POST (QINGLANG_WEBHOOK_SECRET_TOKEN; prefer the env).",
)
@click.option(
    "--no-set-webhook",
    is_flag=True,
    help="Webhook: do not call setWebhook (extra workers behind one proxy; one process registers the URL).",
)
def run(
    token: str | None,
    base_url: str | None,
    database_url: str | None,
    webhook_url: str | None,
    listen: str | None,
    port: int | None,
    secret_token: str | None,
    no_set_webhook: bool,
) -> None:
    """Run the bot until interrupted (Ctrl-C): long polling, or webhooks with --webhook.

    Every setting comes from the environment (QINGLANG_…) or a .env file; see the README.
    """
    from bot.app import ALLOWED_UPDATES, build_application
    from bot.config import Settings
    from bot.logs import configure_logging
    from bot.webhook import WebhookSettings, bot_request, run_webhook

    overrides = {
        k: v
        for k, v in {"telegram_token": token, "base_url": base_url, "database_url": database_url}.items()
        if v
    }
    settings = Settings(**overrides)  # type: ignore[arg-type]
    if settings.telegram_token is None:
        raise click.UsageError("no bot token: set QINGLANG_TELEGRAM_TOKEN (or pass --token)")
    hook_options = {
        "webhook_url": webhook_url,
        "webhook_listen": listen,
        "webhook_port": port,
        "webhook_secret_token": secret_token,
        "webhook_set": False if no_set_webhook else None,
    }
    webhook = WebhookSettings(**{k: v for k, v in hook_options.items() if v is not None})  # type: ignore[arg-type]
    secrets = [settings.telegram_token.get_secret_value()]
    if webhook.webhook_url:
        try:
            secrets.append(webhook.secret())
        except ValueError as exc:
            raise click.UsageError(str(exc)) from exc
    configure_logging(settings.log_level, secrets=tuple(secrets), fmt=settings.log_format)
    application = build_application(
        settings,
        request=bot_request(webhook) if webhook.webhook_url else None,
        # Polling: getUpdates starts while the model loads (updates wait for it). Webhooks answer each
        # update's POST, so there the services are up before the server starts.
        defer_services=not webhook.webhook_url,
    )
    from bot.admin import install_sighup_reload  # admin-commands work: `kill -HUP` reloads the model

    install_sighup_reload(application)
    if webhook.webhook_url:  # bot/webhook.py: PTB's webhook server, durable before it answers 200
        run_webhook(application, webhook, allowed_updates=ALLOWED_UPDATES)
    else:
        application.run_polling(allowed_updates=ALLOWED_UPDATES)
    if application.bot_data.startup_error is not None:
        raise click.ClickException(f"the bot could not start: {application.bot_data.startup_error}")


@click.command()
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where to keep the demo database and export (default: a temporary folder).",
)
@click.option("-v", "--verbose", is_flag=True, help="Show the bot's own log lines.")
def demo(workdir: Path | None, verbose: bool) -> None:
    """Watch the bot moderate a scripted group on a local Bot API emulator (no token, no network)."""
    from bot.demo import run_demo

    raise SystemExit(run_demo(workdir=workdir, verbose=verbose))


@click.command("e2e")
@click.option("--messages", default=3000, show_default=True, help="Updates in the throughput run.")
@click.option("--rate", default=100.0, show_default=True, help="Paced updates/s for the latency run.")
@click.option("--latency-messages", default=1000, show_default=True, help="Updates in the latency run.")
def bench_e2e(messages: int, rate: float, latency_messages: int) -> None:
    """Emulator -> PTB polling -> classify -> SQLite -> deleteMessage, against a no-op handler."""
    from bot.bench import run_bench_e2e

    raise SystemExit(run_bench_e2e(messages=messages, rate=rate, latency_messages=latency_messages))


@click.command("workers")
@click.option(
    "--postgres-url",
    envvar="QINGLANG_TEST_POSTGRES_URL",
    required=True,
    help="PostgreSQL server; throwaway databases are created on it (default: QINGLANG_TEST_POSTGRES_URL).",
)
@click.option("--updates", default=2000, show_default=True, help="Updates in each throughput run.")
@click.option("--concurrency", default=32, show_default=True, help="Requests in flight at most.")
@click.option("--time-limit", default=60.0, show_default=True, help="Seconds of posting per run at most.")
@click.option("--check-updates", default=10_000, show_default=True, help="Updates in the checked run.")
def bench_workers(
    postgres_url: str, updates: int, concurrency: int, time_limit: float, check_updates: int
) -> None:
    """Webhook workers on PostgreSQL: updates/s with 1 and 2 workers, then a checked 2-worker run."""
    from bot.bench_workers import run_bench_workers

    raise SystemExit(
        run_bench_workers(
            postgres_url=postgres_url,
            updates=updates,
            concurrency=concurrency,
            time_limit=time_limit,
            check_updates=check_updates,
        )
    )


@click.command("faults")
@click.option("--messages", default=2000, show_default=True, help="Solicitations to deliver.")
@click.option(
    "--database-url",
    default=None,
    help="Database to record into (default: a SQLite file in a temporary folder).",
)
@click.option("--seed", default=20240605, show_default=True, help="Seed of the faults drawn.")
def bench_faults(messages: int, database_url: str | None, seed: int) -> None:
    """Solicitations while a fifth of Telegram's answers fail: one incident and one outcome each."""
    from bot.bench_faults import run_bench_faults

    raise SystemExit(run_bench_faults(messages=messages, database_url=database_url, seed=seed))
