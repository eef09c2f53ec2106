from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import storage

# tests/ has no packages (--import-mode=importlib): make this folder's helpers importable.
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[storage.Database]:
    """A fresh database (SQLite file, then real PostgreSQL) with the schema applied."""
    database = await storage.open_database(database_url)
    try:
        yield database
    finally:
        await database.close()
