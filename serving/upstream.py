"""A lean HTTP/1.1 client for the proxy's hot path (requests to vLLM replicas).

httpx costs about a millisecond per request more than the proxy can spend, so forwarded
inference requests go through this: pooled keep-alive connections per replica, the request
written in one go, and the response parsed by httptools (the C parser uvicorn uses), with its
body handed over as it arrives (chunked transfer decoding included). Control calls (load,
unload, list) still use httpx.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httptools

_READ = 65536
_IDLE_SECONDS = 4.0  # uvicorn (vLLM's server) closes idle keep-alive connections after 5 s


class UpstreamError(Exception):
    """The replica could not be reached, or closed the connection before answering."""


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = time.monotonic()

    def usable(self) -> bool:
        return (not self.writer.is_closing() and not self.reader.at_eof()
                and time.monotonic() - self.idle_since < _IDLE_SECONDS)

    def close(self) -> None:
        self.writer.close()


class UpstreamResponse:
    def __init__(self, pool: UpstreamPool, key: tuple[str, int], connection: _Connection,
                 timeout: float) -> None:
        self._pool = pool
        self._key = key
        self._connection = connection
        self._timeout = timeout
        self._parser = httptools.HttpResponseParser(self)
        self._body: deque[bytes] = deque()
        self._headers_done = False
        self._complete = False
        self._done = False
        self.headers: dict[str, str] = {}
        self.status = 0

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._headers_done = True
        self.status = self._parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._complete = True

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "application/json").split(";")[0].strip()

    async def _feed(self) -> bool:
        """Read once and parse; False at end of stream."""
        async with asyncio.timeout(self._timeout):
            data = await self._connection.reader.read(_READ)
        if not data:
            return False
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            raise UpstreamError(f"malformed response: {exc}") from exc
        return True

    async def start(self) -> bool:
        """Read until the status line and headers are in; False if the connection closed
        before any of the response arrived."""
        received = False
        while not self._headers_done:
            if not await self._feed():
                if received:
                    raise UpstreamError("connection closed in the middle of the headers")
                return False
            received = True
        return True

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives."""
        while True:
            if self._body:  # everything that arrived together, as one piece
                data = b"".join(self._body) if len(self._body) > 1 else self._body[0]
                self._body.clear()
                yield data
            if self._complete:
                break
            if not await self._feed():
                raise UpstreamError("connection closed in the middle of the body")
        self.release()

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])

    def release(self) -> None:
        """Back to the pool if the whole answer was read and the server keeps the
        connection open; otherwise closed (which tells vLLM to abort a running request)."""
        if self._done:
            return
        self._done = True
        if self._complete and self._parser.should_keep_alive():
            self._pool._put(self._key, self._connection)
        else:
            self._connection.close()


class UpstreamPool:
    def __init__(self, *, timeout: float = 600.0, connect_timeout: float = 5.0,
                 max_idle: int = 64) -> None:
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_idle = max_idle
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._parsed: dict[str, tuple[str, int]] = {}

    def _address(self, base_url: str) -> tuple[str, int]:
        found = self._parsed.get(base_url)
        if found is None:
            parts = urlsplit(base_url)
            if parts.scheme != "http" or not parts.hostname:
                raise UpstreamError(f"unsupported upstream URL {base_url!r} (http only)")
            found = self._parsed[base_url] = (parts.hostname, parts.port or 80)
        return found

    def _put(self, key: tuple[str, int], connection: _Connection) -> None:
        idle = self._idle.setdefault(key, [])
        if len(idle) >= self.max_idle:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        idle.append(connection)

    async def _connect(self, key: tuple[str, int]) -> tuple[_Connection, bool]:
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            if connection.usable():
                return connection, True
            connection.close()
        try:
            async with asyncio.timeout(self.connect_timeout):
                reader, writer = await asyncio.open_connection(*key, limit=2 * _READ)
        except (OSError, TimeoutError) as exc:
            raise UpstreamError(f"cannot connect to {key[0]}:{key[1]}: {exc!r}") from exc
        return _Connection(reader, writer), False

    async def post(self, base_url: str, path: str, body: bytes, *,
                   accept: str = "application/json", api_key: str = "") -> UpstreamResponse:
        key = self._address(base_url)
        auth = f"Authorization: Bearer {api_key}\r\n" if api_key else ""
        head = (f"POST {path} HTTP/1.1\r\nHost: {key[0]}:{key[1]}\r\n{auth}"
                f"Content-Type: application/json\r\nAccept: {accept}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1")
        for _ in range(3):
            connection, reused = await self._connect(key)
            response = UpstreamResponse(self, key, connection, self.timeout)
            try:
                connection.writer.write(head + body)
                await connection.writer.drain()
                if await response.start():
                    return response
            except (OSError, TimeoutError) as exc:
                connection.close()
                if reused:
                    continue  # a stale keep-alive connection: try a fresh one
                raise UpstreamError(f"{key[0]}:{key[1]}: {exc!r}") from exc
            except BaseException:
                connection.close()
                raise
            connection.close()
            if not reused:
                raise UpstreamError(f"{key[0]}:{key[1]} closed the connection without answering")
        raise UpstreamError(f"{key[0]}:{key[1]}: no usable connection")

    def close(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()
