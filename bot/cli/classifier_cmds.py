"""CLI commands for this area (filled in by its issue)."""

from __future__ import annotations

import click


def register(main: click.Group, bench: click.Group) -> None:
    """Attach this area's commands to the top-level group and the bench group."""
