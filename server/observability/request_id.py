"""The request id: taken from the client's `X-Request-ID` when it is a sane one, generated
otherwise, bound to the log context for the whole request and returned in the response's
`X-Request-ID` header (OpenAI answers `x-request-id` too). A job created under a request
stores it, so the worker's and the serving plane's lines for that job carry it as well.

`RequestContextMiddleware` wraps the whole ASGI application (not one route), so unknown URLs
and refused requests get an id too; with tracing on it also opens the request's span, named
after the route template (`POST /v1/fine_tuning/jobs/{job_id}/cancel`).
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import structlog
from litestar.datastructures import MutableScopeHeaders
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from server.observability import tracing

HEADER = "x-request-id"
_VALID = re.compile(r"[A-Za-z0-9._-]{1,128}")
# Health probes and metric scrapes come every few seconds: no access line for them.
_QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
_access = structlog.get_logger("tuneforge.access")


def new_request_id() -> str:
    return f"req_{uuid.uuid4().hex}"


def accept_request_id(value: str | None) -> str:
    """The client's id when it is at most 128 characters of [A-Za-z0-9._-], else a new one."""
    if value is not None and _VALID.fullmatch(value):
        return value
    return new_request_id()


def _client_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name.lower() == HEADER.encode():
            try:
                return bytes(value).decode("ascii")
            except UnicodeDecodeError:
                return None
    return None


class RequestContextMiddleware:
    """Pure ASGI: binds `request_id` (and the request's span) around everything the app does
    for an HTTP request, and adds the id to the response's headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = accept_request_id(_client_request_id(scope))
        started = time.perf_counter()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                MutableScopeHeaders.from_message(message)[HEADER] = request_id
                status = int(message["status"])
                span_status(message)
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id), \
                tracing.request_span(scope, request_id) as span_status:
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                _access_line(scope, status, time.perf_counter() - started)


def _access_line(scope: Scope, status: int, seconds: float) -> None:
    """One line per request (probes and scrapes left out): method, route template, status and
    duration. Never the query string or headers, where a client may put a credential."""
    path = scope.get("path", "")
    if path in _QUIET_PATHS:
        return
    method = scope.get("method", "")
    route = scope.get("path_template") or path
    _access.info(f"{method} {route} {status}", method=method, route=route, status=status,
                 duration_ms=round(seconds * 1000, 2))


def wrap(app: Any) -> None:
    """Install the middleware around a Litestar app's whole ASGI handler (routing included,
    which route-level middleware would miss: a 404 gets an id too)."""
    app.asgi_handler = RequestContextMiddleware(app.asgi_handler)
