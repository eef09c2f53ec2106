"""A small HTTP/1.1 server for the emulator on asyncio.Protocol: keep-alive, Content-Length and
chunked bodies, one request at a time per connection (httpx never pipelines).

Why not uvicorn: the end-to-end benchmark pushes hundreds of updates a second through the emulator
on a 2-core machine shared with the bot; uvicorn with h11 spends ~0.3 ms of Python per request
where this spends a fraction of that. uvicorn stays available: `emu.serve(server="uvicorn")`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from http import HTTPStatus
from typing import TYPE_CHECKING
from urllib.parse import unquote

from bot.emulator.asgi import route

if TYPE_CHECKING:
    from bot.emulator.core import Emulator

log = logging.getLogger(__name__)

_MAX_HEAD = 64 * 1024
_REASONS = {s.value: s.phrase for s in HTTPStatus}


class _Request:
    __slots__ = ("body", "content_type", "keep_alive", "path", "query")

    def __init__(self, path: str, query: bytes, content_type: str, body: bytes, keep_alive: bool) -> None:
        self.path, self.query, self.content_type = path, query, content_type
        self.body, self.keep_alive = body, keep_alive


class _Connection(asyncio.Protocol):
    def __init__(self, emu: Emulator, connections: set[_Connection]) -> None:
        self.emu = emu
        self.connections = connections
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.task: asyncio.Task[None] | None = None  # the request being answered

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.connections.add(self)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.task is None:
            self._next()

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self.transport = None
        if self.task is not None:
            self.task.cancel()  # a long poll whose client left must not linger

    # --- requests ---

    def _next(self) -> None:
        try:
            request = self._parse()
        except ValueError as exc:
            body = f'{{"ok":false,"error_code":400,"description":"Bad Request: {exc}"}}'.encode()
            self._write(400, body, keep_alive=False)
            return
        if request is not None:
            self.task = asyncio.get_running_loop().create_task(self._answer(request))

    def _parse(self) -> _Request | None:
        """One complete request from the buffer (consumed), or None until more data arrives."""
        buffer = self.buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > _MAX_HEAD:
                raise ValueError("request head too large")
            return None
        lines = bytes(buffer[:end]).decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            raise ValueError("malformed request line")
        target, version = parts[1], parts[2]
        headers: dict[str, str] = {}
        for line in lines[1:]:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        start = end + 4
        if "chunked" in headers.get("transfer-encoding", "").lower():
            decoded = _dechunk(buffer, start)
            if decoded is None:
                return None
            body, consumed = decoded
        else:
            length = int(headers.get("content-length") or 0)
            if len(buffer) - start < length:
                return None
            body, consumed = bytes(buffer[start : start + length]), start + length
        del buffer[:consumed]
        path, _, query = target.partition("?")
        connection = headers.get("connection", "").lower()
        keep_alive = connection != "close" and (version == "HTTP/1.1" or connection == "keep-alive")
        return _Request(
            unquote(path), query.encode("latin-1"), headers.get("content-type", ""), body, keep_alive
        )

    async def _answer(self, request: _Request) -> None:
        try:
            status, content, kind = await route(
                self.emu, request.path, request.query, request.content_type, request.body
            )
        except asyncio.CancelledError:
            return  # the client left (or the server stops): nobody to answer
        except Exception as exc:  # route() answers API errors itself; this is a bug in the emulator
            log.exception("emulator: HTTP request failed")
            self.emu.internal_errors.append(exc)
            status, content, kind = 500, b'{"ok":false,"error_code":500,"description":"emulator bug"}', b""
        finally:
            self.task = None
        self._write(status, content, request.keep_alive, kind or b"application/json")
        if self.transport is not None and self.buffer:
            self._next()

    def _write(
        self, status: int, content: bytes, keep_alive: bool, kind: bytes = b"application/json"
    ) -> None:
        transport = self.transport
        if transport is None:
            return
        reason = _REASONS.get(status, "Unknown")
        close = b"" if keep_alive else b"connection: close\r\n"
        head = b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n%s\r\n" % (
            status,
            reason.encode("latin-1"),
            kind,
            len(content),
            close,
        )
        transport.write(head + content)
        if not keep_alive:
            transport.close()


def _dechunk(buffer: bytearray, start: int) -> tuple[bytes, int] | None:
    """(body, bytes consumed) of a complete chunked body at `start`, or None if incomplete."""
    body = bytearray()
    at = start
    while True:
        line_end = buffer.find(b"\r\n", at)
        if line_end < 0:
            return None
        size = int(bytes(buffer[at:line_end]).split(b";", 1)[0], 16)
        at = line_end + 2
        if size == 0:
            trailer_end = buffer.find(b"\r\n", at)  # no trailers expected; skip any up to the blank line
            while trailer_end > at:
                at = trailer_end + 2
                trailer_end = buffer.find(b"\r\n", at)
            if trailer_end < 0:
                return None
            return bytes(body), trailer_end + 2
        if len(buffer) < at + size + 2:
            return None
        body += buffer[at : at + size]
        at += size + 2


class BuiltinServer:
    """The emulator on a listening socket; start() then close()."""

    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.connections: set[_Connection] = set()
        self.server: asyncio.Server | None = None

    async def start(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _Connection(self.emu, self.connections), sock=sock)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for connection in list(self.connections):
            if connection.task is not None:
                connection.task.cancel()
            if connection.transport is not None:
                connection.transport.close()
        if self.server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)
        await asyncio.sleep(0)  # let the cancelled answers finish
