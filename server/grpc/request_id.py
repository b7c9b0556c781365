"""The request id over gRPC: the `x-request-id` metadata the client sent (when it is a sane
one, as over REST) or a new id, bound to the log context while the call runs and sent back in
the response's initial metadata. With tracing on, each call is a span named after the method.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import structlog
from opentelemetry.trace import SpanKind

from server.observability import tracing
from server.observability.request_id import HEADER, accept_request_id


def _client_request_id(metadata: Any) -> str | None:
    for key, value in metadata or ():
        if key.lower() == HEADER and isinstance(value, str):
            return value
    return None


class RequestIdInterceptor(grpc.aio.ServerInterceptor):
    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        request_id = accept_request_id(
            _client_request_id(handler_call_details.invocation_metadata))
        method = handler_call_details.method
        kind = ("stream" if handler.request_streaming else "unary") + "_" + (
            "stream" if handler.response_streaming else "unary")
        behavior = getattr(handler, kind)
        wrap = _streaming if handler.response_streaming else _unary
        return handler._replace(**{kind: wrap(behavior, request_id, method)})


def _unary(behavior: Callable[..., Any], request_id: str, method: str) -> Callable[..., Any]:
    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        with structlog.contextvars.bound_contextvars(request_id=request_id), \
                tracing.span(method, kind=SpanKind.SERVER,
                             attributes={"rpc.method": method,
                                         "tuneforge.request_id": request_id}):
            await context.send_initial_metadata(((HEADER, request_id),))
            return await behavior(request, context)

    return call


def _streaming(behavior: Callable[..., Any], request_id: str,
               method: str) -> Callable[..., Any]:
    async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        with structlog.contextvars.bound_contextvars(request_id=request_id), \
                tracing.span(method, kind=SpanKind.SERVER,
                             attributes={"rpc.method": method,
                                         "tuneforge.request_id": request_id}):
            await context.send_initial_metadata(((HEADER, request_id),))
            result = behavior(request, context)
            if inspect.isasyncgen(result):
                async for item in result:
                    yield item
            else:  # a handler that writes with `context.write`
                await result

    return call
