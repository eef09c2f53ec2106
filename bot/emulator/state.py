"""The emulator's records: calls, uploaded files, faults, chats and their messages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

JSON = dict[str, Any]


class ApiError(Exception):
    """An error answer: becomes `{"ok": false, "error_code": status, ...}` with that HTTP status."""

    def __init__(self, status: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.retry_after = retry_after

    def body(self) -> JSON:
        """The JSON Telegram sends with this error."""
        body: JSON = {"ok": False, "error_code": self.status, "description": self.description}
        # Only when set: PTB reports any other `parameters` as unknown in the exception text.
        if self.retry_after is not None:
            body["parameters"] = {"retry_after": self.retry_after}
        return body


@dataclass
class Call:
    """One Bot API request the emulator received (`at` is time.monotonic() on arrival)."""

    method: str
    params: JSON
    at: float
    error: str | None = None  # the description, when the emulator answered with an error
    status: int = 200


@dataclass
class UploadedFile:
    """A file sent as multipart (e.g. sendDocument): the bytes exactly as uploaded."""

    field: str
    filename: str | None
    content: bytes
    content_type: str | None = None


@dataclass
class Fault:
    """A scripted failure for the next `times` calls of a method (None: until cleared)."""

    status: int
    description: str
    retry_after: int | None = None
    times: int | None = 1

    def error(self) -> ApiError:
        return ApiError(self.status, self.description, self.retry_after)


@dataclass
class Slowdown:
    """Answer a method's next `times` calls (None: every call) `seconds` late."""

    seconds: float
    times: int | None = None


DEFAULT_DESCRIPTIONS = {
    400: "Bad Request: emulated failure",
    403: "Forbidden: bot was kicked from the supergroup chat",
    409: "Conflict: terminated by other getUpdates request",
    429: "Too Many Requests: retry after {retry_after}",
    500: "Internal Server Error",
    502: "Bad Gateway",
}


@dataclass
class StoredMessage:
    """A message the emulator knows of, injected or sent by the bot."""

    data: JSON
    from_bot: bool
    deleted: bool = False
    deleted_at: float | None = None  # time.monotonic() of the call that deleted it

    def delete(self, at: float) -> None:
        """Mark deleted (the first deletion's time is kept)."""
        if not self.deleted:
            self.deleted, self.deleted_at = True, at

    @property
    def message_id(self) -> int:
        return int(self.data["message_id"])


@dataclass
class ChatState:
    """One chat: who is owner, admin, member, restricted or banned, and its messages."""

    chat: JSON
    owner: int | None = None
    admins: dict[int, JSON] = field(default_factory=dict)  # user id -> rights overrides
    bot_rights: JSON | None = None  # None: the bot is a plain member
    bot_status: str = "member"  # "member" (or admin, by bot_rights), "kicked" or "left": calls get 403
    members: set[int] = field(default_factory=set)
    restricted: dict[int, tuple[JSON, int]] = field(default_factory=dict)  # permissions, until_date
    banned: dict[int, int] = field(default_factory=dict)  # until_date
    messages: dict[int, StoredMessage] = field(default_factory=dict)
    next_message_id: int = 1

    @property
    def id(self) -> int:
        return int(self.chat["id"])

    @property
    def type(self) -> str:
        return str(self.chat["type"])

    @property
    def is_group(self) -> bool:
        return self.type in ("group", "supergroup")

    def forbidden(self) -> str | None:
        """Telegram's 403 description when the bot was removed from this group, else None."""
        if self.bot_status == "kicked":
            return f"Forbidden: bot was kicked from the {self.type} chat"
        if self.bot_status == "left":
            return f"Forbidden: bot is not a member of the {self.type} chat"
        return None
