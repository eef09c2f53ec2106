"""Alembic environment: async engines, or a connection handed in by storage.engine."""

from __future__ import annotations

import asyncio
import os
from typing import Any, Literal

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.types import TypeDecorator, TypeEngine

from storage.engine import make_engine
from storage.models import Base

target_metadata = Base.metadata


def render_item(type_: str, obj: Any, autogen_context: Any) -> str | Literal[False]:
    """Render our TypeDecorators as the plain types they store, so migrations never import storage."""
    if type_ == "type" and isinstance(obj, TypeDecorator):
        impl = obj.impl if isinstance(obj.impl, TypeEngine) else obj.impl()
        return f"sa.{impl!r}"
    return False


def run_on(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_item=render_item,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_async() -> None:
    url = os.environ.get("QINGLANG_DATABASE_URL") or context.config.get_main_option("sqlalchemy.url")
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(run_on)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run: qinglang db upgrade")

connection = context.config.attributes.get("connection")
if connection is not None:
    run_on(connection)
else:
    asyncio.run(run_async())
