"""The Bot API methods the emulator answers, with Telegram's error descriptions.

Each takes the emulator and the parsed parameters and returns the `result`, or raises ApiError.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bot.emulator import builders, markup
from bot.emulator.state import JSON, ApiError, ChatState, StoredMessage, UploadedFile

if TYPE_CHECKING:
    from bot.emulator.core import Emulator

Handler = Callable[["Emulator", JSON], Any]
METHODS: dict[str, tuple[str, Handler]] = {}  # lower-case name -> (Bot API name, handler)

_COMMAND = re.compile(r"^[a-z0-9_]{1,32}$")


def method(name: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        METHODS[name.lower()] = (name, handler)
        return handler

    return register


# --- parameters --------------------------------------------------------------------------------


def _required(params: JSON, name: str) -> Any:
    value = params.get(name)
    if value is None or value == "":
        raise ApiError(400, f"Bad Request: parameter {name} is required")
    return value


def _int(params: JSON, name: str, default: int | None = None) -> int:
    if default is not None:
        value = params.get(name)
        value = default if value is None or value == "" else value
    else:
        value = _required(params, name)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ApiError(400, f"Bad Request: {name} must be an integer") from None


def _chat(emu: Emulator, params: JSON) -> ChatState:
    ref = _required(params, "chat_id")
    if isinstance(ref, str) and ref.startswith("@"):
        found = next((s for s in emu.chats.values() if s.chat.get("username") == ref[1:]), None)
        if found is None:
            raise ApiError(400, "Bad Request: chat not found")
        return _reachable(found)
    try:
        chat_id = int(ref)
    except (TypeError, ValueError):
        raise ApiError(400, "Bad Request: chat not found") from None
    state = emu.chats.get(chat_id)
    if state is None and chat_id > 0 and chat_id in emu.users:
        return emu.chat_state(chat_id)  # a private chat with a known user
    if state is None:
        raise ApiError(400, "Bad Request: chat not found")
    return _reachable(state)


def _reachable(state: ChatState) -> ChatState:
    forbidden = state.forbidden()
    if forbidden is not None:
        raise ApiError(403, forbidden)
    return state


def _writable_chat(emu: Emulator, params: JSON) -> ChatState:
    state = _chat(emu, params)
    if state.type == "private" and state.id in emu.blocked:
        raise ApiError(403, "Forbidden: bot was blocked by the user")
    return state


def _group(state: ChatState) -> None:
    if not state.is_group:
        raise ApiError(400, "Bad Request: method is available for supergroup and channel chats only")


def _bot_can(state: ChatState, right: str) -> bool:
    return state.bot_rights is not None and bool(state.bot_rights.get(right))


def _reply_markup(params: JSON) -> JSON | None:
    markup = params.get("reply_markup")
    # Telegram echoes only inline keyboards in the returned Message
    return markup if isinstance(markup, dict) and "inline_keyboard" in markup else None


def _reply_to(state: ChatState, params: JSON) -> JSON | None:
    target = params.get("reply_parameters")
    message_id = target.get("message_id") if isinstance(target, dict) else params.get("reply_to_message_id")
    if message_id is None:
        return None
    stored = state.messages.get(int(message_id))
    if stored is None or stored.deleted:
        allow = isinstance(target, dict) and target.get("allow_sending_without_reply")
        if allow:
            return None
        raise ApiError(400, "Bad Request: message to be replied not found")
    return {k: v for k, v in stored.data.items() if k != "reply_to_message"}


def _bot_message(emu: Emulator, state: ChatState, params: JSON, fields: JSON) -> JSON:
    fields = {"from": emu.bot_user, **fields}
    if params.get("message_thread_id") is not None:
        fields["message_thread_id"] = int(params["message_thread_id"])
    reply = _reply_to(state, params)
    if reply is not None:
        fields["reply_to_message"] = reply
    markup = _reply_markup(params)
    if markup is not None:
        fields["reply_markup"] = markup
    return emu._store(state, fields, from_bot=True)


def _formatted(emu: Emulator, params: JSON, text_key: str, entities_key: str) -> tuple[str, list[JSON]]:
    """The text as Telegram stores it: parse_mode applied, or the entities the bot sent."""
    text, parsed = markup.apply_parse_mode(str(params[text_key]), params.get("parse_mode"), emu.users.get)
    if parsed is None:
        given = params.get(entities_key)
        parsed = list(given) if isinstance(given, list) else []
    return text, parsed


def _stored(state: ChatState, message_id: int, missing: str) -> StoredMessage:
    stored = state.messages.get(message_id)
    if stored is None or stored.deleted:
        raise ApiError(400, f"Bad Request: {missing}")
    return stored


def _member_json(emu: Emulator, state: ChatState, user_id: int) -> JSON:
    user = emu.users.get(user_id)
    if user is None:
        raise ApiError(400, "Bad Request: user not found")
    if user_id == emu.bot_user["id"] and state.is_group:
        if state.bot_rights is None:
            return {"status": "member", "user": user}
        return builders.admin_member_json(user, state.bot_rights)
    if state.type == "private":
        return {"status": "member", "user": user}
    if user_id == state.owner:
        return {"status": "creator", "user": user, "is_anonymous": False}
    if user_id in state.admins:
        return builders.admin_member_json(user, state.admins[user_id])
    if user_id in state.banned:
        return {"status": "kicked", "user": user, "until_date": state.banned[user_id]}
    if user_id in state.restricted:
        permissions, until = state.restricted[user_id]
        return builders.restricted_member_json(user, permissions, until, user_id in state.members)
    if user_id in state.members:
        return {"status": "member", "user": user}
    return {"status": "left", "user": user}


def _moderate(emu: Emulator, params: JSON) -> tuple[ChatState, int]:
    state = _chat(emu, params)
    _group(state)
    user_id = _int(params, "user_id")
    if not _bot_can(state, "can_restrict_members"):
        raise ApiError(400, "Bad Request: not enough rights to restrict/unrestrict chat member")
    if user_id == emu.bot_user["id"]:
        raise ApiError(400, "Bad Request: can't restrict self")
    if user_id == state.owner:
        raise ApiError(400, "Bad Request: can't remove chat owner")
    if user_id in state.admins:
        raise ApiError(400, "Bad Request: user is an administrator of the chat")
    if user_id not in emu.users:
        raise ApiError(400, "Bad Request: user not found")
    return state, user_id


# --- the bot and updates -------------------------------------------------------------------


@method("getMe")
def get_me(emu: Emulator, params: JSON) -> JSON:
    return {
        **emu.bot_user,
        "can_join_groups": True,
        "can_read_all_group_messages": False,
        "supports_inline_queries": False,
        "can_connect_to_business": False,
        "has_main_web_app": False,
    }


@method("getUpdates")
async def get_updates(emu: Emulator, params: JSON) -> list[JSON]:
    if emu.webhook is not None:
        raise ApiError(
            409,
            "Conflict: can't use getUpdates method while webhook is active; "
            "use deleteWebhook to delete the webhook first",
        )
    offset = _int(params, "offset") if params.get("offset") not in (None, "") else None
    limit = max(1, min(100, _int(params, "limit", 100)))
    try:
        timeout = max(0.0, float(params.get("timeout") or 0))
    except (TypeError, ValueError):
        raise ApiError(400, "Bad Request: timeout must be a number") from None
    return await emu._poll(offset, limit, timeout)


@method("setWebhook")
def set_webhook(emu: Emulator, params: JSON) -> bool:
    url = params.get("url") or ""
    emu.webhook = dict(params) if url else None
    if params.get("drop_pending_updates"):
        emu._updates.clear()
    return True


@method("deleteWebhook")
def delete_webhook(emu: Emulator, params: JSON) -> bool:
    emu.webhook = None
    if params.get("drop_pending_updates"):
        emu._updates.clear()
    return True


@method("getWebhookInfo")
def get_webhook_info(emu: Emulator, params: JSON) -> JSON:
    url = emu.webhook.get("url", "") if emu.webhook else ""
    return {"url": url, "has_custom_certificate": False, "pending_update_count": len(emu._updates)}


# --- messages ----------------------------------------------------------------------------------


@method("sendMessage")
def send_message(emu: Emulator, params: JSON) -> JSON:
    state = _writable_chat(emu, params)
    if params.get("text") is None:
        raise ApiError(400, "Bad Request: message text is empty")
    text, entities = _formatted(emu, params, "text", "entities")
    if not text.strip():
        raise ApiError(400, "Bad Request: message text is empty")
    if builders.utf16_len(text) > 4096:
        raise ApiError(400, "Bad Request: message is too long")
    fields: JSON = {"text": text}
    if entities:
        fields["entities"] = entities
    return _bot_message(emu, state, params, fields)


@method("editMessageText")
def edit_message_text(emu: Emulator, params: JSON) -> JSON | bool:
    if params.get("inline_message_id"):
        return True
    state = _chat(emu, params)
    stored = _stored(state, _int(params, "message_id"), "message to edit not found")
    if not stored.from_bot:
        raise ApiError(400, "Bad Request: message can't be edited")
    if params.get("text") is None:
        raise ApiError(400, "Bad Request: text must be non-empty")
    text, entities = _formatted(emu, params, "text", "entities")
    if not text.strip():
        raise ApiError(400, "Bad Request: text must be non-empty")
    keyboard = _reply_markup(params)
    if (
        stored.data.get("text") == text
        and stored.data.get("entities", []) == entities
        and stored.data.get("reply_markup") == keyboard
    ):
        raise ApiError(
            400,
            "Bad Request: message is not modified: specified new message content and reply markup "
            "are exactly the same as a current content and reply markup of the message",
        )
    data = {k: v for k, v in stored.data.items() if k not in ("entities", "reply_markup")}
    data["text"] = text
    if entities:
        data["entities"] = entities
    if keyboard is not None:  # omitting reply_markup removes the keyboard, as on Telegram
        data["reply_markup"] = keyboard
    data["edit_date"] = int(time.time())
    stored.data = data
    return data


@method("editMessageReplyMarkup")
def edit_message_reply_markup(emu: Emulator, params: JSON) -> JSON | bool:
    if params.get("inline_message_id"):
        return True
    state = _chat(emu, params)
    stored = _stored(state, _int(params, "message_id"), "message to edit not found")
    if not stored.from_bot:
        raise ApiError(400, "Bad Request: message can't be edited")
    keyboard = _reply_markup(params)
    if stored.data.get("reply_markup") == keyboard:
        raise ApiError(400, "Bad Request: message is not modified")
    data = {k: v for k, v in stored.data.items() if k != "reply_markup"}
    if keyboard is not None:
        data["reply_markup"] = keyboard
    data["edit_date"] = int(time.time())
    stored.data = data
    return data


def _check_delete(emu: Emulator, state: ChatState, stored: StoredMessage) -> None:
    if state.is_group and not stored.from_bot and not _bot_can(state, "can_delete_messages"):
        raise ApiError(400, "Bad Request: message can't be deleted")


@method("deleteMessage")
def delete_message(emu: Emulator, params: JSON) -> bool:
    state = _chat(emu, params)
    stored = _stored(state, _int(params, "message_id"), "message to delete not found")
    _check_delete(emu, state, stored)
    stored.delete(emu.now)
    return True


@method("deleteMessages")
def delete_messages(emu: Emulator, params: JSON) -> bool:
    state = _chat(emu, params)
    ids = _required(params, "message_ids")
    if not isinstance(ids, list) or not 1 <= len(ids) <= 100:
        raise ApiError(400, "Bad Request: message_ids must be a list of 1-100 identifiers")
    found = [m for m in (state.messages.get(int(i)) for i in ids) if m is not None and not m.deleted]
    if not found:
        raise ApiError(400, "Bad Request: message to delete not found")
    for stored in found:
        _check_delete(emu, state, stored)
    for stored in found:
        stored.delete(emu.now)
    return True


@method("sendDocument")
def send_document(emu: Emulator, params: JSON) -> JSON:
    state = _writable_chat(emu, params)
    document = _required(params, "document")
    if isinstance(document, UploadedFile):
        file_id = f"doc{len(emu.files) + 1}"
        emu.files[file_id] = document
        doc = builders.document_json(file_id, document.filename, document.content_type, len(document.content))
    elif isinstance(document, str) and document in emu.files:
        upload = emu.files[document]
        doc = builders.document_json(document, upload.filename, upload.content_type, len(upload.content))
    else:
        doc = builders.document_json(str(document), None, None, 0)
    fields: JSON = {"document": doc}
    if params.get("caption"):
        caption, entities = _formatted(emu, params, "caption", "caption_entities")
        if builders.utf16_len(caption) > 1024:
            raise ApiError(400, "Bad Request: message caption is too long")
        fields["caption"] = caption
        if entities:
            fields["caption_entities"] = entities
    return _bot_message(emu, state, params, fields)


@method("getFile")
def get_file(emu: Emulator, params: JSON) -> JSON:
    file_id = str(_required(params, "file_id"))
    upload = emu.files.get(file_id)
    if upload is None:
        raise ApiError(400, "Bad Request: invalid file_id")
    # served back at /file/bot<TOKEN>/<file_path>
    return {
        "file_id": file_id,
        "file_unique_id": f"u{file_id}",
        "file_size": len(upload.content),
        "file_path": f"documents/{file_id}",
    }


# --- members ------------------------------------------------------------------------------


@method("restrictChatMember")
def restrict_chat_member(emu: Emulator, params: JSON) -> bool:
    state, user_id = _moderate(emu, params)
    permissions = _required(params, "permissions")
    if not isinstance(permissions, dict):
        raise ApiError(400, "Bad Request: can't parse permissions JSON object")
    until = _int(params, "until_date", 0)
    if all(
        permissions.get(p) for p in builders.PERMISSIONS if p not in ("can_edit_tag", "can_react_to_messages")
    ):
        state.restricted.pop(user_id, None)
    else:
        state.restricted[user_id] = (dict(permissions), until)
    return True


@method("banChatMember")
def ban_chat_member(emu: Emulator, params: JSON) -> bool:
    state, user_id = _moderate(emu, params)
    state.banned[user_id] = _int(params, "until_date", 0)
    state.members.discard(user_id)
    state.restricted.pop(user_id, None)
    if params.get("revoke_messages"):
        for stored in state.messages.values():
            if stored.data.get("from", {}).get("id") == user_id:
                stored.delete(emu.now)
    return True


@method("unbanChatMember")
def unban_chat_member(emu: Emulator, params: JSON) -> bool:
    state, user_id = _moderate(emu, params)
    if user_id in state.banned:
        del state.banned[user_id]
    elif not params.get("only_if_banned"):
        state.members.discard(user_id)  # Telegram removes a member "unbanned" without only_if_banned
    return True


@method("getChatMember")
def get_chat_member(emu: Emulator, params: JSON) -> JSON:
    state = _chat(emu, params)
    return _member_json(emu, state, _int(params, "user_id"))


@method("getChatAdministrators")
def get_chat_administrators(emu: Emulator, params: JSON) -> list[JSON]:
    state = _chat(emu, params)
    if not state.is_group:
        raise ApiError(400, "Bad Request: there are no administrators in the private chat")
    ids = ([state.owner] if state.owner is not None else []) + list(state.admins)
    if state.bot_rights is not None:
        ids.append(int(emu.bot_user["id"]))
    return [_member_json(emu, state, user_id) for user_id in ids]


@method("getChatMemberCount")
def get_chat_member_count(emu: Emulator, params: JSON) -> int:
    state = _chat(emu, params)
    people = set(state.members) | set(state.admins) | ({state.owner} if state.owner else set())
    return len(people) + (1 if state.is_group else 0)


@method("getChat")
def get_chat(emu: Emulator, params: JSON) -> JSON:
    state = _chat(emu, params)
    return {
        **state.chat,
        "accent_color_id": 0,
        "max_reaction_count": 11,
        "accepted_gift_types": {
            "unlimited_gifts": False,
            "limited_gifts": False,
            "unique_gifts": False,
            "premium_subscription": False,
            "gifts_from_channels": False,
        },
    }


@method("leaveChat")
def leave_chat(emu: Emulator, params: JSON) -> bool:
    state = _chat(emu, params)
    state.bot_rights = None
    state.bot_status = "left"
    return True


# --- commands and buttons ------------------------------------------------------------------


def _scope_key(params: JSON) -> tuple[str, str]:
    scope = params.get("scope") or {"type": "default"}
    if not isinstance(scope, dict):
        raise ApiError(400, "Bad Request: can't parse BotCommandScope JSON object")
    return json.dumps(scope, sort_keys=True), str(params.get("language_code") or "")


@method("setMyCommands")
def set_my_commands(emu: Emulator, params: JSON) -> bool:
    commands = _required(params, "commands")
    if not isinstance(commands, list) or len(commands) > 100:
        raise ApiError(400, "Bad Request: can't parse commands JSON array")
    for command in commands:
        name = command.get("command") if isinstance(command, dict) else None
        description = command.get("description") if isinstance(command, dict) else None
        if not isinstance(name, str) or not _COMMAND.match(name):
            raise ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
        if not isinstance(description, str) or not 1 <= len(description) <= 256:
            raise ApiError(400, "Bad Request: BOT_COMMAND_DESCRIPTION_INVALID")
    emu.my_commands[_scope_key(params)] = [dict(c) for c in commands]
    return True


@method("getMyCommands")
def get_my_commands(emu: Emulator, params: JSON) -> list[JSON]:
    return emu.my_commands.get(_scope_key(params), [])


@method("deleteMyCommands")
def delete_my_commands(emu: Emulator, params: JSON) -> bool:
    emu.my_commands.pop(_scope_key(params), None)
    return True


@method("answerCallbackQuery")
def answer_callback_query(emu: Emulator, params: JSON) -> bool:
    query_id = str(_required(params, "callback_query_id"))
    if query_id not in emu._open_callbacks:
        raise ApiError(
            400, "Bad Request: query is too old and response timeout expired or query ID is invalid"
        )
    emu._open_callbacks.discard(query_id)
    emu.callback_answers[query_id] = dict(params)
    return True
