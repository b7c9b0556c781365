"""`tuneforge.v1` messages to the package's types, and request bodies to messages.

A message becomes the JSON object the REST API answers (by the contract's own mapping,
`_pb.jsonmap`, generated with the stubs), which the types read as they read REST's: one path for
both transports.
"""

from __future__ import annotations

from typing import Any, TypeVar

from google.protobuf.message import Message

from tuneforge_client import types as t
from tuneforge_client._pb.jsonmap import ParseError, UnknownField, to_json, to_message
from tuneforge_client.errors import BadRequestError

M = TypeVar("M", bound=Message)
ObjectT = TypeVar("ObjectT", bound=t._Object)


def read(message: Message, type_: type[ObjectT]) -> ObjectT:
    """The package's object for a response message."""
    return type_.from_dict(_json(message))


def page(message: Message, item_type: type[ObjectT]) -> t.Page[ObjectT]:
    return t.Page.of(_json(message), item_type.from_dict)


def _json(message: Message) -> dict[str, Any]:
    # proto3 has no null list or map: an empty one reads as absent, i.e. the field's default.
    return to_json(message, empty_as_absent=True)


def request(body: dict[str, Any], message_type: type[M]) -> M:
    """The message for a REST-shaped request body; a value it cannot carry is a 400."""
    try:
        return to_message(body, message_type)
    except UnknownField as exc:
        raise BadRequestError(str(exc), param=exc.param, code="invalid_value") from None
    except (ParseError, TypeError, ValueError) as exc:
        raise BadRequestError(f"Invalid request: {exc}", code="invalid_value") from None
