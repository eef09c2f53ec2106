"""Crash: `qinglang run` as a subprocess polling the emulator on 127.0.0.1, SIGKILLed halfway through a
stream and restarted: every message judged exactly once (one incident per flagged message, each deleted
once, none missing), thanks to the update journal (bot/journal.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from pathlib import Path

from botenv import shared_model
from faultenv import ADMIN, CLEAN, GROUP, TOKEN, solicitations

from bot.emulator import Emulator

STREAM = 300


async def _start(emu: Emulator, db: Path) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "QINGLANG_TELEGRAM_TOKEN": TOKEN,
        "QINGLANG_BASE_URL": str(emu.base_url),
        "QINGLANG_DATABASE_URL": f"sqlite+aiosqlite:///{db}",
        "QINGLANG_NOTICE_MIN_INTERVAL_SECONDS": "0",
        "QINGLANG_LOG_LEVEL": "WARNING",
    }
    return await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "qinglang"), "run", env=env, cwd=db.parent,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


async def test_sigkill_halfway_then_restart_judges_every_message_once(tmp_path: Path) -> None:
    emu = Emulator(TOKEN, bot_username="qinglang_fault_bot")
    emu.add_user(ADMIN, "管理员")
    emu.add_chat(GROUP, "故障群", admins=[ADMIN], owner=ADMIN)
    texts = solicitations()
    model = shared_model()
    db = tmp_path / "q.db"
    flagged: set[int] = set()
    all_ids: list[int] = []
    for i in range(STREAM):
        sender = 80_000 + i
        emu.add_user(sender, f"u{i}")
        text = texts[i % len(texts)] if i % 2 == 0 else CLEAN[i % len(CLEAN)]
        msg = emu.message(GROUP, sender, text)  # queued as an update
        all_ids.append(msg["message_id"])
        if model.classify(text).action == "delete":
            flagged.add(msg["message_id"])
    emu.delay("deleteMessage", 0.02)  # slow enough to be killed mid-stream
    emu.delay("deleteMessages", 0.02)

    def ok_deletes() -> list[int]:  # deleteMessage and deleteMessages alike
        return [m for _, m, _ in emu.deletions()]

    async with emu.serve():
        proc = await _start(emu, db)
        try:
            await emu.wait_for(lambda: len(ok_deletes()) >= len(flagged) // 2, timeout=60)
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGKILL)
            await proc.wait()
        killed_at = len(ok_deletes())
        assert killed_at < len(flagged), "killed before the end of the stream"
        proc = await _start(emu, db)
        try:
            await emu.wait_for(lambda: flagged <= set(ok_deletes()) and not emu.pending_updates, timeout=60)
            await asyncio.sleep(0.5)  # anything extra (a second delete) would show up now
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            await proc.wait()

    deletes = ok_deletes()
    assert sorted(deletes) == sorted(flagged), "each flagged message deleted exactly once"
    assert all(emu.is_deleted(GROUP, m) for m in flagged)
    assert not any(emu.is_deleted(GROUP, m) for m in set(all_ids) - flagged)
    with sqlite3.connect(db) as conn:
        incidents = [m for (m,) in conn.execute("select message_id from incidents")]
        actions = conn.execute(
            "select i.message_id, e.value from incident_events e join incidents i on i.id = e.incident_id"
            " where e.kind = 'action'"
        ).fetchall()
    assert sorted(incidents) == sorted(flagged), "one incident per flagged message"
    assert sorted(m for m, _ in actions) == sorted(flagged), "one outcome per incident"
    assert {v for _, v in actions} == {"deleted"}
    assert db.stat().st_mode & 0o777 == 0o600
