"""Streaming multipart/form-data: text fields are collected, the file part is handed on as an
async stream of chunks, never buffered whole (python-multipart's push parser does the parsing).
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from python_multipart.multipart import MultipartParser, parse_options_header

from server.errors import invalid

MAX_FIELD_BYTES = 64 * 1024


@dataclass
class _Part:
    name: str = ""
    filename: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


class MultipartReader:
    """Reads `multipart/form-data` from a request stream in order.

    `read_until_file(name)` gathers the text fields that precede the file field and returns
    its filename; `file_chunks()` then yields the file's bytes; `read_rest()` gathers the text
    fields after it.
    """

    def __init__(self, content_type: str | None, stream: AsyncIterator[bytes]) -> None:
        media_type, params = parse_options_header(content_type or "")
        boundary = params.get(b"boundary")
        if media_type != b"multipart/form-data" or not boundary:
            raise invalid("Expected a multipart/form-data body with a boundary.")
        self.fields: dict[str, str] = {}
        self._stream = stream
        self._events: deque[tuple[str, object]] = deque()
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._part = _Part()
        self._parser = MultipartParser(boundary, callbacks={
            "on_part_begin": self._on_part_begin,
            "on_header_field": lambda d, s, e: self._header_field.extend(d[s:e]),
            "on_header_value": lambda d, s, e: self._header_value.extend(d[s:e]),
            "on_header_end": self._on_header_end,
            "on_headers_finished": lambda: self._events.append(("begin", self._part)),
            "on_part_data": lambda d, s, e: self._events.append(("data", bytes(d[s:e]))),
            "on_part_end": lambda: self._events.append(("end", None)),
        })
        self._iterator = self._all_events()

    def _on_part_begin(self) -> None:
        self._part = _Part()

    def _on_header_end(self) -> None:
        name = self._header_field.decode("latin-1").strip().lower()
        value = self._header_value.decode("utf-8", "replace").strip()
        self._part.headers[name] = value
        if name == "content-disposition":
            _, params = parse_options_header(value)
            self._part.name = params.get(b"name", b"").decode("utf-8", "replace")
            raw_filename = params.get(b"filename")
            self._part.filename = raw_filename.decode("utf-8", "replace") if raw_filename else None
        self._header_field.clear()
        self._header_value.clear()

    async def _all_events(self) -> AsyncIterator[tuple[str, object]]:
        async for chunk in self._stream:
            try:
                self._parser.write(chunk)
            except Exception as exc:
                raise invalid(f"Malformed multipart body: {exc}") from exc
            while self._events:
                yield self._events.popleft()
        self._parser.finalize()
        while self._events:
            yield self._events.popleft()

    async def _read_field(self, part: _Part) -> None:
        value = bytearray()
        async for kind, payload in self._iterator:
            if kind == "end":
                break
            value += payload  # type: ignore[operator]
            if len(value) > MAX_FIELD_BYTES:
                raise invalid(f"Form field '{part.name}' is too long.", param=part.name)
        self.fields[part.name] = value.decode("utf-8", "replace")

    async def read_until_file(self, file_field: str) -> str | None:
        """Collect text fields until the part named `file_field` begins; its filename, or
        raises if the body has no such part."""
        async for kind, payload in self._iterator:
            if kind != "begin":
                continue
            part = payload
            assert isinstance(part, _Part)
            if part.name == file_field:
                return part.filename or ""
            await self._read_field(part)
        raise invalid(f"The multipart body has no '{file_field}' part.", param=file_field)

    async def file_chunks(self) -> AsyncIterator[bytes]:
        async for kind, payload in self._iterator:
            if kind == "end":
                return
            yield payload  # type: ignore[misc]
        raise invalid("The multipart body ended inside the file part.")

    async def read_rest(self) -> dict[str, str]:
        async for kind, payload in self._iterator:
            if kind == "begin":
                await self._read_field(payload)  # type: ignore[arg-type]
        return self.fields
