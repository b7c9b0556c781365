"""The line rules of a JSONL training file, checked the same way at upload and in the worker.

A file is UTF-8 (one BOM allowed at its start), split on `\\n`; a line holds one JSON object
(standard JSON: `NaN` and `Infinity` are refused, as OpenAI refuses them) of at most
`MAX_LINE_BYTES` bytes and `MAX_DEPTH` levels of nesting; blank lines are skipped but keep
their number; a file holds at most `MAX_EXAMPLES` objects. Every violation is a `LineError`
whose message starts with `line N: ` (1-based). The upload streams bytes through
`JsonlStream`; the worker reads a local file with `read_jsonl`; both go through
`JsonlLines.take`, so a line one accepts the other accepts. What each object must look like
for a training method is `tuneforge.data_formats`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MAX_LINE_BYTES = 8 * 1024 * 1024
MAX_DEPTH = 64  # objects/arrays inside one another; examples (even tool schemas) stay far below
MAX_EXAMPLES = 1_000_000  # non-blank lines; every example is held in the worker's memory
MIN_TRAINING_EXAMPLES = 10  # OpenAI's minimum for a training file (a validation file needs 1)

_BOM = b"\xef\xbb\xbf"
_JSON_SPACE = " \t\r\n"


class LineError(ValueError):
    """One line of a file breaks a rule; `message` is `line {line}: {reason}`."""

    def __init__(self, line: int, reason: str) -> None:
        self.line = line
        self.reason = reason
        self.message = f"line {line}: {reason}"
        super().__init__(self.message)


def json_type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "object", list: "array", str: "string", bool: "boolean"}.get(
        type(value), "number"
    )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# One decoder for every line: `json.loads` with a keyword builds a new one per call (slow).
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def deeper_than(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether `value` (decoded JSON) has containers nested more than `limit` deep (the API's
    JSON bodies are held to the same limit). Iterative, so hostile input cannot exhaust the
    stack."""
    stack: list[tuple[Any, int]] = [(value, 1)] if isinstance(value, dict | list) else []
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


def too_long(line: int) -> LineError:
    return LineError(line, f"line is longer than {MAX_LINE_BYTES} bytes")


def parse_line(raw: bytes, line: int) -> dict[str, Any] | None:
    """The object on line number `line` (`raw` without its `\\n`), or None for a blank line."""
    if len(raw) > MAX_LINE_BYTES:
        raise too_long(line)
    if line == 1 and raw.startswith(_BOM):
        raw = raw[len(_BOM):]
    try:
        text = raw.decode("utf-8").strip(_JSON_SPACE)
    except UnicodeDecodeError as exc:
        raise LineError(line, f"not valid UTF-8 (byte {exc.start} of the line)") from None
    if not text:
        return None
    if text.startswith("\ufeff"):
        raise LineError(line, "invalid JSON: a byte order mark is only allowed at the start of "
                        "the file")
    try:
        value = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise LineError(line, f"invalid JSON: {exc.msg} (column {exc.colno})") from None
    except RecursionError:
        raise LineError(line, f"JSON is nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # NaN, Infinity
        raise LineError(line, f"invalid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise LineError(line, f"each line must be a JSON object, got {json_type_name(value)}")
    # Fewer opening brackets than the limit (counted in C) cannot nest deeper than it.
    if raw.count(b"{") + raw.count(b"[") > MAX_DEPTH and deeper_than(value):
        raise LineError(line, f"JSON is nested deeper than {MAX_DEPTH} levels")
    return value


class JsonlLines:
    """Line numbering and the per-file limits: `take` parses the next line."""

    def __init__(self) -> None:
        self.lines = 0  # lines taken, blank ones included
        self.examples = 0  # objects found

    def take(self, raw: bytes) -> dict[str, Any] | None:
        self.lines += 1
        value = parse_line(raw, self.lines)
        if value is not None:
            self.examples += 1
            if self.examples > MAX_EXAMPLES:
                raise LineError(self.lines, f"the file has more than {MAX_EXAMPLES} examples")
        return value


class JsonlStream(JsonlLines):
    """Checks a file whose bytes arrive in chunks (an upload): `feed` each chunk, then
    `finish`. Memory stays bounded: an unfinished line longer than the limit fails at once."""

    def __init__(self) -> None:
        super().__init__()
        self._pending = bytearray()

    def feed(self, chunk: bytes) -> None:
        self._pending += chunk
        start = 0
        while (end := self._pending.find(b"\n", start)) != -1:
            self.take(bytes(self._pending[start:end]))
            start = end + 1
        del self._pending[:start]
        if len(self._pending) > MAX_LINE_BYTES:
            raise too_long(self.lines + 1)

    def finish(self) -> None:
        if self._pending:
            self.take(bytes(self._pending))
            self._pending.clear()


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """`(line number, object)` for each non-blank line of a local file, reading at most
    `MAX_LINE_BYTES` + 1 bytes at a time."""
    lines = JsonlLines()
    with open(path, "rb") as f:
        while raw := f.readline(MAX_LINE_BYTES + 1):
            # A line without its `\n` is the last one, or longer than the limit (`take` says so).
            value = lines.take(raw[:-1] if raw.endswith(b"\n") else raw)
            if value is not None:
                yield lines.lines, value
