"""`qinglang scan EXPORT.json`: judge a Telegram Desktop chat export and record what it flags."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import click

from bot.i18n import category_name


def register(main: click.Group, bench: click.Group) -> None:
    """Attach this area's commands to the top-level group."""
    main.add_command(scan)


@click.command()
@click.argument("export_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--database-url",
    envvar="QINGLANG_DATABASE_URL",
    metavar="URL",
    default=None,
    help="Database (default: QINGLANG_DATABASE_URL or ./qinglang.db).",
)
@click.option("--model", type=click.Path(file_okay=False, exists=True), default=None, help="Model directory.")
@click.option(
    "--export",
    "export_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the incident log of the scanned chats to FILE (.csv, .xlsx or .jsonl).",
)
def scan(export_file: Path, database_url: str | None, model: str | None, export_path: Path | None) -> None:
    """Classify every message of a Telegram Desktop export (JSON) and record the flagged ones.

    Nothing is deleted: incidents are recorded with action `none` (history). Rerunning on the same
    file records nothing twice.
    """
    from bot.scan import ExportError, load_export

    fmt = None
    if export_path is not None:
        fmt = export_path.suffix.lower().lstrip(".")
        if fmt not in ("csv", "xlsx", "jsonl"):
            raise click.UsageError("--export FILE must end in .csv, .xlsx or .jsonl")
    try:
        messages = load_export(export_file)
    except (ExportError, OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{export_file}: {len(messages)} messages with text", err=True)
    clf = _load_model(model)
    summary, exported = asyncio.run(_scan(messages, clf, database_url, export_file.name, export_path, fmt))
    _print_summary(summary, clf)
    if exported is not None:
        click.echo(f"incident log: {exported.path} ({exported.incidents} incidents, {exported.rows} rows)")
        click.echo(f"digest: {exported.digest}")


def _load_model(model: str | None) -> Any:
    import contextlib

    import classifier

    with contextlib.redirect_stdout(sys.stderr):  # jieba's start-up chatter stays off stdout
        return classifier.load(model)


async def _scan(
    messages: list[Any],
    clf: Any,
    database_url: str | None,
    source: str,
    export_path: Path | None,
    fmt: str | None,
) -> tuple[Any, Any]:
    import storage
    from bot.scan import scan_messages

    db = await storage.open_database(database_url)
    try:
        try:
            await storage.check_schema(db.engine)
        except storage.SchemaOutOfDate as exc:
            raise click.ClickException(str(exc)) from exc
        with click.progressbar(length=len(messages), label="scanning", file=sys.stderr) as bar:
            summary = await scan_messages(messages, db=db, classifier=clf, source=source, progress=bar.update)
        exported = None
        if export_path is not None and fmt is not None:
            chat_id = next(iter(summary.chats)) if len(summary.chats) == 1 else None
            exported = await storage.export_records(db.engine, path=export_path, fmt=fmt, chat_id=chat_id)
        return summary, exported
    finally:
        await db.close()


def _print_summary(summary: Any, clf: Any) -> None:
    click.echo(f"model {getattr(clf, 'version', '?')}")
    click.echo(
        f"messages {summary.messages}   flagged {summary.flagged_total}   "
        f"new incidents {summary.recorded}   already recorded {summary.already}"
    )
    by_category: dict[str, dict[str, int]] = {}
    for (category, action), n in summary.flagged.items():
        by_category.setdefault(category, {})[action] = n
    for category, actions in sorted(by_category.items(), key=lambda kv: -sum(kv[1].values())):
        detail = "  ".join(f"{a} {n}" for a, n in sorted(actions.items()))
        click.echo(
            f"  {category:<9} {category_name(category, 'zh')}  {sum(actions.values()):>6}   ({detail})"
        )
    click.echo("recorded with action `none` (history): nothing was deleted.")
