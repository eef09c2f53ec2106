"""Bot API JSON shapes: the one place that builds users, chats, entities and chat members.

Plain dicts, exactly what Telegram sends; the emulator and the tests' factories both use these.
"""

from __future__ import annotations

import re
from typing import Any

JSON = dict[str, Any]

# Telegram's own service accounts, as they appear in `from` of messages sent on behalf of a chat.
GROUP_ANONYMOUS_BOT: JSON = {
    "id": 1087968824,
    "is_bot": True,
    "first_name": "Group",
    "username": "GroupAnonymousBot",
}
CHANNEL_BOT: JSON = {"id": 136817688, "is_bot": True, "first_name": "Channel", "username": "Channel_Bot"}

# Every right a ChatMemberAdministrator must carry (PTB refuses the object without them).
ADMIN_RIGHTS: tuple[str, ...] = (
    "can_be_edited",
    "is_anonymous",
    "can_manage_chat",
    "can_delete_messages",
    "can_manage_video_chats",
    "can_restrict_members",
    "can_promote_members",
    "can_change_info",
    "can_invite_users",
    "can_post_stories",
    "can_edit_stories",
    "can_delete_stories",
    "can_pin_messages",
    "can_manage_topics",
)
# A human admin added with add_chat(admins=[...]): everything but promoting and anonymity.
DEFAULT_ADMIN_RIGHTS: JSON = {
    **dict.fromkeys(ADMIN_RIGHTS, True),
    "can_be_edited": False,
    "is_anonymous": False,
    "can_promote_members": False,
}
# The bot in a group unless told otherwise: an admin that can delete and restrict.
DEFAULT_BOT_RIGHTS: JSON = {
    **dict.fromkeys(ADMIN_RIGHTS, False),
    "can_manage_chat": True,
    "can_delete_messages": True,
    "can_restrict_members": True,
    "can_invite_users": True,
    "can_pin_messages": True,
}

# ChatMemberRestricted must list every permission.
PERMISSIONS: tuple[str, ...] = (
    "can_send_messages",
    "can_send_audios",
    "can_send_documents",
    "can_send_photos",
    "can_send_videos",
    "can_send_video_notes",
    "can_send_voice_notes",
    "can_send_polls",
    "can_send_other_messages",
    "can_add_web_page_previews",
    "can_change_info",
    "can_invite_users",
    "can_pin_messages",
    "can_manage_topics",
    "can_edit_tag",
    "can_react_to_messages",
)


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units, the unit of Telegram entity offsets."""
    return len(text.encode("utf-16-le")) // 2


def user_json(
    user_id: int,
    first_name: str | None = None,
    *,
    username: str | None = None,
    last_name: str | None = None,
    is_bot: bool = False,
    language_code: str | None = None,
) -> JSON:
    """A User object."""
    user: JSON = {"id": user_id, "is_bot": is_bot, "first_name": first_name or f"User{user_id}"}
    if last_name:
        user["last_name"] = last_name
    if username:
        user["username"] = username
    if language_code:
        user["language_code"] = language_code
    return user


def chat_json(chat_id: int, chat_type: str, title: str | None = None, **extra: Any) -> JSON:
    """A Chat object (groups carry a title; private chats the user's names)."""
    chat: JSON = {"id": chat_id, "type": chat_type}
    if chat_type != "private":
        chat["title"] = title or f"Chat {chat_id}"
    chat.update({k: v for k, v in extra.items() if v is not None})
    return chat


def command_entities(text: str | None) -> list[JSON]:
    """The bot_command entity Telegram adds to a text that starts with '/'."""
    if not text or not text.startswith("/") or len(text) < 2 or text[1].isspace():
        return []
    command = text.split(maxsplit=1)[0]
    return [{"type": "bot_command", "offset": 0, "length": utf16_len(command)}]


def admin_member_json(user: JSON, rights: JSON | None = None, custom_title: str | None = None) -> JSON:
    """A ChatMemberAdministrator with every right field present."""
    member: JSON = {"status": "administrator", "user": user}
    merged = {**DEFAULT_ADMIN_RIGHTS, **(rights or {})}
    for right in ADMIN_RIGHTS:
        member[right] = bool(merged.get(right, False))
    if custom_title:
        member["custom_title"] = custom_title
    return member


def restricted_member_json(user: JSON, permissions: JSON, until_date: int, is_member: bool = True) -> JSON:
    """A ChatMemberRestricted with every permission field present (absent means not allowed)."""
    member: JSON = {"status": "restricted", "user": user, "is_member": is_member, "until_date": until_date}
    for permission in PERMISSIONS:
        member[permission] = bool(permissions.get(permission, False))
    return member


def document_json(file_id: str, file_name: str | None, mime_type: str | None, size: int) -> JSON:
    """A Document object."""
    document: JSON = {"file_id": file_id, "file_unique_id": f"u{file_id}", "file_size": size}
    if file_name:
        document["file_name"] = file_name
    if mime_type:
        document["mime_type"] = mime_type
    return document


def photo_json(file_id: str) -> list[JSON]:
    """A photo: Telegram sends several sizes, smallest first."""
    return [
        {
            "file_id": f"{file_id}s",
            "file_unique_id": f"u{file_id}s",
            "width": 90,
            "height": 90,
            "file_size": 1200,
        },
        {
            "file_id": file_id,
            "file_unique_id": f"u{file_id}",
            "width": 800,
            "height": 800,
            "file_size": 64000,
        },
    ]


def video_json(file_id: str) -> JSON:
    """A Video object."""
    return {
        "file_id": file_id,
        "file_unique_id": f"u{file_id}",
        "width": 640,
        "height": 360,
        "duration": 5,
        "mime_type": "video/mp4",
        "file_size": 250000,
    }


def entity(kind: str, text: str, fragment: str, *, occurrence: int = 0, **extra: Any) -> JSON:
    """A MessageEntity of `kind` over `fragment`'s `occurrence`-th appearance in `text` (UTF-16 offsets)."""
    start = -1
    for _ in range(occurrence + 1):
        start = text.find(fragment, start + 1)
        if start < 0:
            raise ValueError(f"{fragment!r} does not occur {occurrence + 1} time(s) in the text")
    return {"type": kind, "offset": utf16_len(text[:start]), "length": utf16_len(fragment), **extra}


def text_link(text: str, fragment: str, url: str) -> JSON:
    """A text_link entity: `fragment` of `text` shown as a link to `url` (the hidden-link shape)."""
    return entity("text_link", text, fragment, url=url)


def url_keyboard(*buttons: tuple[str, str], per_row: int = 1) -> JSON:
    """An InlineKeyboardMarkup of URL buttons, (label, url) each, `per_row` to a row."""
    row_list = [
        [{"text": label, "url": url} for label, url in buttons[i : i + per_row]]
        for i in range(0, len(buttons), per_row)
    ]
    return {"inline_keyboard": row_list}


def callback_keyboard(*buttons: tuple[str, str], per_row: int = 2) -> JSON:
    """An InlineKeyboardMarkup of callback buttons, (label, callback_data) each."""
    row_list = [
        [{"text": label, "callback_data": data} for label, data in buttons[i : i + per_row]]
        for i in range(0, len(buttons), per_row)
    ]
    return {"inline_keyboard": row_list}


# What Telegram marks by itself in a user's text (an approximation of tdlib's detection: ASCII URLs
# with a scheme, www. or a common TLD; e-mail; @username; #hashtag; /command).
_TLDS = "com|net|org|cn|me|io|xyz|top|cc|vip|info|app|co|ru|tk|shop|site|link|club|in|hk|tw|biz|live|pro"
_AUTO = re.compile(
    r"(?P<email>(?<![A-Za-z0-9_.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})"
    r"|(?P<url>(?:https?://|www\.)[\x21-\x7e]+|(?<![A-Za-z0-9_.@/-])(?:[A-Za-z0-9-]+\.)+(?:" + _TLDS + r")\b"
    r"(?::\d{1,5})?(?:/[\x21-\x7e]*)?)"
    r"|(?P<mention>(?<![\w@])@[A-Za-z][A-Za-z0-9_]{3,31}\b)"
    r"|(?P<hashtag>(?<![\w#])#\w*[^\W\d]\w*)"
    r"|(?P<bot_command>(?<![^\s])/[A-Za-z0-9_]{1,32}(?:@[A-Za-z][A-Za-z0-9_]{2,31})?(?![\w/]))"
)
_URL_TRAILING = ".,;:!?)]}\"'"


def auto_entities(text: str) -> list[JSON]:
    """The url, email, mention, hashtag and bot_command entities Telegram adds to a user's text."""
    found: list[JSON] = []
    for match in _AUTO.finditer(text):
        kind = match.lastgroup
        assert kind is not None
        start, value = match.start(), match.group()
        if kind == "url":
            value = value.rstrip(_URL_TRAILING)
        if not value:
            continue
        found.append({"type": kind, "offset": utf16_len(text[:start]), "length": utf16_len(value)})
    return found


def merge_entities(given: list[JSON], detected: list[JSON]) -> list[JSON]:
    """The sender's entities plus detected ones that do not overlap them, ordered by offset."""
    spans = [(e["offset"], e["offset"] + e["length"]) for e in given]
    merged = list(given)
    for entity in detected:
        start, end = entity["offset"], entity["offset"] + entity["length"]
        if all(end <= s or start >= e for s, e in spans):
            merged.append(entity)
    merged.sort(key=lambda e: (e["offset"], -e["length"]))
    return merged
