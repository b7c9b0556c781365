"""Service-layer errors as gRPC statuses carrying the OpenAI error object.

A failed call ends with the status code below and, in the trailing metadata key
`grpc-status-details-bin`, a `tuneforge.v1.RpcStatus` (wire-identical to `google.rpc.Status`)
whose one detail is a `tuneforge.v1.ErrorDetail`: `{message, type, param, code}` as over REST,
plus `http_status`. See proto/tuneforge/v1/errors.proto.
"""

from __future__ import annotations

import re

import grpc
from google.protobuf import any_pb2
from pydantic import ValidationError

from server.grpc.pb.tuneforge.v1 import errors_pb2
from tuneforge.errors import ApiError, param_name

DETAILS_KEY = "grpc-status-details-bin"

_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
}
_TYPE_NAMES = re.compile(r"^(int|float|str|bool|list|dict|none)$|[\[\-]")


def status_code(http_status: int) -> grpc.StatusCode:
    return _CODES.get(http_status, grpc.StatusCode.UNKNOWN)


def trailing_metadata(error: ApiError) -> tuple[tuple[str, bytes], ...]:
    detail = errors_pb2.ErrorDetail(message=error.message, type=error.type, param=error.param,
                                    code=error.code, http_status=error.status)
    packed = any_pb2.Any()
    packed.Pack(detail)
    status = errors_pb2.RpcStatus(code=status_code(error.status).value[0],
                                  message=error.message, details=[packed])
    return ((DETAILS_KEY, status.SerializeToString()),)


def from_validation(exc: ValidationError) -> ApiError:
    """A request that fails the service layer's request model: 400 naming the parameter, as
    over REST (`lora.rank`, `method.supervised.hyperparameters.n_epochs`, ...)."""
    first = exc.errors()[0] if exc.errors() else {}
    keys: list[str | int] = []
    for part in first.get("loc", ()):
        if isinstance(part, str) and _TYPE_NAMES.search(part):  # a union branch's tag
            break
        keys.append(part)
    param = param_name(keys) or None
    detail = first.get("msg", "invalid value")
    message = f"Invalid value for '{param}': {detail}" if param else detail
    return ApiError(400, message, param=param, code="invalid_value")


def internal() -> ApiError:
    return ApiError(500, "The server had an error while processing your request.",
                    type="server_error", code="internal_error")
