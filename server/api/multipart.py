"""Streaming multipart/form-data: text fields are collected, the file part is handed on as an
async stream of chunks, never buffered whole (python-multipart's push parser does the parsing).

Part headers are read as UTF-8, which is what browsers (HTML5) and the openai SDK (httpx) send;
`filename*=UTF-8''…` (RFC 5987/6266; RFC 7578 discourages it, some clients send it anyway)
wins over `filename`. A filename with control characters is refused, and so is a second part
with the file's field name (it would otherwise be silently dropped).
"""

from __future__ import annotations

import re
import unicodedata
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

from python_multipart.multipart import MultipartParser, parse_options_header

from tuneforge.errors import ApiError, invalid

MAX_FIELD_BYTES = 64 * 1024
MAX_HEADER_BYTES = 16 * 1024
MAX_FIELDS = 64


def _utf8(raw: str) -> str:
    """A parameter value held as Latin-1 code points (one per byte) back to its text: UTF-8,
    or Latin-1 when the bytes are not UTF-8 (older clients)."""
    data = raw.encode("latin-1")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def _split_params(value: str) -> list[str]:
    """`form-data; name="a;b"; filename=x` → segments, honouring quoted strings."""
    segments: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in value:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ";" and not quoted:
            segments.append("".join(current))
            current = []
            continue
        current.append(char)
    segments.append("".join(current))
    return [s.strip() for s in segments]


def _extended_value(value: str) -> str:
    """RFC 5987 `charset'language'percent-encoded` → text."""
    charset, quote1, rest = value.partition("'")
    _language, quote2, encoded = rest.partition("'")
    if not quote1 or not quote2:
        raise ValueError("expected charset'language'value")
    if charset.lower() not in ("utf-8", "iso-8859-1"):
        raise ValueError(f"unsupported charset {charset!r}")
    return unquote_to_bytes(encoded.encode("latin-1")).decode(charset.lower())


def parse_disposition(value: str) -> dict[str, str]:
    """Parameters of a Content-Disposition value whose bytes are held as Latin-1 code points.

    Raises ValueError for a malformed `key*=` value."""
    params: dict[str, str] = {}
    extended: dict[str, str] = {}
    for segment in _split_params(value)[1:]:
        key, eq, val = segment.partition("=")
        key = key.strip().lower()
        if not eq or not key:
            continue
        val = val.strip()
        if key.endswith("*"):
            extended[key[:-1]] = _extended_value(val)
            continue
        if len(val) >= 2 and val[0] == val[-1] == '"':
            val = re.sub(r"\\(.)", r"\1", val[1:-1], flags=re.DOTALL)
        params[key] = _utf8(val)
    params.update(extended)
    return params


def _check_filename(filename: str, param: str) -> str:
    if any(unicodedata.category(c) == "Cc" for c in filename):
        raise invalid("The filename contains control characters (such as NUL or a line "
                      "break); rename the file.", param=param, code="invalid_filename")
    # Old browsers send the whole client path: keep its last component.
    if filename[1:3] == ":\\" or filename.startswith("\\\\"):
        filename = filename.rsplit("\\", 1)[-1]
    return filename


@dataclass
class _Part:
    name: str = ""
    filename: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # A malformed Content-Disposition, reported when the part is the file part.
    error: str | None = None


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
            "on_header_field": lambda d, s, e: self._header_bytes(self._header_field, d[s:e]),
            "on_header_value": lambda d, s, e: self._header_bytes(self._header_value, d[s:e]),
            "on_header_end": self._on_header_end,
            "on_headers_finished": lambda: self._events.append(("begin", self._part)),
            "on_part_data": lambda d, s, e: self._events.append(("data", bytes(d[s:e]))),
            "on_part_end": lambda: self._events.append(("end", None)),
        })
        self._file_field: str | None = None
        self._field_count = 0
        self._iterator = self._all_events()

    @staticmethod
    def _header_bytes(buffer: bytearray, data: bytes) -> None:
        buffer.extend(data)
        if len(buffer) > MAX_HEADER_BYTES:
            raise invalid("A multipart part header is too long.")

    def _on_part_begin(self) -> None:
        self._part = _Part()

    def _on_header_end(self) -> None:
        # Latin-1 keeps every byte as one code point; parameters are decoded as UTF-8 below.
        name = self._header_field.decode("latin-1").strip().lower()
        value = self._header_value.decode("latin-1").strip()
        self._part.headers[name] = _utf8(value)
        if name == "content-disposition":
            try:
                params = parse_disposition(value)
            except (ValueError, UnicodeDecodeError) as exc:
                self._part.error = f"Malformed Content-Disposition header: {exc}."
                params = {}
            self._part.name = params.get("name", "")
            self._part.filename = params.get("filename")
        self._header_field.clear()
        self._header_value.clear()

    async def _all_events(self) -> AsyncIterator[tuple[str, object]]:
        async for chunk in self._stream:
            try:
                self._parser.write(chunk)
            except ApiError:
                raise
            except Exception as exc:
                raise invalid(f"Malformed multipart body: {exc}") from exc
            while self._events:
                yield self._events.popleft()
        try:
            self._parser.finalize()
        except Exception as exc:
            raise invalid(f"Malformed multipart body: {exc}") from exc
        while self._events:
            yield self._events.popleft()

    async def _read_field(self, part: _Part) -> None:
        if part.name == self._file_field:
            raise invalid(f"The multipart body has more than one '{part.name}' part; send one "
                          "file per request.", param=part.name, code="duplicate_file")
        self._field_count += 1
        if self._field_count > MAX_FIELDS:
            raise invalid(f"The multipart body has more than {MAX_FIELDS} fields.")
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
                self._file_field = file_field
                if part.error:
                    raise invalid(part.error, param=file_field)
                return _check_filename(part.filename or "", file_field)
            await self._read_field(part)
        raise invalid(f"The multipart body has no '{file_field}' part.", param=file_field)

    async def file_chunks(self) -> AsyncIterator[bytes]:
        """The file part's bytes; the parts after it are read (into `fields`) before the
        stream ends, so that a second file part fails the upload instead of being dropped."""
        async for kind, payload in self._iterator:
            if kind == "end":
                await self.read_rest()
                return
            yield payload  # type: ignore[misc]
        raise invalid("The multipart body ended inside the file part.")

    async def read_rest(self) -> dict[str, str]:
        async for kind, payload in self._iterator:
            if kind == "begin":
                await self._read_field(payload)  # type: ignore[arg-type]
        return self.fields
