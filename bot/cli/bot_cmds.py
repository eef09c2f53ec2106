"""CLI commands of the bot: `qinglang run`, `qinglang demo`, `qinglang bench e2e`."""

from __future__ import annotations

from pathlib import Path

import click


def register(main: click.Group, bench: click.Group) -> None:
    """Attach this area's commands to the top-level group and the bench group."""
    main.add_command(run)
    main.add_command(demo)
    bench.add_command(bench_e2e)


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
def run(token: str | None, base_url: str | None, database_url: str | None) -> None:
    """Run the bot with long polling until interrupted (Ctrl-C).

    Every setting comes from the environment (QINGLANG_…) or a .env file; see the README.
    """
    from bot.app import ALLOWED_UPDATES, build_application
    from bot.config import Settings
    from bot.logs import configure_logging

    overrides = {
        k: v
        for k, v in {"telegram_token": token, "base_url": base_url, "database_url": database_url}.items()
        if v
    }
    settings = Settings(**overrides)  # type: ignore[arg-type]
    if settings.telegram_token is None:
        raise click.UsageError("no bot token: set QINGLANG_TELEGRAM_TOKEN (or pass --token)")
    configure_logging(
        settings.log_level, secrets=(settings.telegram_token.get_secret_value(),), fmt=settings.log_format
    )
    application = build_application(settings)
    from bot.admin import install_sighup_reload  # admin-commands work: `kill -HUP` reloads the model

    install_sighup_reload(application)
    application.run_polling(allowed_updates=ALLOWED_UPDATES)


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
