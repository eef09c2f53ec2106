"""Scheduled jobs: daily digest, retention purge, admin-cache refresh (filled in by the admin-commands work).

`bot/app.py` calls `schedule_jobs(application)` once while building the application; jobs reach the
services through `context.services` when they run (services exist from post_init on).
"""

from __future__ import annotations

from typing import Any

from telegram.ext import Application


def schedule_jobs(application: Application[Any, Any, Any, Any, Any, Any]) -> None:
    """Register the recurring jobs on `application.job_queue`."""
