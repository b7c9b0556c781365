"""`/v1/chat/completions` and `/v1/completions`: OpenAI inference, proxied to vLLM.

The caller must own the `ft:` model it names (base models are open to every tenant); anything
else is a 404. The body is forwarded as sent (only the model name is replaced by the adapter's
name on the server, and a default `max_tokens` added when none is given) once it passes the
request caps and its organization's limits (400 naming the parameter; 429 with Retry-After),
`stream: true` answers are relayed as Server-Sent Events (`text/event-stream`), and vLLM's
errors come back in OpenAI's envelope. A client that hangs up before its answer is complete
closes the connection to vLLM, which aborts the generation. `GET /v1/serving/status` reports
the replicas.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from litestar import Controller, MediaType, Request, Response, get, post
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, Operation, RequestBody, Schema
from litestar.openapi.spec.enums import OpenAPIType
from litestar.response import Stream
from pydantic import BaseModel

from server.api.error_docs import ErrorEnvelope, errors
from server.auth import Principal
from server.service import Services
from serving.router import Proxied, Target
from tuneforge.errors import ApiError

_OBJECT = Schema(type=OpenAPIType.OBJECT)
_STRING = Schema(type=OpenAPIType.STRING)
_COMMON = {
    "model": Schema(type=OpenAPIType.STRING, description="A base model or an `ft:` model of "
                    "your organization (or one of its checkpoints)"),
    "stream": Schema(type=OpenAPIType.BOOLEAN, description="Answer as Server-Sent Events"),
    "max_tokens": Schema(type=OpenAPIType.INTEGER, minimum=1),
    "temperature": Schema(type=OpenAPIType.NUMBER, minimum=0, maximum=2),
    "top_p": Schema(type=OpenAPIType.NUMBER, minimum=0, maximum=1),
    "n": Schema(type=OpenAPIType.INTEGER, minimum=1),
    "stop": Schema(one_of=[_STRING, Schema(type=OpenAPIType.ARRAY, items=_STRING)]),
    "seed": Schema(type=OpenAPIType.INTEGER),
}
_CHAT = Schema(type=OpenAPIType.OBJECT, required=["model", "messages"], properties={
    **_COMMON,
    "messages": Schema(type=OpenAPIType.ARRAY, min_items=1, items=Schema(
        type=OpenAPIType.OBJECT, required=["role"], properties={
            "role": Schema(type=OpenAPIType.STRING,
                           enum=["system", "developer", "user", "assistant", "tool"]),
            "content": Schema(one_of=[_STRING, Schema(type=OpenAPIType.ARRAY, items=_OBJECT)]),
        })),
})
_COMPLETION = Schema(type=OpenAPIType.OBJECT, required=["model", "prompt"], properties={
    **_COMMON,
    "prompt": Schema(one_of=[_STRING, Schema(type=OpenAPIType.ARRAY, items=_STRING)]),
})


def _inference_operation(body: Schema, answer: str) -> type[Operation]:
    @dataclass
    class InferenceOperation(Operation):
        def __post_init__(self) -> None:
            self.request_body = RequestBody(
                required=True, content={"application/json": OpenAPIMediaType(schema=body)})
            self.responses = {**(self.responses or {}), "200": OpenAPIResponse(
                description=f"{answer} (JSON), or with `stream: true` a stream of chunks "
                "(Server-Sent Events ending in `data: [DONE]`)",
                content={"application/json": OpenAPIMediaType(schema=_OBJECT),
                         "text/event-stream": OpenAPIMediaType(schema=_STRING)})}

    return InferenceOperation


def _server_errors() -> dict[int, ResponseSpec]:
    return {
        **errors(404, 413),
        429: ResponseSpec(ErrorEnvelope, generate_examples=False,
                          description="Over the organization's concurrency or rate limit "
                          "(`rate_limit_exceeded`; see the `Retry-After` header)"),
        500: ResponseSpec(ErrorEnvelope, generate_examples=False,
                          description="The inference server failed"),
        503: ResponseSpec(ErrorEnvelope, generate_examples=False,
                          description="No inference server for the model's base model is ready"),
    }


class ReplicaStatus(BaseModel):
    id: str
    base_model: str
    state: str
    managed: bool
    pid: int | None
    restarts: int
    capacity: int
    adapters_loaded: int
    inflight: int


class ServingStatus(BaseModel):
    object: str = "serving.status"
    replicas: list[ReplicaStatus]


_SSE = "text/event-stream; charset=utf-8"
_CLIENT_GONE = 499  # nginx's "client closed request": nobody reads it


def _response(result: Proxied) -> Response[Any]:
    if result.stream is not None:
        # The handler's `media_type` would win over the Stream's: name the type explicitly.
        return Stream(result.stream, status_code=result.status, media_type=_SSE,
                      headers={**result.headers, "Content-Type": _SSE,
                               "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    return Response(result.body, status_code=result.status, media_type=result.media_type,
                    headers=result.headers)


async def _client_gone(request: Request[Any, Any, Any]) -> None:
    """Returns when the client hangs up (the body has been read, so the next ASGI message
    is `http.disconnect`)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _proxy(path: str, request: Request[Any, Any, Any], services: Services,
                 principal: Principal, state: State) -> Response[Any]:
    plane = state.serving

    async def resolve(model: str) -> Target:
        target = plane.targets.get(principal.organization_id, model)
        if target is None:
            found = await services.models.servable(principal, model)
            target = Target(found.id, found.base_model, found.adapter_prefix,
                            float(found.created_at), kind=found.kind)
            plane.targets.put(principal.organization_id, target)
        return target

    body = await request.body()
    handler = asyncio.current_task()
    gone = False

    async def hang_up() -> None:
        nonlocal gone
        await _client_gone(request)
        gone = True
        if handler is not None:
            handler.cancel()

    # Until the answer (or a stream's first bytes) is ready, a client that hangs up cancels
    # the work: the connection to vLLM closes and vLLM aborts the request. A stream's later
    # chunks are relayed by Litestar, which stops at a disconnect too.
    watcher = asyncio.ensure_future(hang_up())
    try:
        return _response(await plane.router.proxy(
            path, body, resolve, organization_id=principal.organization_id))
    except asyncio.CancelledError:
        if not gone or handler is None:
            raise
        handler.uncancel()
        return Response(b"", status_code=_CLIENT_GONE)
    except RecursionError as exc:  # JSON nested too deeply to decode
        raise ApiError(400, "The request body is nested too deeply.",
                       code="invalid_json") from exc
    finally:
        watcher.cancel()


class InferenceController(Controller):
    tags = ["inference"]

    @post("/v1/chat/completions", status_code=200, media_type=MediaType.JSON,
          operation_class=_inference_operation(_CHAT, "A chat completion"),
          responses=_server_errors())
    async def chat_completions(self, request: Request[Any, Any, Any], services: Services,
                               principal: Principal, state: State) -> Response[Any]:
        """Chat with a base model or a fine-tuned model (OpenAI's Chat Completions API)."""
        return await _proxy("/v1/chat/completions", request, services, principal, state)

    @post("/v1/completions", status_code=200, media_type=MediaType.JSON,
          operation_class=_inference_operation(_COMPLETION, "A text completion"),
          responses=_server_errors())
    async def completions(self, request: Request[Any, Any, Any], services: Services,
                          principal: Principal, state: State) -> Response[Any]:
        """Complete a prompt with a base model or a fine-tuned model (legacy Completions)."""
        return await _proxy("/v1/completions", request, services, principal, state)

    @get("/v1/serving/status", responses=errors())
    async def serving_status(self, principal: Principal, state: State) -> ServingStatus:
        """TuneForge extension: the inference servers, their health and load (no names)."""
        return ServingStatus(replicas=[ReplicaStatus(**r) for r in state.serving.status()])
