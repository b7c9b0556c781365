"""OpenAPI request bodies for the streaming multipart routes (which read the raw stream, so
Litestar cannot infer them from a `data` parameter)."""

from __future__ import annotations

from dataclasses import dataclass

from litestar.openapi.spec import OpenAPIMediaType, Operation, RequestBody, Schema
from litestar.openapi.spec.enums import OpenAPIType


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
            {"purpose": Schema(type=OpenAPIType.STRING), "file": _BINARY}, ["purpose", "file"])


@dataclass
class UploadPartOperation(Operation):
    """`POST /v1/uploads/{upload_id}/parts`: one binary `data` part."""

    def __post_init__(self) -> None:
        self.request_body = _multipart({"data": _BINARY}, ["data"])
