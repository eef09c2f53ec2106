"""Logging set-up: levels, quiet HTTP libraries, and the bot token redacted from every record.

httpx and PTB log request URLs, and Bot API URLs contain the token (`/bot<token>/method`). The HTTP
loggers are set to WARNING, and a record factory replaces any token in every record's message, arguments
and traceback, so no handler (ours, pytest's, a library's) ever sees it.
"""

from __future__ import annotations

import logging
import re
import traceback
from typing import Any

# Any Bot API token shape, even one we were not told about: <digits>:<35ish url-safe characters>.
TOKEN_PATTERN = re.compile(r"\b\d{5,}:[A-Za-z0-9_-]{30,}\b")
REDACTED = "[REDACTED]"

_secrets: set[str] = set()
_installed = False


def redact(text: str) -> str:
    """`text` with every known secret and every token-shaped string replaced."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return TOKEN_PATTERN.sub(REDACTED, text)


def _redacting_factory(original: Any) -> Any:
    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record: logging.LogRecord = original(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed log call: let the handler report it as usual
            return record
        clean = redact(message)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None:
            text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            record.exc_text = redact(text)  # formatters print exc_text when it is set
            record.exc_info = None
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return record

    return factory


def add_secret(secret: str | None) -> None:
    """Redact `secret` from every log record from now on."""
    global _installed
    if secret:
        _secrets.add(secret)
    if not _installed:
        logging.setLogRecordFactory(_redacting_factory(logging.getLogRecordFactory()))
        _installed = True


def configure_logging(
    level: str = "INFO", *, secrets: tuple[str | None, ...] = (), fmt: str = "text"
) -> None:
    """Root handler at `level` writing structured lines (`fmt`: text or json, bot/logfmt.py),
    HTTP libraries at WARNING, secrets redacted."""
    from bot.logfmt import make_formatter

    for secret in secrets:
        add_secret(secret)
    add_secret(None)
    handler = logging.StreamHandler()
    handler.setFormatter(make_formatter(fmt))
    logging.basicConfig(handlers=[handler], level=level.upper())
    for noisy in ("httpx", "httpcore", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
