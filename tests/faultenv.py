"""A small harness for the fault tests: the real Application against the emulator (in-process), with
settings of the test's choosing, a record of handler errors, and look-ups of incidents and events."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from botenv import running_env, shared_model
from sqlalchemy import text
from telegram import Update

from bot.emulator import Emulator

BOT_ID = 777000222
TOKEN = f"{BOT_ID}:AAfault-tests-token-0123456789abcdefghij"
GROUP = -1001500000001
ADMIN = 1002
_ids = itertools.count(1)

# Solicitations the shipped model deletes (checked by `solicitations`).
SOLICITATIONS = [
    "出冰，货真价实，量大从优，需要的加V：bing8888",
    "急招刷单员，手机操作，日结300-500，加QQ 2837465910",
    "澳门新葡京线上娱乐，注册就送88元，百家乐真人荷官，加微信 amxpj888",
    "兼职刷单，一单一结，佣金日结，有意者加V：shuadan668",
]
CLEAN = [
    "大家早上好！今天天气不错，周末有人一起去爬山吗？",
    "请问群里有人知道附近哪家面馆好吃吗",
    "明天开会的材料我已经发到邮箱了，大家看一下",
]


def solicitations() -> list[str]:
    model = shared_model()
    found = [s for s in SOLICITATIONS if model.classify(s).action == "delete"]
    assert found, "the shipped model deletes none of the test solicitations"
    return found


@dataclass
class FaultEnv:
    app: Any
    emu: Emulator
    errors: list[BaseException]
    outcomes: list[Any]

    @property
    def services(self) -> Any:
        return self.app.bot_data.services

    def say(self, text: str, sender: int, chat_id: int = GROUP) -> dict[str, Any]:
        """The emulator learns of a message; returns the update (not yet delivered)."""
        if sender not in self.emu.users:
            self.emu.add_user(sender, f"u{sender}")
        msg = self.emu.message(chat_id, sender, text)
        return {"update_id": next(_ids), "message": msg}

    async def deliver(self, update: dict[str, Any]) -> None:
        await self.app.process_update(Update.de_json(update, self.app.bot))
        services = self.services
        if services is not None and services.deletions is not None:
            await services.deletions.wait_idle()  # the deletions it queued (bot/deletions.py)


@asynccontextmanager
async def fault_env(database_url: str, **settings: Any) -> AsyncIterator[FaultEnv]:
    """botenv's running application on its own emulator and database, with the configured retries
    (the fault tests exercise them) unless a test sets telegram_retries itself."""
    from bot.config import Settings

    emu = Emulator(TOKEN, bot_username="qinglang_fault_bot")
    emu.add_user(ADMIN, "管理员")
    emu.add_chat(GROUP, "故障群", admins=[ADMIN], owner=ADMIN)
    settings.setdefault("telegram_retries", Settings.model_fields["telegram_retries"].default)
    outcomes: list[Any] = []
    observers = [lambda record, outcome: outcomes.append(outcome)]
    async with running_env(None, emu=emu, observers=observers, database_url=database_url, **settings) as env:
        yield FaultEnv(app=env.app, emu=emu, errors=env.errors, outcomes=outcomes)


async def incident_actions(engine: Any) -> dict[int, list[tuple[str, dict[str, Any]]]]:
    """{message_id: [(action value, detail), ...]} for every incident, from the database."""
    async with engine.connect() as conn:
        incidents = (await conn.execute(text("select id, message_id from incidents"))).all()
        events = (
            await conn.execute(
                text(
                    "select incident_id, value, detail from incident_events"
                    " where kind = 'action' order by seq"
                )
            )
        ).all()
    by_id: dict[int, int] = {}
    out: dict[int, list[tuple[str, dict[str, Any]]]] = {}
    for incident_id, message_id in incidents:
        assert message_id not in out, f"message {message_id} has two incidents"
        by_id[incident_id] = message_id
        out[message_id] = []
    for incident_id, value, detail in events:
        out[by_id[incident_id]].append((value, json.loads(detail) if detail else {}))
    return out
