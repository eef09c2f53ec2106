"""Bot messages in Simplified Chinese (default) and English, from bot/locales/*.toml.

Each locale file has one table per language (`[zh]`, `[en]`); nested tables give dotted keys.
Every file in the folder is merged, so each area keeps its own file (moderation.toml, admin.toml).
"""

from __future__ import annotations

import logging
import tomllib
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LOCALES_DIR = Path(__file__).with_name("locales")
DEFAULT_LANGUAGE = "zh"
LANGUAGES = ("zh", "en")


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = str(value)
    return out


@cache
def catalog() -> dict[str, dict[str, str]]:
    """All messages: {language: {key: template}}, merged from every locale file."""
    merged: dict[str, dict[str, str]] = {lang: {} for lang in LANGUAGES}
    for path in sorted(LOCALES_DIR.glob("*.toml")):
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        for lang, table in data.items():
            merged.setdefault(lang, {}).update(_flatten(table))
    return merged


def t(key: str, lang: str | None = None, /, **values: Any) -> str:
    """The message `key` in `lang` (falling back to Chinese, then to the key itself), formatted."""
    messages = catalog()
    template = messages.get(lang or DEFAULT_LANGUAGE, {}).get(key)
    if template is None:
        template = messages[DEFAULT_LANGUAGE].get(key)
    if template is None:
        log.warning("missing message key %r", key)
        return key
    try:
        return template.format(**values)
    except (KeyError, IndexError, ValueError):
        # A bad translation must not break moderation: show the raw template.
        log.warning("message %r (%s) could not be formatted", key, lang)
        return template


def category_name(category: str, lang: str | None = None) -> str:
    """A category's display name, e.g. fraud -> 诈骗."""
    return t(f"category.{category}", lang)
