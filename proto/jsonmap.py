"""`tuneforge.v1` messages to and from the OpenAI JSON objects they mirror.

protobuf's `json_format` does the work; these rules (proto/README.md, Conventions) adapt the
few places where OpenAI's JSON has a shape proto3 cannot spell:

- "A number or `"auto"`" is an `AutoInt`/`AutoDouble` message (`auto: true` or `number`).
- A JSON field of several shapes is a oneof named after it, whose members are
  `<field>_<shape>`; a list member is a message whose one field `values` holds the items.
- 64-bit integers are JSON numbers, and so are the integral numbers of a `Struct`.
- An empty repeated field or map stands for a null or absent one where the caller says so.

Copied next to the generated stubs by proto/generate.py, so it imports only protobuf.
"""

from __future__ import annotations

from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

M = TypeVar("M", bound=Message)

AUTO_TYPES = frozenset({"tuneforge.v1.AutoInt", "tuneforge.v1.AutoDouble"})
STRUCT_TYPES = frozenset({"google.protobuf.Struct", "google.protobuf.Value",
                          "google.protobuf.ListValue"})
ParseError = json_format.ParseError


class UnknownField(ParseError):
    """A JSON field the message has no place for; `param` is its dotted path."""

    def __init__(self, param: str) -> None:
        super().__init__(f"Unknown parameter '{param}'.")
        self.param = param


def to_json(message: Message, *, empty_as_absent: bool = False) -> dict[str, Any]:
    """The JSON object of a message: every field without presence, the set ones with it."""
    raw = json_format.MessageToDict(message, preserving_proto_field_name=True,
                                    always_print_fields_with_no_presence=True,
                                    unquote_int64_if_possible=True)
    return _from_proto_json(message.DESCRIPTOR, raw, empty_as_absent)


def to_message(data: dict[str, Any], message_type: type[M]) -> M:
    """The message for a JSON object; a null field is an unset one."""
    message = message_type()
    json_format.ParseDict(_to_proto_json(message.DESCRIPTOR, data, ""), message)
    return message


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _shape_member(field: FieldDescriptor) -> str | None:
    """The JSON field a oneof member stands for (`target_modules_list` -> `target_modules`)."""
    oneof = field.containing_oneof
    if oneof is None or oneof.name == f"_{field.name}":  # proto3 `optional`
        return None
    return oneof.name if field.name.startswith(f"{oneof.name}_") else None


def _is_list_wrapper(descriptor: Descriptor) -> bool:
    return [f.name for f in descriptor.fields] == ["values"] and \
        descriptor.fields[0].is_repeated


def _json_number(value: Any) -> Any:
    """JSON has one number type: give a Struct's integral doubles back as ints."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _json_number(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_number(v) for v in value]
    return value


def _value_from_proto(field: FieldDescriptor, value: Any, empty_as_absent: bool) -> Any:
    kind = field.message_type
    if kind is None:
        return value
    if _is_map(field):
        value_field = kind.fields_by_name["value"]
        return {k: _value_from_proto(value_field, v, empty_as_absent) for k, v in value.items()}
    if kind.full_name in AUTO_TYPES:
        return "auto" if value.get("auto") else value.get("number")
    if kind.full_name in STRUCT_TYPES:
        return _json_number(value)
    if _is_list_wrapper(kind):
        return list(value.get("values", []))
    return _from_proto_json(kind, value, empty_as_absent)


def _from_proto_json(descriptor: Descriptor, raw: dict[str, Any],
                     empty_as_absent: bool) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in raw.items():
        field = descriptor.fields_by_name[name]
        if field.is_repeated and not value and empty_as_absent:
            continue
        if field.is_repeated and not _is_map(field):
            converted: Any = [_value_from_proto(field, v, empty_as_absent) for v in value]
        else:
            converted = _value_from_proto(field, value, empty_as_absent)
        result[_shape_member(field) or name] = converted
    return result


def _shape_field(descriptor: Descriptor, name: str, value: Any) -> FieldDescriptor | None:
    """The member of the oneof `name` that takes this value's shape."""
    oneof = descriptor.oneofs_by_name.get(name)
    for field in oneof.fields if oneof else ():
        wants_list = field.message_type is not None and _is_list_wrapper(field.message_type)
        if _shape_member(field) == name and wants_list == isinstance(value, list):
            return field
    return None


def _value_to_proto(field: FieldDescriptor, value: Any, path: str) -> Any:
    kind = field.message_type
    if kind is None or kind.full_name in STRUCT_TYPES or _is_map(field):
        return value
    if kind.full_name in AUTO_TYPES:
        return {"auto": True} if value == "auto" else {"number": value}
    if _is_list_wrapper(kind) and isinstance(value, list):
        return {"values": value}
    if not isinstance(value, dict):
        raise ParseError(f"Invalid value for '{path}': expected an object, got {value!r}")
    return _to_proto_json(kind, value, f"{path}.")


def _to_proto_json(descriptor: Descriptor, data: dict[str, Any], prefix: str) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in data.items():
        if value is None:
            continue
        field = descriptor.fields_by_name.get(name) or _shape_field(descriptor, name, value)
        if field is None:
            raise UnknownField(f"{prefix}{name}")
        path = f"{prefix}{name}"
        if field.is_repeated and isinstance(value, list):
            result[field.name] = [_value_to_proto(field, v, path) for v in value]
        else:
            result[field.name] = _value_to_proto(field, value, path)
    return result
