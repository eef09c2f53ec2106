"""Runtime settings: environment variables prefixed QINGLANG_, or a .env file (pydantic-settings)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

Mode = Literal["enforce", "dry_run", "off"]
Language = Literal["zh", "en"]


class Settings(BaseSettings):
    """Process-wide settings. Per-chat settings (mode, thresholds, strikes…) live in the database."""

    model_config = SettingsConfigDict(
        env_prefix="QINGLANG_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    telegram_token: SecretStr | None = Field(default=None, description="Bot token from @BotFather")
    base_url: str | None = Field(
        default=None,
        description="Bot API base URL for a local Bot API server, e.g. http://127.0.0.1:8081/bot",
    )
    database_url: str | None = Field(
        default=None, description="SQLAlchemy async URL; default sqlite+aiosqlite:///qinglang.db"
    )
    auto_upgrade_database: bool = Field(
        default=True, description="Create or upgrade the database schema on start"
    )
    model_path: Path | None = Field(default=None, description="Classifier model; default: the shipped one")
    default_mode: Mode = Field(default="enforce", description="Mode of a chat the bot has never seen")
    language: Language = Field(default="zh", description="Default language of the bot's messages")
    notice_ttl_seconds: float = Field(default=60, ge=0, description="Deletion notices remove themselves")
    notice_min_interval_seconds: float = Field(
        default=3, ge=0, description="At most one deletion notice per chat in this interval (flood control)"
    )
    admin_cache_seconds: float = Field(
        default=300, ge=0, description="How long a chat's admin list is cached"
    )
    chat_settings_cache_seconds: float = Field(
        default=30, ge=0, description="How long a chat's settings are cached between database reads"
    )
    telegram_retries: int = Field(default=3, ge=0, description="Retries for timeouts and network errors")
    max_retry_after_seconds: float = Field(
        default=30, ge=0, description="Longest flood-control wait (429 retry_after) honoured before giving up"
    )
    telegram_backoff_seconds: float = Field(
        default=0.5, ge=0, description="First wait before retrying a timeout or 5xx; doubles each retry"
    )
    spool_dir: Path | None = Field(
        default=None,
        description="Where evidence waits while the database is unavailable; default: beside the SQLite "
        "file (<file>.spool) or ./qinglang-spool",
    )
    spool_retry_seconds: float = Field(
        default=2, gt=0, description="How often spooled evidence is retried into the database"
    )
    journal_updates: bool = Field(
        default=True,
        description="Journal fetched updates (in the spool dir) before polling confirms them, "
        "and replay unfinished ones on start",
    )
    classify_worker: bool = Field(
        default=True,
        description="Classify fetched batches ahead of the handlers in a second (forked) process; "
        "off: everything in the bot's process",
    )
    fast_pass: bool = Field(
        default=True,
        description="Pass plain text messages the classifier worker found clean before PTB parses them "
        "(chat settings and admins cached, verdict in time); off: every message through the handlers",
    )
    batch_deletions: bool = Field(
        default=True,
        description="Carry out the model's deletions in batches behind the handlers (one evidence commit, "
        "one deleteMessages call and one notice per chat for a batch); off: each in its own handler",
    )
    log_level: str = Field(default="INFO", description="Python logging level")
    log_format: Literal["text", "json"] = Field(
        default="text", description="Log lines as key=value text or one JSON object a line"
    )
    metrics_host: str = Field(
        default="127.0.0.1", description="Address of /metrics and /healthz (0.0.0.0 inside a container)"
    )
    metrics_port: int = Field(
        default=9108, ge=0, le=65535, description="Port of /metrics and /healthz; 0: off"
    )
