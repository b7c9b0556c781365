"""JSON request bodies nested deeper than any real request are refused with a 400.

Litestar decodes `data` bodies with msgspec, which raises `RecursionError` (not a decode
error) near Python's recursion limit, and shallower structures can still exhaust the stack
further on (validation, storage, proxying). `LimitedRequest.json()` decodes as Litestar does,
then refuses a body nested more than `MAX_JSON_DEPTH` levels.
"""

from __future__ import annotations

from typing import Any

from litestar import Request

from tuneforge.errors import ApiError, invalid
from tuneforge.jsonl import MAX_DEPTH, deeper_than

# The same limit as a line of training data: OpenAI request bodies (even tool JSON schemas)
# stay far below it.
MAX_JSON_DEPTH = MAX_DEPTH


def too_deep() -> ApiError:
    return invalid(f"The JSON body is nested too deeply: at most {MAX_JSON_DEPTH} levels of "
                   "objects and arrays are accepted.", code="json_too_deep")


def check_body_depth(body: bytes, value: Any) -> None:
    # Fewer opening brackets than the limit (counted in C, strings included) cannot nest
    # deeper than it: skip the walk for the common small body.
    if body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH and isinstance(value, dict | list) \
            and deeper_than(value, MAX_JSON_DEPTH):
        raise too_deep()


class LimitedRequest(Request[Any, Any, Any]):
    """The app's request class: `json()` refuses over-deep bodies with a 400."""

    async def json(self) -> Any:
        try:
            value = await super().json()
        except RecursionError as exc:
            raise too_deep() from exc
        check_body_depth(await self.body(), value)
        return value
