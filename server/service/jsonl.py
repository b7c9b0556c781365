"""Streaming JSONL check: every line one JSON object; errors name the line number."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from server.errors import invalid

MAX_LINE_BYTES = 16 * 1024 * 1024


class JsonlChecker:
    def __init__(self, param: str = "file", max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self.param = param
        self.max_line_bytes = max_line_bytes
        self.lines = 0
        self.objects = 0
        self._pending = bytearray()

    def feed(self, chunk: bytes) -> None:
        self._pending += chunk
        start = 0
        while (end := self._pending.find(b"\n", start)) != -1:
            self._check_line(bytes(self._pending[start:end]))
            start = end + 1
        del self._pending[:start]
        if len(self._pending) > self.max_line_bytes:
            self._fail(self.lines + 1, f"line is longer than {self.max_line_bytes} bytes")

    def finish(self) -> None:
        if self._pending.strip():
            self._check_line(bytes(self._pending))
        self._pending.clear()
        if self.objects == 0:
            raise invalid("The file is empty: expected JSON Lines, one object per line.",
                          param=self.param, code="invalid_file_format")

    def _check_line(self, line: bytes) -> None:
        number = self.lines + 1
        self.lines = number
        if not line.strip():  # blank lines are skipped but still counted for line numbers
            return
        try:
            value = json.loads(line)
        except UnicodeDecodeError:
            self._fail(number, "not valid UTF-8")
        except json.JSONDecodeError as exc:
            self._fail(number, f"invalid JSON ({exc.msg} at column {exc.colno})")
        except RecursionError:
            self._fail(number, "JSON nested too deeply")
        if not isinstance(value, dict):
            self._fail(number, f"expected a JSON object, got {type(value).__name__}")
        self.objects += 1

    def _fail(self, line: int, reason: str) -> None:
        raise invalid(f"Invalid file format for fine-tuning: line {line}: {reason}",
                      param=self.param, code="invalid_file_format")


async def checked(chunks: AsyncIterator[bytes], checker: JsonlChecker) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        checker.feed(chunk)
        yield chunk
    checker.finish()
