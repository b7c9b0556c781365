"""Exceptions: one class per kind of failure, the same for both transports.

Every error the API answers carries OpenAI's error object: `message`, `type`, `param`, `code`,
plus the HTTP status (`status_code`) and, over gRPC, the status code name (`grpc_code`).
"""

from __future__ import annotations


class TuneForgeError(Exception):
    """Base class of every exception this package raises."""


class APIError(TuneForgeError):
    """The API answered with an error."""

    status_code: int | None = None

    def __init__(self, message: str, *, status_code: int | None = None, type: str | None = None,
                 param: str | None = None, code: str | None = None,
                 grpc_code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code
        self.type = type
        self.param = param
        self.code = code
        self.grpc_code = grpc_code

    def __str__(self) -> str:
        where = f" (param: {self.param})" if self.param else ""
        label = f"{self.status_code} " if self.status_code else ""
        return f"{label}{self.code or self.type or 'error'}: {self.message}{where}"


class BadRequestError(APIError):
    """400/422, INVALID_ARGUMENT: the request is invalid; `param` names the culprit."""

    status_code = 400


class AuthenticationError(APIError):
    """401, UNAUTHENTICATED: no API key, or a wrong one."""

    status_code = 401


class PermissionDeniedError(APIError):
    """403, PERMISSION_DENIED."""

    status_code = 403


class NotFoundError(APIError):
    """404, NOT_FOUND (also for another organization's objects)."""

    status_code = 404


class ConflictError(APIError):
    """409, FAILED_PRECONDITION: the object's state forbids it (e.g. cancelling a finished
    job)."""

    status_code = 409


class RequestTooLargeError(APIError):
    """413, RESOURCE_EXHAUSTED: the upload is larger than the server accepts."""

    status_code = 413


class RateLimitError(APIError):
    """429, RESOURCE_EXHAUSTED: retried with backoff before it is raised."""

    status_code = 429


class InternalServerError(APIError):
    """5xx, INTERNAL."""

    status_code = 500


class ServiceUnavailableError(InternalServerError):
    """503, UNAVAILABLE from the service itself: retried with backoff before it is raised."""

    status_code = 503


class APIConnectionError(TuneForgeError):
    """The server could not be reached (gRPC UNAVAILABLE, a refused or broken connection):
    retried with backoff before it is raised."""


class APITimeoutError(APIConnectionError):
    """The call ran past its timeout (gRPC DEADLINE_EXCEEDED)."""


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError, 401: AuthenticationError, 403: PermissionDeniedError,
    404: NotFoundError, 409: ConflictError, 413: RequestTooLargeError,
    422: BadRequestError, 429: RateLimitError, 503: ServiceUnavailableError,
}


def error_for_status(status: int, message: str, **fields: str | None) -> APIError:
    """The exception for an HTTP status (and the OpenAI error object's fields)."""
    cls = _BY_STATUS.get(status)
    if cls is None:
        cls = InternalServerError if status >= 500 else APIError
    return cls(message, status_code=status, type=fields.get("type"), param=fields.get("param"),
               code=fields.get("code"), grpc_code=fields.get("grpc_code"))
