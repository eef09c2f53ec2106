"""Shared fixtures: database URLs for SQLite files and a real PostgreSQL server."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

POSTGRES_URL = os.environ.get("QINGLANG_TEST_POSTGRES_URL", "")
REQUIRE_POSTGRES = os.environ.get("QINGLANG_REQUIRE_POSTGRES") == "1"
# Bots built by tests (and the processes they start) open no metrics port unless a test asks for one:
# the default, 9108, would collide between tests and between concurrent test runs.
os.environ.setdefault("QINGLANG_METRICS_PORT", "0")


def postgres_or_skip() -> str:
    """The server URL, or a visible skip (a failure where CI promised a server)."""
    if POSTGRES_URL:
        return POSTGRES_URL
    if REQUIRE_POSTGRES:
        pytest.fail("QINGLANG_REQUIRE_POSTGRES=1 but QINGLANG_TEST_POSTGRES_URL is not set")
    pytest.skip("no PostgreSQL server: set QINGLANG_TEST_POSTGRES_URL (scripts/test starts one)")


async def _admin(sql: str) -> None:
    import asyncpg

    dsn = POSTGRES_URL.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    base = postgres_or_skip()
    name = f"t_{uuid.uuid4().hex[:12]}"
    await _admin(f'CREATE DATABASE "{name}"')
    try:
        yield base.rsplit("/", 1)[0] + f"/{name}"
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite file for one test."""
    return f"sqlite+aiosqlite:///{tmp_path / 'qinglang.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test that takes this runs once on a SQLite file and once on real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'qinglang.db'}"
    return request.getfixturevalue("postgres_url")
