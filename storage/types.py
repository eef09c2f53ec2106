"""Column types that store what they are given, faithfully, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Text
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

# A private-use character that starts an escaped value. PostgreSQL's text type rejects NUL and neither
# driver can send a lone surrogate, so such strings (and any string that happens to start with the
# marker) are stored as marker + JSON with ASCII escapes; every other string is stored as it is.
ESCAPE_MARKER = "\ue000json:"


def _needs_escape(value: str) -> bool:
    if value.isascii():
        return "\x00" in value
    if "\x00" in value or value.startswith(ESCAPE_MARKER):
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def escape_text(value: str) -> str:
    """Reversibly make any Python string storable as database text."""
    if _needs_escape(value):
        return ESCAPE_MARKER + json.dumps(value, ensure_ascii=True)
    return value


def unescape_text(value: str) -> str:
    """Undo `escape_text`."""
    if value.startswith(ESCAPE_MARKER):
        return json.loads(value[len(ESCAPE_MARKER) :])
    return value


def dumps_json(value: Any) -> str:
    """JSON text that any database text column accepts (control characters and surrogates escaped)."""
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(value, ensure_ascii=True, sort_keys=True)
    return text


class SafeText(TypeDecorator[str]):
    """Text that round-trips NUL characters and lone surrogates (escaped reversibly)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise TypeError(f"expected str, got {type(value).__name__}")
        return escape_text(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else unescape_text(value)


class JSONText(TypeDecorator[Any]):
    """JSON kept as text: floats and key order survive exactly; no dialect JSON quirks (jsonb and \\u0000)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else dumps_json(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> Any:
        return None if value is None else json.loads(value)


def as_utc(value: datetime) -> datetime:
    """Aware UTC datetime; a naive value is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both backends (SQLite keeps no zone, so we strip and restore it)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = as_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)
