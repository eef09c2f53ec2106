"""The `qinglang` command line: one click group; each area registers its own commands."""

from __future__ import annotations

import click

from bot.cli import bot_cmds, classifier_cmds, scan_cmds, storage_cmds


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="qinglang")
def main() -> None:
    """清朗 qinglang: moderation for Chinese-language Telegram groups."""


@main.group()
def bench() -> None:
    """Benchmarks: each prints a readable table and ends with one JSON line of figures."""


# Each module owns its commands; the order here is the order in `qinglang --help`.
classifier_cmds.register(main, bench)
storage_cmds.register(main, bench)
bot_cmds.register(main, bench)
scan_cmds.register(main, bench)
