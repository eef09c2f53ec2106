"""`qinglang demo` end to end: the real bot polls the emulator over 127.0.0.1, the log verifies."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from click.testing import CliRunner

from bot.cli import main
from bot.demo import play
from bot.demo_script import SCRIPT
from bot.emulator import DEFAULT_TOKEN


async def test_demo_plays_the_script_and_the_log_verifies(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lines: list[str] = []
    with caplog.at_level(logging.DEBUG):  # everything PTB, httpx and the bot log, at every level
        report = await play(tmp_path, echo=lines.append)
    assert caplog.records, "the bot logged nothing at DEBUG?"
    assert DEFAULT_TOKEN not in caplog.text, "the bot token leaked into the logs"
    assert DEFAULT_TOKEN.split(":")[1] not in caplog.text
    assert "[REDACTED]" in caplog.text, "httpx logged request URLs: they must show the redaction"
    assert report.ok, "\n".join(lines)
    assert not report.errors
    assert len(report.rows) == len(SCRIPT)
    by_expect: dict[str, list[str]] = {}
    for line, outcome, _ in report.rows:
        by_expect.setdefault(line.expect or "any", []).append(outcome.status if outcome else "none")
    # Hard negatives and ordinary chat pass; every solicitation (and the edit) is deleted; admins skipped.
    assert set(by_expect["ok"]) == {"ok"}, "\n".join(lines)
    assert set(by_expect["deleted"]) == {"deleted"}, "\n".join(lines)
    assert set(by_expect["skipped"]) == {"skipped"}
    assert report.incidents >= len(by_expect["deleted"])
    assert report.export_path.exists() and report.export_ok and report.chain_ok
    assert any("verified" in line for line in lines)


def test_demo_command_exits_zero(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["demo", "--workdir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "hash chain in the export:   verified" in result.output
