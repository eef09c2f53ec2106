"""The `env` fixture of the bot tests: the real application against the in-process emulator
(tests/botenv.py). A test module with an `env` fixture of its own uses that one instead."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from botenv import BotEnv, running_env


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[BotEnv]:
    async with running_env(tmp_path) as running:
        yield running
