"""OpenAPI request bodies: the streaming multipart routes (which read the raw stream, so
Litestar cannot infer them from a `data` parameter), the JSON bodies (documented with
pydantic's own JSON Schema) and the job list's `metadata[key]` filters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from litestar.enums import ParamType
from litestar.openapi.spec import OpenAPIMediaType, Operation, RequestBody, Schema
from litestar.openapi.spec import Parameter as OpenAPIParameter
from litestar.openapi.spec.enums import OpenAPIType
from litestar.params import Parameter
from litestar.plugins import OpenAPISchemaPlugin
from pydantic import BaseModel

from tuneforge.domain import UPLOADABLE_PURPOSES

if TYPE_CHECKING:
    from litestar._openapi.schema_generation import SchemaCreator
    from litestar.typing import FieldDefinition

# The modules whose pydantic models are request bodies.
REQUESTS_MODULES = ("server.service.requests", "server.service.webhook_objects")


def _multipart(properties: dict[str, Schema], required: list[str]) -> RequestBody:
    return RequestBody(
        required=True,
        content={"multipart/form-data": OpenAPIMediaType(schema=Schema(
            type=OpenAPIType.OBJECT, properties=properties, required=required))},
    )


_BINARY = Schema(type=OpenAPIType.STRING, format="binary")  # type: ignore[arg-type]


@dataclass
class FileUploadOperation(Operation):
    """`POST /v1/files`: `purpose` (text, sent before the file) and `file` (binary)."""

    def __post_init__(self) -> None:
        self.request_body = _multipart(
            {"purpose": Schema(type=OpenAPIType.STRING, enum=sorted(UPLOADABLE_PURPOSES),
                               description="Send it before the `file` part (the file is "
                                           "streamed, and checked according to it)"),
             "file": Schema(type=OpenAPIType.STRING, format="binary",  # type: ignore[arg-type]
                            description="A `fine-tune` file must be JSONL named `*.jsonl`; "
                                        "the filename may not contain control characters")},
            ["purpose", "file"])


@dataclass
class UploadPartOperation(Operation):
    """`POST /v1/uploads/{upload_id}/parts`: one binary `data` part."""

    def __post_init__(self) -> None:
        self.request_body = _multipart({"data": _BINARY}, ["data"])


def limit_param(maximum: int) -> Any:
    """A `limit` query parameter documented with the range the service checks (400 outside
    it): `limit: Annotated[int, limit_param(100)] = 20`."""
    return Parameter(schema_extra={"minimum": 1, "maximum": maximum},
                     description=f"Page size, 1 to {maximum}.")


# `JobService.list` refuses more (a job holds at most 16 metadata pairs).
MAX_METADATA_FILTERS = 16


@dataclass
class JobListOperation(Operation):
    """`GET /v1/fine_tuning/jobs`: the `metadata[key]=value` filters the route reads from the
    raw query string."""

    def __post_init__(self) -> None:
        self.parameters = [*(self.parameters or []), OpenAPIParameter(
            name="metadata", param_in=ParamType.QUERY, required=False,
            style="deepObject", explode=True,
            description="Only jobs whose metadata holds every given pair: "
                        f"`metadata[key]=value`, at most {MAX_METADATA_FILTERS} keys.",
            schema=Schema(type=OpenAPIType.OBJECT, max_properties=MAX_METADATA_FILTERS,
                          additional_properties=Schema(type=OpenAPIType.STRING)),
        )]


@dataclass
class JsonSchema(Schema):
    """A schema given as a ready JSON Schema dict (serialized as is)."""

    raw: dict[str, Any] | None = None

    def to_schema(self) -> dict[str, Any]:
        return dict(self.raw or {})


def _inline_refs(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            rest = {k: v for k, v in node.items() if k != "$ref"}
            return _inline_refs({**defs[ref.removeprefix("#/$defs/")], **rest}, defs)
        return {k: _inline_refs(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_inline_refs(v, defs) for v in node]
    return node


def request_json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """pydantic's own JSON Schema for a request model, nested models inlined: it keeps what
    Litestar's conversion drops (constraints inside `X | None`, `additionalProperties: false`
    for `extra="forbid"`, the `json_schema_extra` rules the validators enforce)."""
    schema = model.model_json_schema(mode="validation")
    return _inline_refs(schema, schema.get("$defs", {}))  # type: ignore[no-any-return]


class RequestBodySchemaPlugin(OpenAPISchemaPlugin):
    """Documents the JSON request bodies (server/service/requests.py) with pydantic's JSON
    Schema, so that the document states every limit the server enforces."""

    @staticmethod
    def is_plugin_supported_type(value: Any) -> bool:
        return (isinstance(value, type) and issubclass(value, BaseModel)
                and value.__module__ in REQUESTS_MODULES
                and value.__name__.endswith("Request"))

    def to_openapi_schema(self, field_definition: FieldDefinition,
                          schema_creator: SchemaCreator) -> Schema:
        return JsonSchema(raw=request_json_schema(field_definition.annotation))
