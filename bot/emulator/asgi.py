"""HTTP for the emulator: a plain ASGI app at /bot<TOKEN>/<method> and /file/bot<TOKEN>/<path>.

Accepts query strings, form-encoded, JSON and multipart bodies, the way PTB and curl send them.
`route()` is shared with the built-in loopback server (server.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from bot.emulator.state import JSON, UploadedFile

if TYPE_CHECKING:
    from bot.emulator.core import Emulator

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

# Parameters that are strings on the Bot API: never JSON-decode them ("123" stays a text).
STRING_PARAMS = frozenset(
    {
        "text",
        "caption",
        "parse_mode",
        "callback_query_id",
        "inline_message_id",
        "url",
        "secret_token",
        "ip_address",
        "language_code",
        "custom_title",
        "business_connection_id",
        "message_effect_id",
        "title",
        "description",
        "short_description",
        "name",
        "document",
        "photo",
        "video",
        "file_id",
        "query",
    }
)
_JSON_START = frozenset('{["-0123456789tfn')
_DISPOSITION_PARAM = re.compile(r';\s*([\w*-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;]*))')
_HTML5_ESCAPE = re.compile(r"%(0[0-9A-Fa-f]|1[0-9A-Fa-f]|22)")


def form_value(name: str, value: str) -> Any:
    """PTB JSON-encodes every non-string value: decode those, keep real strings as they are."""
    if name in STRING_PARAMS or not value or value[0] not in _JSON_START:
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def _unescape_filename(value: str) -> str:
    # httpx escapes quotes and control characters HTML5-style (%22, %0A) and doubles backslashes
    return _HTML5_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), value).replace("\\\\", "\\")


def parse_multipart(body: bytes, content_type: str) -> JSON:
    """Fields (JSON-decoded like form values) and files (UploadedFile) of a multipart/form-data body."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if match is None:
        raise ValueError("multipart body without a boundary")
    delimiter = b"--" + match.group(1).encode("latin-1")
    params: JSON = {}
    files: dict[str, UploadedFile] = {}
    for part in body.split(delimiter)[1:]:
        if part.startswith(b"--"):
            break
        if part.startswith(b"\r\n"):
            part = part[2:]
        head, _, data = part.partition(b"\r\n\r\n")
        if data.endswith(b"\r\n"):
            data = data[:-2]
        headers: dict[str, str] = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            key, sep, value = line.partition(":")
            if sep:
                headers[key.strip().lower()] = value.strip()
        disposition = headers.get("content-disposition", "")
        options = {
            m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3).strip())
            for m in _DISPOSITION_PARAM.finditer(disposition)
        }
        name = options.get("name")
        if name is None:
            continue
        if "filename" in options:
            files[name] = UploadedFile(
                field=name,
                filename=_unescape_filename(options["filename"]),
                content=data,
                content_type=headers.get("content-type"),
            )
        else:
            params[name] = form_value(name, data.decode("utf-8"))
    # "attach://name" refers to a file part; a file part named like the parameter is the value itself
    for key, value in list(params.items()):
        if isinstance(value, str) and value.startswith("attach://") and value[9:] in files:
            params[key] = files[value[9:]]
    for name, upload in files.items():
        params.setdefault(name, upload)
    return params


def parse_body(body: bytes, content_type: str) -> JSON:
    """The parameters of one request body, whatever its encoding."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if not body:
        return {}
    if kind == "application/json":
        data = json.loads(body)
        if not isinstance(data, dict):
            raise ValueError("JSON body must be an object")
        return data
    if kind == "multipart/form-data":
        return parse_multipart(body, content_type)
    return {k: form_value(k, v) for k, v in parse_qsl(body.decode("utf-8"), keep_blank_values=True)}


def _encode(status: int, payload: JSON) -> tuple[int, bytes]:
    return status, json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def make_app(emu: Emulator) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """The emulator's ASGI application."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        chunks = []
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)

        path: str = scope["path"]
        content_type = ""
        for key, value in scope.get("headers") or ():
            if key.lower() == b"content-type":
                content_type = value.decode("latin-1")
        work = route(emu, path, scope.get("query_string") or b"", content_type, body)
        if is_long_poll(path):
            answer = await _unless_gone(work, receive)
            if answer is None:
                return
        else:
            answer = await work
        status, content, kind = answer
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", kind), (b"content-length", str(len(content)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": content})

    return app


def is_long_poll(path: str) -> bool:
    """Whether a request may block for long (getUpdates): it should end when its client leaves."""
    return path.lower().endswith("/getupdates")


async def route(
    emu: Emulator, path: str, query: bytes, content_type: str, body: bytes
) -> tuple[int, bytes, bytes]:
    """Answer one HTTP request: (status, body, content type); the ASGI app and the built-in server use it."""
    if path.startswith("/file/bot"):
        status, content = await _file(emu, path)
        return status, content, b"application/octet-stream"
    if path.startswith("/bot") and "/" in path[4:]:
        token, method = path[4:].split("/", 1)
        status, content = await _api(emu, query, content_type, body, token, method)
    else:
        status, content = _encode(404, {"ok": False, "error_code": 404, "description": "Not Found"})
    return status, content, b"application/json"


async def _unless_gone(
    work: Awaitable[tuple[int, bytes, bytes]], receive: Receive
) -> tuple[int, bytes, bytes] | None:
    """Run a long poll, abandoning it if the client disconnects (PTB cancels getUpdates on stop).

    An abandoned poll must not linger: it would mark updates as served that nobody received.
    """
    answer = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(receive())
    try:
        await asyncio.wait((answer, gone), return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # the server is stopping: stop the poll too
        answer.cancel()
        raise
    finally:
        gone.cancel()
    if answer.done():
        return answer.result()
    answer.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await answer
    return None


async def _api(
    emu: Emulator, query: bytes, content_type: str, body: bytes, token: str, method: str
) -> tuple[int, bytes]:
    try:
        params = parse_body(body, content_type)
        if query:  # curl and browsers: GET /bot<TOKEN>/getMe?x=1; the body wins
            for k, v in parse_qsl(query.decode("utf-8")):
                params.setdefault(k, form_value(k, v))
    except (ValueError, UnicodeDecodeError) as exc:
        return _encode(400, {"ok": False, "error_code": 400, "description": f"Bad Request: {exc}"})
    if not method:
        return _encode(400, {"ok": False, "error_code": 400, "description": "Bad Request: no method"})
    return _encode(*await emu.handle(method, params, token=token))


async def _file(emu: Emulator, path: str) -> tuple[int, bytes]:
    # /file/bot<TOKEN>/<file_path>: the bytes of a file the bot uploaded (file_path ends in its id)
    if emu.check_token and not path.startswith(f"/file/bot{emu.token}/"):
        return 401, b""
    file_id = path.rsplit("/", 1)[-1]
    upload = emu.files.get(file_id)
    if upload is None:
        return 404, b""
    return 200, upload.content
