"""`/v1/chat/completions` and `/v1/completions`: OpenAI inference, proxied to vLLM.

The caller must own the `ft:` model it names (base models are open to every tenant); anything
else is a 404. The body is forwarded as sent (only the model name is replaced by the adapter's
name on the server), `stream: true` answers are relayed as Server-Sent Events unchanged, and
vLLM's errors come back in OpenAI's envelope. `GET /v1/serving/status` reports the replicas.
"""

from __future__ import annotations

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
from server.errors import ApiError
from server.service import Services
from serving.errors import ServingError
from serving.router import Proxied, Target

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
        **errors(404),
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


def _response(result: Proxied) -> Response[Any]:
    if result.stream is not None:
        return Stream(result.stream, status_code=result.status, media_type=result.media_type,
                      headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    return Response(result.body, status_code=result.status, media_type=result.media_type)


async def _proxy(path: str, request: Request[Any, Any, Any], services: Services,
                 principal: Principal, state: State) -> Response[Any]:
    plane = state.serving

    async def resolve(model: str) -> Target:
        target = plane.targets.get(principal.organization_id, model)
        if target is None:
            found = await services.models.servable(principal, model)
            target = Target(found.id, found.base_model, found.adapter_prefix,
                            float(found.created_at))
            plane.targets.put(principal.organization_id, target)
        return target

    try:
        return _response(await plane.router.proxy(path, await request.body(), resolve))
    except ServingError as exc:
        raise ApiError(exc.status, exc.message, type=exc.type, param=exc.param,
                       code=exc.code) from exc


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
