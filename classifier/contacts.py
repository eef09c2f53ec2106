"""Contact details in a message: phone, QQ, WeChat, Telegram, URL.

Works on normalized text (lowercase, canonical cues 微信/qq/电报, ASCII digits) and, less
thoroughly, on original text (cue variants and full-width digits are accepted here too).
Positions are into the string given; values are ASCII, lowercase, without separators.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

KINDS = ("phone", "qq", "wechat", "telegram", "url")


@dataclass(frozen=True)
class Contact:
    """One contact detail: kind (phone|qq|wechat|telegram|url), value, span [start, end)."""

    kind: str
    value: str
    start: int
    end: int


_D = r"[0-9０-９]"  # full-width digits too, for original text
_SEP = r"[ \-－]?"
_PHONE = rf"(?:\+?86{_SEP}|\(\+?86\){_SEP})?[1１][3-9３-９]{_D}{_SEP}{_D}{{4}}{_SEP}{_D}{{4}}"
_PHONE_RE = re.compile(rf"(?<![0-9０-９+]){_PHONE}(?![0-9０-９])")

# A cue, then up to a few joining characters (": ", "号", "是"), then the id.
_GAP = r"[ \t:：=＝号是为→\-]{0,4}"
_QQ_RE = re.compile(
    rf"(?:(?<![a-z])qq(?:群号?|号码|号)?|扣扣|企鹅号?|(?<![a-z])q群?(?=[ :：号群]|[0-9０-９])|q号){_GAP}"
    rf"(?P<id>[1-9１-９]{_D}{{4,10}})(?![0-9０-９])",
    re.IGNORECASE,
)
# Variants the normalizer folds into 微信 are accepted too, for original text; the bare 薇 (a
# given name) only with a colon.
_WECHAT_CUE = r"(?:微信号?|(?<![a-z0-9])(?:weixin|wechat|vx|wx|v)(?![a-z])|v信|薇信|威信|徽信|微x|绿泡泡)"
_WECHAT_RE = re.compile(
    rf"(?:{_WECHAT_CUE}{_GAP}|薇 ?[:：] ?)"
    rf"(?P<id>(?<![a-z0-9_-])[a-z][-_a-z0-9]{{5,19}}(?![-_a-z0-9])|{_PHONE}(?![0-9]))",
    re.IGNORECASE,
)
_WXID_RE = re.compile(r"(?<![a-z0-9_])wxid_[a-z0-9_]{4,30}(?![a-z0-9_])", re.IGNORECASE)

_HANDLE = r"[a-z][a-z0-9_]{4,31}"
_TG_AT_RE = re.compile(rf"(?<![a-z0-9_.@])@(?P<id>{_HANDLE})(?![a-z0-9_@]|\.[a-z])", re.IGNORECASE)
_TG_LINK_RE = re.compile(
    r"(?<![a-z0-9.])(?:https?://)?(?:www\.)?(?:t|telegram)\.(?:me|dog)/(?P<id>[+a-z0-9_/]{2,64})",
    re.IGNORECASE,
)
# 飞机 is also the aircraft ("坐飞机 ca1234"): only with a colon or @ after it.
_TG_CUE_RE = re.compile(
    rf"(?:(?:电报|纸飞机|(?<![a-z0-9])(?:tg|telegram)(?![a-z])){_GAP}|飞机 ?[:：@] ?)@?"
    rf"(?P<id>(?<![a-z0-9_]){_HANDLE})"
    r"(?![a-z0-9_])",
    re.IGNORECASE,
)

_TLDS = (
    "com|cn|net|org|me|cc|vip|top|xyz|app|co|io|info|biz|tv|club|site|online|shop|ly|gg|link|ru|hk|"
    "tw|to|bet|live|pro|fun|icu|ink|wang|win|life|work|store|tech|asia|mobi|in|us|uk|jp|kr|sg|ph|vn|"
    "la|mo|my|th|id|nu|ws|cx|su"
)
_URL_CHARS = r"[a-z0-9\-._~:/?#\[\]@!$&'*+,;=%]"
_URL_RE = re.compile(
    rf"https?://{_URL_CHARS}+"
    rf"|(?<![a-z0-9@._\-])(?:www\.)?(?:[a-z0-9](?:[a-z0-9\-]{{0,61}}[a-z0-9])?\.)+(?:{_TLDS})(?![a-z0-9\-])"
    rf"(?:[:/]{_URL_CHARS}*)?",
    re.IGNORECASE,
)
_TRAILING = ".,;:!?'\")]"

# Something every match of a pattern contains, under the same flags: a pattern whose gate does
# not occur is not run (one quick scan for a literal instead of a full one; most messages carry
# no contact at all). A test checks each gate against its pattern.
_GATES = {
    _PHONE_RE: re.compile(r"[1１][3-9３-９]"),
    _QQ_RE: re.compile(r"q|扣扣|企鹅", re.IGNORECASE),
    _WECHAT_RE: re.compile(r"[vw微薇威徽]|绿泡泡", re.IGNORECASE),
    _WXID_RE: re.compile(r"wxid_", re.IGNORECASE),
    _TG_LINK_RE: re.compile(r"\.(?:me|dog)/", re.IGNORECASE),
    _TG_AT_RE: re.compile(r"@"),
    _TG_CUE_RE: re.compile(r"电报|飞机|t", re.IGNORECASE),
    _URL_RE: re.compile(r"://|\."),
}


_GATE_OF = {id(p): g for p, g in _GATES.items()}  # hashing a Pattern hashes its code: slow


def _matches(pattern: re.Pattern[str], text: str) -> Iterable[re.Match[str]]:
    return pattern.finditer(text) if _GATE_OF[id(pattern)].search(text) else ()


def _ascii(s: str) -> str:
    """Full-width digits/letters to ASCII, lowercase, separators out (for values)."""
    s = unicodedata.normalize("NFKC", s).lower()
    return re.sub(r"[ \t\-()]", "", s)


def extract_contacts(text: str) -> list[Contact]:
    """Every contact detail in `text`, ordered by position; never raises on a str."""
    if not isinstance(text, str) or not text:
        return []
    found: list[Contact] = []

    def add(kind: str, value: str, start: int, end: int) -> None:
        found.append(Contact(kind, value, start, end))

    for m in _matches(_PHONE_RE, text):
        digits = re.sub(r"\D", "", _ascii(m.group()))
        add("phone", digits[-11:], m.start(), m.end())
    for m in _matches(_QQ_RE, text):
        add("qq", _ascii(m.group("id")), m.start("id"), m.end("id"))
    for m in _matches(_WECHAT_RE, text):
        value = _ascii(m.group("id"))
        if value[:1].isdigit() or value.startswith("+"):
            value = re.sub(r"\D", "", value)[-11:]
        add("wechat", value, m.start("id"), m.end("id"))
    for m in _matches(_WXID_RE, text):
        add("wechat", _ascii(m.group()), m.start(), m.end())

    tg_spans: list[tuple[int, int]] = []
    for m in _matches(_TG_LINK_RE, text):
        path = m.group("id").rstrip("/")
        add("telegram", "t.me/" + path.lower(), m.start(), m.start("id") + len(path))
        tg_spans.append((m.start(), m.end()))
    for m in _matches(_TG_AT_RE, text):
        add("telegram", "@" + m.group("id").lower(), m.start(), m.end())
    for m in _matches(_TG_CUE_RE, text):
        add("telegram", "@" + m.group("id").lower(), m.start("id"), m.end("id"))

    for m in _matches(_URL_RE, text):
        start, end = m.span()
        while end > start and text[end - 1] in _TRAILING:
            end -= 1
        if any(a < end and start < b for a, b in tg_spans):
            continue
        add("url", text[start:end].lower(), start, end)

    return _dedupe(found)


def _dedupe(found: Iterable[Contact]) -> list[Contact]:
    """One entry per (kind, value, span); a value found twice in one place by two rules, once."""
    seen: dict[tuple[str, str], Contact] = {}
    out = []
    for c in sorted(found, key=lambda c: (c.start, -c.end, KINDS.index(c.kind))):
        key = (c.kind, c.value)
        prev = seen.get(key)
        if prev is not None and prev.start <= c.start and c.end <= prev.end:
            continue  # the same contact inside one already kept (e.g. @handle after 电报)
        seen[key] = c
        out.append(c)
    return out


def contact_features(contacts: Iterable[Contact]) -> list[str]:
    """Coarse tokens for a model: one "__contact_<kind>__" per contact, plus "__contact_multi__"
    when two or more kinds appear."""
    kinds = [c.kind for c in contacts]
    out = [f"__contact_{k}__" for k in kinds]
    if len(set(kinds)) >= 2:
        out.append("__contact_multi__")
    return out
