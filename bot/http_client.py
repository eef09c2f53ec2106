"""The Bot API client on aiohttp: a public `telegram.request.BaseRequest` for python-telegram-bot.

Why: PTB's default `HTTPXRequest` spends about 1.2 ms of CPU on one Bot API call (httpx's pure-Python
HTTP/1.1 stack), aiohttp about 0.4 ms (its parser is C). With sequential updates on one core, every
getUpdates, deleteMessages and notice paid that on the event loop.

Behaviour follows `HTTPXRequest`: the same default timeouts, a form-encoded body (multipart when a file
is sent), `TimedOut` for a timeout and `NetworkError` naming the aiohttp error otherwise, proxies from
the environment (HTTPS_PROXY, NO_PROXY…: read once per host), PTB's User-Agent. aiohttp has no write
timeout of its own: a request's body is sent within the call's whole budget (`total`) when one is set.
"""

from __future__ import annotations

import urllib.request
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest, RequestData


def _given(value: Any) -> bool:
    """A timeout the caller set: seconds, or None for no limit."""
    return value is None or isinstance(value, int | float)


class AiohttpRequest(BaseRequest):
    """`HTTPXRequest`'s job on an `aiohttp.ClientSession` (created in `initialize`)."""

    def __init__(
        self,
        connection_pool_size: int = 256,
        *,
        read_timeout: float | None = 5.0,
        write_timeout: float | None = 5.0,
        connect_timeout: float | None = 5.0,
        pool_timeout: float | None = 1.0,
        media_write_timeout: float | None = 20.0,
    ) -> None:
        self._pool_size = connection_pool_size
        self._read_timeout = read_timeout
        self._write_timeout = write_timeout
        self._connect_timeout = connect_timeout
        self._pool_timeout = pool_timeout
        self._media_write_timeout = media_write_timeout
        self._session: aiohttp.ClientSession | None = None
        self._proxies: dict[tuple[str, str], str | None] = {}  # (scheme, host) -> proxy URL or None

    @property
    def read_timeout(self) -> float | None:
        return self._read_timeout

    async def initialize(self) -> None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._pool_size),
                cookie_jar=aiohttp.DummyCookieJar(),  # the Bot API sets no cookies
                headers={"User-Agent": self.USER_AGENT},
                # Not aiohttp's trust_env: it looks proxies and .netrc up in a thread on every call.
                trust_env=False,
            )
            self._proxies.clear()

    async def shutdown(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()

    def _proxy(self, url: str) -> str | None:
        """The proxy for this URL from the environment (HTTPS_PROXY, NO_PROXY…), as httpx reads it;
        looked up once per host."""
        parts = urlsplit(url)
        key = (parts.scheme, parts.hostname or "")
        if key not in self._proxies:
            env = urllib.request.getproxies_environment()
            proxy = env.get(parts.scheme) or env.get("all")
            if proxy and urllib.request.proxy_bypass(key[1]):
                proxy = None
            self._proxies[key] = proxy or None
        return self._proxies[key]

    def _timeout(self, read: Any, write: Any, connect: Any, pool: Any, media: bool) -> aiohttp.ClientTimeout:
        # PTB passes a DefaultValue placeholder (BaseRequest.DEFAULT_NONE) for "not given": our defaults.
        read = read if _given(read) else self._read_timeout
        connect = connect if _given(connect) else self._connect_timeout
        pool = pool if _given(pool) else self._pool_timeout
        if not _given(write):
            write = self._media_write_timeout if media else self._write_timeout
        parts = (read, write, connect, pool)
        return aiohttp.ClientTimeout(
            # connect: waiting for a pooled connection plus making a new one
            connect=None if connect is None or pool is None else connect + pool,
            sock_connect=connect,
            sock_read=read,
            total=None if None in parts else sum(parts),
        )

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: Any = BaseRequest.DEFAULT_NONE,
        write_timeout: Any = BaseRequest.DEFAULT_NONE,
        connect_timeout: Any = BaseRequest.DEFAULT_NONE,
        pool_timeout: Any = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        """See `BaseRequest.do_request`."""
        session = self._session
        if session is None or session.closed:
            raise RuntimeError("This AiohttpRequest is not initialized!")
        files = request_data.multipart_data if request_data else None
        fields = request_data.json_parameters if request_data else None
        data: aiohttp.FormData | dict[str, str] | None = fields
        if files:
            form = aiohttp.FormData()
            for name, value in (fields or {}).items():
                form.add_field(name, value)
            for name, (filename, content, mimetype) in files.items():
                form.add_field(name, content, filename=filename, content_type=mimetype)
            data = form
        timeout = self._timeout(read_timeout, write_timeout, connect_timeout, pool_timeout, bool(files))
        try:
            proxy = self._proxy(url)
            async with session.request(method, url, data=data, timeout=timeout, proxy=proxy) as response:
                return response.status, await response.read()
        except TimeoutError as err:  # aiohttp's timeouts are TimeoutErrors
            raise TimedOut from err
        except aiohttp.ClientError as err:
            # The class name helps when the message is empty (as HTTPXRequest does).
            raise NetworkError(f"aiohttp.{err.__class__.__name__}: {err}") from err
