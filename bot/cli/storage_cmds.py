"""CLI commands for storage: schema upgrades, verification, exports, purges and the storage benchmark."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import click

URL_OPTION = click.option(
    "--url",
    envvar="QINGLANG_DATABASE_URL",
    default=None,
    help="Database URL (default: QINGLANG_DATABASE_URL, else sqlite+aiosqlite:///qinglang.db).",
)


def _date(value: str | None) -> datetime | None:
    if value is None:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


async def _open_checked(url: str | None):  # type: ignore[no-untyped-def]
    import storage

    db = await storage.open_database(url)
    try:
        await storage.check_schema(db.engine)
    except storage.SchemaOutOfDate as exc:
        await db.close()
        raise click.ClickException(str(exc)) from exc
    return db


def _report(result, what: str) -> None:  # type: ignore[no-untyped-def]
    for note in result.notes:
        click.echo(f"note: {note}")
    if result.ok:
        click.echo(f"{what}: intact ({result.records} records in {result.chats} chats)")
        return
    for problem in result.problems:
        click.echo(f"BROKEN: {problem}", err=True)
    raise SystemExit(1)


def register(main: click.Group, bench: click.Group) -> None:
    """Attach this area's commands to the top-level group and the bench group."""

    @main.group()
    def db() -> None:
        """Database schema (Alembic migrations)."""

    @db.command("upgrade")
    @URL_OPTION
    def db_upgrade(url: str | None) -> None:
        """Upgrade the database schema to the newest migration."""
        import storage

        revision = storage.upgrade_database(url)
        click.echo(f"database schema at revision {revision}")

    @main.command()
    @URL_OPTION
    @click.option("--chat", "chat_id", type=int, default=None, help="Verify one chat's chain only.")
    @click.option(
        "--export",
        "export_file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        default=None,
        help="Verify an export file (.csv, .xlsx, .jsonl) on its own, without the database.",
    )
    @click.option(
        "--partial",
        is_flag=True,
        help="With --export: a selection (report batch, --since/--until export): gaps in seq expected.",
    )
    def verify(url: str | None, chat_id: int | None, export_file: Path | None, partial: bool) -> None:
        """Recompute the hash chains and name the first broken record, or say they are intact."""
        import storage

        if export_file is not None:
            _report(storage.verify_export(export_file, partial=partial), str(export_file))
            return

        async def run():  # type: ignore[no-untyped-def]
            db = await _open_checked(url)
            try:
                return await storage.verify_database(db.engine, chat_id=chat_id)
            finally:
                await db.close()

        _report(asyncio.run(run()), "chains" if chat_id is None else f"chat {chat_id}")

    @main.command()
    @URL_OPTION
    @click.option("--chat", "chat_id", type=int, default=None, help="One chat only.")
    @click.option(
        "--since", default=None, help="Records appended at or after this date (ISO, UTC if no zone)."
    )
    @click.option("--until", default=None, help="Records appended before this date.")
    @click.option("--format", "fmt", type=click.Choice(["csv", "xlsx", "jsonl"]), required=True)
    @click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
    def export(
        url: str | None, chat_id: int | None, since: str | None, until: str | None, fmt: str, output: Path
    ) -> None:
        """Export the incident log, one row per incident with its events and hashes, to CSV (UTF-8 BOM),
        XLSX or JSONL."""
        import storage

        async def run():  # type: ignore[no-untyped-def]
            db = await _open_checked(url)
            try:
                return await storage.export_records(
                    db.engine, path=output, fmt=fmt, chat_id=chat_id, since=_date(since), until=_date(until)
                )
            finally:
                await db.close()

        result = asyncio.run(run())
        click.echo(
            f"wrote {result.incidents} incidents in {result.rows} rows ({result.records} chain records) "
            f"to {output}  {result.digest}"
        )

    @main.command()
    @URL_OPTION
    @click.option("--chat", "chat_id", type=int, default=None, help="One chat only.")
    def purge(url: str | None, chat_id: int | None) -> None:
        """Remove incidents past retention (default 180 days); never legal holds or queued reports."""
        import storage

        async def run():  # type: ignore[no-untyped-def]
            db = await _open_checked(url)
            try:
                async with db.sessionmaker.begin() as session:
                    return await storage.purge_expired(session=session, chat_id=chat_id)
            finally:
                await db.close()

        result = asyncio.run(run())
        for cid, counts in sorted(result.per_chat.items()):
            click.echo(f"chat {cid}: removed {counts['incidents']} incidents, {counts['events']} events")
        click.echo(
            f"purged {result.incidents} incidents and {result.events} events ({result.anchors} anchors)"
        )

    @bench.command("storage")
    @click.option(
        "--rows", default=2000, show_default=True, help="Incidents recorded one by one, per engine."
    )
    @click.option("--export-rows", default=100_000, show_default=True, help="Incidents in the export test.")
    @click.option("--writer-rows", default=5000, show_default=True, help="Incidents per writer (PostgreSQL).")
    @click.option(
        "--postgres-url",
        default=lambda: os.environ.get("QINGLANG_TEST_POSTGRES_URL") or None,
        help="A PostgreSQL server (a scratch database is created and dropped). "
        "Default: QINGLANG_TEST_POSTGRES_URL.",
    )
    def bench_storage(rows: int, export_rows: int, writer_rows: int, postgres_url: str | None) -> None:
        """Recording rate (SQLite, PostgreSQL), 100k-incident exports, two writers on one chat."""
        from storage.bench import run_bench, table

        figures = run_bench(
            rows=rows, export_rows=export_rows, writer_rows=writer_rows, postgres_url=postgres_url
        )
        click.echo("")
        for line in table(figures):
            click.echo(line)
        click.echo(json.dumps(figures, ensure_ascii=False))
