"""parse_mode as Telegram applies it: HTML and MarkdownV2 become plain text plus entities.

Real Telegram rejects malformed markup (an unescaped "<" in a user's name, a bare "." in
MarkdownV2) with 400 "can't parse entities"; the emulator does the same, so such bugs show in tests.
Legacy "Markdown" is handled loosely (bold, italic, code, pre, links; no reserved characters).
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable

from bot.emulator.builders import utf16_len
from bot.emulator.state import JSON, ApiError

UserLookup = Callable[[int], JSON | None]

_HTML_TAGS = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "tg-spoiler": "spoiler",
    "span": "spoiler",
    "a": "text_link",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
    "tg-emoji": "custom_emoji",
}
_TAG_NAME = re.compile(r"/?([^\s>]*)")  # as tdlib reads it: up to a space or ">"
_ATTR = re.compile(r"""([a-zA-Z][\w-]*)\s*(?:=\s*("[^"]*"|'[^']*'|[^\s"'>]+))?""")
_CHAR_REF = re.compile(r"&(#[xX][0-9a-fA-F]{1,6}|#[0-9]{1,7}|[a-zA-Z]{2,8});")
_MENTION = re.compile(r"^tg://user\?id=(\d+)$")
_MDV2_RESERVED = frozenset("_*[]()~`>#+-=|{}.!")


def _fail(reason: str) -> ApiError:
    return ApiError(400, f"Bad Request: can't parse entities: {reason}")


def _byte_offset(text: str, index: int) -> int:
    return len(text[:index].encode("utf-8"))


def _link_entity(url: str, users: UserLookup) -> JSON:
    mention = _MENTION.match(url)
    if mention is not None:
        user = users(int(mention.group(1)))
        if user is not None:
            return {"type": "text_mention", "user": user}
    return {"type": "text_link", "url": url}


def _finish(parts: list[str], entities: list[JSON]) -> tuple[str, list[JSON]]:
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return "".join(parts), entities


def parse_html(text: str, users: UserLookup) -> tuple[str, list[JSON]]:
    """Plain text and entities of an HTML-formatted text, or ApiError as Telegram answers."""
    parts: list[str] = []
    entities: list[JSON] = []
    stack: list[tuple[str, int, JSON]] = []  # tag, utf-16 start, entity fields
    position = 0  # utf-16 length of the text so far
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char == "<":
            end = text.find(">", i)
            if end < 0:
                raise _fail(f"Unclosed start tag at byte offset {_byte_offset(text, i)}")
            inner = text[i + 1 : end]
            name_match = _TAG_NAME.match(inner)
            assert name_match is not None  # the pattern matches any string
            name = name_match.group(1).lower()
            if inner.startswith("/"):
                if not stack:
                    raise _fail(f"Unexpected end tag at byte offset {_byte_offset(text, i)}")
                if stack[-1][0] != name:
                    raise _fail(
                        f"Unmatched end tag at byte offset {_byte_offset(text, i)}, "
                        f'expected "</{stack[-1][0]}>", found "</{name}>"'
                    )
                _, start, closed = stack.pop()
                if closed and position > start:
                    entities.append({**closed, "offset": start, "length": position - start})
            else:
                if name not in _HTML_TAGS:
                    raise _fail(f'Unsupported start tag "{name}" at byte offset {_byte_offset(text, i)}')
                attrs = {
                    m.group(1).lower(): html.unescape((m.group(2) or "").strip("\"'"))
                    for m in _ATTR.finditer(inner, name_match.end())
                }
                fields: JSON = {"type": _HTML_TAGS[name]}
                if name == "span" and attrs.get("class") != "tg-spoiler":
                    raise _fail(
                        f'Tag "span" must have class "tg-spoiler" at byte offset {_byte_offset(text, i)}'
                    )
                if name == "a":
                    fields = _link_entity(attrs["href"], users) if attrs.get("href") else {}
                elif name == "blockquote" and "expandable" in attrs:
                    fields["type"] = "expandable_blockquote"
                elif name == "tg-emoji":
                    fields["custom_emoji_id"] = attrs.get("emoji-id", "")
                elif name == "code" and stack and stack[-1][0] == "pre":
                    # <pre><code class="language-x"> is one pre entity with a language
                    language = attrs.get("class", "")
                    if language.startswith("language-"):
                        stack[-1][2]["language"] = language[len("language-") :]
                    fields = {}
                stack.append((name, position, fields))
            i = end + 1
        elif char == "&":
            ref = _CHAR_REF.match(text, i)
            if ref is not None and (ref.group(1)[0] == "#" or ref.group(1) in ("lt", "gt", "amp", "quot")):
                piece = html.unescape(ref.group(0))
                i = ref.end()
            else:
                piece, i = "&", i + 1
            parts.append(piece)
            position += utf16_len(piece)
        else:
            stop = min((k for k in (text.find("<", i), text.find("&", i)) if k >= 0), default=n)
            piece = text[i:stop]
            parts.append(piece)
            position += utf16_len(piece)
            i = stop
    if stack:
        raise _fail(f'Can\'t find end tag corresponding to start tag "{stack[-1][0]}"')
    return _finish(parts, entities)


_MDV2_MARKERS = {"*": "bold", "_": "italic", "__": "underline", "~": "strikethrough", "||": "spoiler"}
_MDV2_NAMES = {
    "bold": "Bold",
    "italic": "Italic",
    "underline": "Underline",
    "strikethrough": "Strikethrough",
    "spoiler": "Spoiler",
    "text_link": "TextUrl",
}


def parse_markdown_v2(text: str, users: UserLookup) -> tuple[str, list[JSON]]:
    """Plain text and entities of a MarkdownV2 text, or ApiError as Telegram answers."""
    parts: list[str] = []
    entities: list[JSON] = []
    stack: list[tuple[str, int, int]] = []  # marker, utf-16 start, index in text
    position = 0
    i, n = 0, len(text)
    quote_start: int | None = None

    def emit(piece: str) -> None:
        nonlocal position
        parts.append(piece)
        position += utf16_len(piece)

    while i < n:
        char = text[i]
        at_line_start = i == 0 or text[i - 1] == "\n"
        if at_line_start and char == ">":
            if quote_start is None:
                quote_start = position
            i += 1
            continue
        if at_line_start and quote_start is not None and char != ">":
            # the quote ended with the previous line (its newline stays outside the entity)
            end = position - 1 if parts and parts[-1].endswith("\n") else position
            if end > quote_start:
                entities.append({"type": "blockquote", "offset": quote_start, "length": end - quote_start})
            quote_start = None
        if char == "\\":
            if i + 1 >= n:
                raise _fail("Character '\\' is reserved and must be escaped with the preceding '\\'")
            emit(text[i + 1])
            i += 2
        elif char == "`":
            fence = text.startswith("```", i)
            close = text.find("```" if fence else "`", i + (3 if fence else 1))
            while close > 0 and text[close - 1] == "\\":
                close = text.find("```" if fence else "`", close + 1)
            if close < 0:
                kind = "Pre" if fence else "Code"
                raise _fail(f"Can't find end of {kind} entity at byte offset {_byte_offset(text, i)}")
            body = text[i + (3 if fence else 1) : close]
            fields: JSON = {"type": "pre" if fence else "code"}
            if fence and "\n" in body:
                language, rest = body.split("\n", 1)
                if language.strip():
                    fields["language"] = language.strip()
                body = rest
            body = re.sub(r"\\([`\\])", r"\1", body)
            start = position
            emit(body)
            if position > start:
                entities.append({**fields, "offset": start, "length": position - start})
            i = close + (3 if fence else 1)
        elif char == "[":
            close = i + 1
            while close < n and text[close] != "]":
                close += 2 if text[close] == "\\" else 1
            if close >= n or not text.startswith("(", close + 1):
                raise _fail("Character '[' is reserved and must be escaped with the preceding '\\'")
            url_end = close + 2
            url: list[str] = []
            while url_end < n and text[url_end] != ")":
                if text[url_end] == "\\" and url_end + 1 < n:
                    url_end += 1
                url.append(text[url_end])
                url_end += 1
            if url_end >= n:
                raise _fail(f"Can't find end of a URL at byte offset {_byte_offset(text, close + 1)}")
            # the link text may itself hold markup; parse it on its own and shift its entities
            inner_text, inner_entities = parse_markdown_v2(text[i + 1 : close], users)
            start = position
            emit(inner_text)
            for entity in inner_entities:
                entities.append({**entity, "offset": entity["offset"] + start})
            if position > start:
                entities.append(
                    {**_link_entity("".join(url), users), "offset": start, "length": position - start}
                )
            i = url_end + 1
        elif text.startswith("__", i) or text.startswith("||", i) or char in "*_~":
            marker = text[i : i + 2] if text.startswith(("__", "||"), i) else char
            if stack and stack[-1][0] == marker:
                _, start, _ = stack.pop()
                if position > start:
                    entities.append(
                        {"type": _MDV2_MARKERS[marker], "offset": start, "length": position - start}
                    )
            elif any(open_marker == marker for open_marker, _, _ in stack):
                raise _fail(f"Can't find end of {_MDV2_NAMES[_MDV2_MARKERS[stack[-1][0]]]} entity")
            else:
                stack.append((marker, position, i))
            i += len(marker)
        elif char in _MDV2_RESERVED:
            raise _fail(f"Character '{char}' is reserved and must be escaped with the preceding '\\'")
        else:
            emit(char)
            i += 1
    if stack:
        marker, _, index = stack[-1]
        name = _MDV2_NAMES[_MDV2_MARKERS[marker]]
        raise _fail(f"Can't find end of {name} entity at byte offset {_byte_offset(text, index)}")
    if quote_start is not None and position > quote_start:
        entities.append({"type": "blockquote", "offset": quote_start, "length": position - quote_start})
    return _finish(parts, entities)


_LEGACY = re.compile(r"\*([^*]*)\*|_([^_]*)_|```([^`]*)```|`([^`]*)`|\[([^\]]*)\]\(([^)]*)\)")


def parse_markdown(text: str, users: UserLookup) -> tuple[str, list[JSON]]:
    """Legacy Markdown, loosely: *bold*, _italic_, `code`, ```pre```, [text](url)."""
    parts: list[str] = []
    entities: list[JSON] = []
    position, last = 0, 0
    for match in _LEGACY.finditer(text):
        before = text[last : match.start()]
        parts.append(before)
        position += utf16_len(before)
        bold, italic, pre, code, label, url = match.groups()
        body = next(g for g in (bold, italic, pre, code, label) if g is not None)
        if bold is not None:
            fields: JSON = {"type": "bold"}
        elif italic is not None:
            fields = {"type": "italic"}
        elif pre is not None:
            fields = {"type": "pre"}
        elif code is not None:
            fields = {"type": "code"}
        else:
            fields = _link_entity(url, users)
        parts.append(body)
        length = utf16_len(body)
        if length:
            entities.append({**fields, "offset": position, "length": length})
        position += length
        last = match.end()
    tail = text[last:]
    if any(c in tail for c in "*_`"):
        index = last + min(k for k in (tail.find(c) for c in "*_`") if k >= 0)
        raise _fail(f"Can't find end of the entity starting at byte offset {_byte_offset(text, index)}")
    parts.append(tail)
    return _finish(parts, entities)


PARSERS: dict[str, Callable[[str, UserLookup], tuple[str, list[JSON]]]] = {
    "html": parse_html,
    "markdownv2": parse_markdown_v2,
    "markdown": parse_markdown,
}


def apply_parse_mode(text: str, parse_mode: object, users: UserLookup) -> tuple[str, list[JSON] | None]:
    """(plain text, entities) for a text and its parse_mode; entities None without a parse_mode."""
    if not parse_mode:
        return text, None
    parser = PARSERS.get(str(parse_mode).lower())
    if parser is None:
        raise ApiError(400, f"Bad Request: unsupported parse_mode {parse_mode}")
    return parser(text, users)
