"""Streaming, bounded JSONL reading: one line at a time, a cap on line length and nesting."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trainer.errors import DataError

DEFAULT_MAX_LINE_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_DEPTH = 64


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Iteratively check the nesting depth (no recursion on hostile input)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            if depth > limit:
                return True
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            if depth > limit:
                return True
            stack.extend((v, depth + 1) for v in node)
    return False


def iter_jsonl(
    path: Path,
    *,
    code: str,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> Iterator[tuple[int, Any]]:
    """Yield `(line_number, value)` for each non-blank line; raise `DataError(code, ...)` on
    a line that is too long, not UTF-8, not JSON, or nested too deeply. Memory stays bounded
    by `max_line_bytes`: a longer line is rejected after reading at most that many bytes."""
    with open(path, "rb") as f:
        lineno = 0
        while True:
            raw = f.readline(max_line_bytes + 1)
            if not raw:
                return
            lineno += 1
            if len(raw) > max_line_bytes and not (
                len(raw) == max_line_bytes + 1 and raw.endswith(b"\n")
            ):
                raise DataError(
                    code,
                    f"line {lineno}: line is longer than {max_line_bytes} bytes",
                    lineno,
                )
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(
                    code,
                    f"line {lineno}: not valid UTF-8 (byte {exc.start} of the line)",
                    lineno,
                ) from None
            text = text.strip()
            if not text:
                continue
            try:
                value = json.loads(text, parse_constant=_reject_constant)
            except json.JSONDecodeError as exc:
                raise DataError(
                    code, f"line {lineno}: invalid JSON: {exc.msg} (column {exc.colno})", lineno
                ) from None
            except RecursionError:
                raise DataError(code, f"line {lineno}: JSON is nested too deeply", lineno) from None
            except ValueError as exc:
                raise DataError(code, f"line {lineno}: invalid JSON: {exc}", lineno) from None
            if _depth_exceeds(value, max_depth):
                raise DataError(
                    code,
                    f"line {lineno}: JSON is nested deeper than {max_depth} levels",
                    lineno,
                )
            yield lineno, value
