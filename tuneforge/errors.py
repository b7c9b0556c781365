"""The one error type of TuneForge: OpenAI's error object. The service layer and the inference
plane raise it; the transports (REST, gRPC) render it as the envelope
`{"error": {message, type, param, code}}` with its status and headers."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class ApiError(Exception):
    """An error with OpenAI's shape: `{"error": {message, type, param, code}}`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def envelope(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def param_name(parts: Iterable[str | int]) -> str:
    """A request parameter's name as OpenAI writes it: fields joined by dots, list positions
    in brackets (`integrations[0].wandb.project`); a refused key of a mapping names the
    mapping."""
    parts = list(parts)
    if "[key]" in parts:
        parts = parts[:max(0, parts.index("[key]") - 1)]
    name = ""
    for part in parts:
        if isinstance(part, int) or (isinstance(part, str) and part.isdigit() and name):
            name += f"[{part}]"
        else:
            name += f".{part}" if name else str(part)
    return name


def invalid(message: str, *, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def not_found(kind: str, object_id: str, *, param: str | None = None) -> ApiError:
    return ApiError(404, f"No such {kind}: '{object_id}'", param=param, code="not_found")


def conflict(message: str, *, code: str = "invalid_state") -> ApiError:
    return ApiError(409, message, code=code)


def unauthorized(message: str) -> ApiError:
    return ApiError(401, message, code="invalid_api_key")


def too_large(message: str, *, param: str | None = None) -> ApiError:
    return ApiError(413, message, param=param, code="file_too_large")


def unavailable(message: str) -> ApiError:
    return ApiError(503, message, type="server_error", code="service_unavailable")
