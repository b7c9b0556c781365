"""Between the service layer's OpenAI objects (pydantic) and the `tuneforge.v1` messages.

Both go through the objects' JSON, mapped by the contract's own rules (`server.grpc.pb.jsonmap`,
generated with the stubs from proto/jsonmap.py):

- responses: the JSON object REST would answer becomes the message, field for field, so the REST
  and gRPC views of one object are the same data;
- requests: the message becomes the JSON body REST would receive, and the service layer's
  request model validates it: the rules live in one place.
"""

from __future__ import annotations

from typing import Any, TypeVar

from google.protobuf.message import Message
from pydantic import BaseModel

from server.grpc.pb.jsonmap import to_json, to_message

M = TypeVar("M", bound=Message)


def reply(obj: BaseModel, message_type: type[M]) -> M:
    """The message for a service-layer object (or list page)."""
    return to_message(obj.model_dump(mode="json"), message_type)


def body(request: Message) -> dict[str, Any]:
    """The JSON body REST would receive for this request (empty lists and maps are absent)."""
    return to_json(request, empty_as_absent=True)
