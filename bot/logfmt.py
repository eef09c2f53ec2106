"""Structured log lines: one line an event, `key=value` (text) or one JSON object (json).

Fields: `ts` (UTC, ISO 8601), `level`, `logger`, `msg`, then whatever the call passed in `extra=`
(e.g. `log.info("deleted", extra={"chat_id": c, "status": s})`), then `exc` with the traceback on the
same line. Every line goes through `bot.logs.redact` once more, so extra fields cannot leak the token.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from typing import Any, Literal

from bot.logs import redact

LogFormat = Literal["text", "json"]

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
_BARE = re.compile(r"[A-Za-z0-9_.:/@+-]+")


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """A record as ordered fields: ts, level, logger, msg, extras, exc."""
    fields: dict[str, Any] = {
        "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
        "level": record.levelname.lower(),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    for key, value in record.__dict__.items():
        if key not in _STANDARD and not key.startswith("_"):
            fields[key] = value
    exc = record.exc_text
    if not exc and record.exc_info and record.exc_info[1] is not None:
        exc = logging.Formatter().formatException(record.exc_info)
    if exc:
        fields["exc"] = exc
    if record.stack_info:
        fields["stack"] = record.stack_info
    return fields


def _logfmt_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    if text and _BARE.fullmatch(text):
        return text
    # json.dumps quotes and escapes newlines, quotes and control characters: one line, always.
    return json.dumps(text, ensure_ascii=False)


class KeyValueFormatter(logging.Formatter):
    """`ts=… level=info logger=bot.app msg="…" chat_id=-100… status=deleted`."""

    def format(self, record: logging.LogRecord) -> str:
        line = " ".join(f"{k}={_logfmt_value(v)}" for k, v in record_fields(record).items())
        return redact(line)


class JsonFormatter(logging.Formatter):
    """One JSON object a line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(json.dumps(record_fields(record), ensure_ascii=False, default=str))


def make_formatter(fmt: LogFormat | str) -> logging.Formatter:
    """The formatter for QINGLANG_LOG_FORMAT: "text" (key=value) or "json"."""
    if fmt == "json":
        return JsonFormatter()
    if fmt == "text":
        return KeyValueFormatter()
    raise ValueError(f"unknown log format {fmt!r}: use 'text' or 'json'")
