"""`/v1/fine_tuning/jobs`"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, cast

from litestar import Controller, Request, get, post
from litestar.openapi.spec import OpenAPIMediaType, Operation, Schema
from litestar.openapi.spec.enums import OpenAPIType
from litestar.params import Parameter
from litestar.response import Stream

from server.api.error_docs import errors
from server.api.openapi_bodies import JobListOperation, limit_param
from server.auth import Principal
from server.service import Services, event_stream
from server.service.objects import CheckpointObject, FineTuningJobObject, JobEventObject, ListPage
from server.service.requests import JobCreateRequest
from tuneforge.errors import invalid

_METADATA_KEY = re.compile(r"^metadata\[(.+)\]$")
_SSE = "text/event-stream; charset=utf-8"


class _EventStream(Stream):
    """A Stream that keeps its own media type: a handler annotated with a JSON page would
    otherwise label it `application/json`."""

    def to_asgi_response(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["media_type"] = self.media_type
        return super().to_asgi_response(*args, **kwargs)


@dataclass
class EventsOperation(Operation):
    """`GET …/events`: with `stream=true` the answer is Server-Sent Events (a TuneForge
    extension; OpenAI's API lists events only)."""

    def __post_init__(self) -> None:
        ok = (self.responses or {}).get("200")
        if ok is not None and not isinstance(ok, dict) and getattr(ok, "content", None):
            ok.description = (
                "A page of events (JSON), or with `stream=true` Server-Sent Events: the job "
                "object as `event: job` messages (first, and whenever it changes), each job "
                "event (oldest first, then live) as a message whose `id:` is the event's id, "
                "`: keep-alive` comments while quiet, and a last `event: end` once the job has "
                "ended. Reconnect with `Last-Event-ID` to resume after an event.")
            ok.content = {**ok.content,  # type: ignore[union-attr]
                          "text/event-stream": OpenAPIMediaType(
                              schema=Schema(type=OpenAPIType.STRING))}


class JobsController(Controller):
    path = "/v1/fine_tuning/jobs"
    tags = ["fine-tuning"]

    @post("/", status_code=200, responses=errors())
    async def create_job(self, services: Services, principal: Principal,
                         data: JobCreateRequest) -> FineTuningJobObject:
        return await services.jobs.create(principal, data)

    @get("/", responses=errors(), operation_class=JobListOperation)
    async def list_jobs(
        self, request: Request, services: Services, principal: Principal,
        after: str | None = None, limit: Annotated[int, limit_param(100)] = 20,
    ) -> ListPage[FineTuningJobObject]:
        """Newest first. Filter by metadata with `metadata[key]=value` query parameters."""
        metadata = {m.group(1): value for name, value in request.query_params.items()
                    if (m := _METADATA_KEY.match(name))}
        return await services.jobs.list(principal, after=after, limit=limit, metadata=metadata)

    @get("/{job_id:str}", responses=errors(404))
    async def retrieve_job(self, services: Services, principal: Principal,
                           job_id: str) -> FineTuningJobObject:
        return await services.jobs.get(principal, job_id)

    @post("/{job_id:str}/cancel", status_code=200, responses=errors(404, 409))
    async def cancel_job(self, services: Services, principal: Principal,
                         job_id: str) -> FineTuningJobObject:
        return await services.jobs.cancel(principal, job_id)

    @post("/{job_id:str}/pause", status_code=200, responses=errors(404, 409))
    async def pause_job(self, services: Services, principal: Principal,
                        job_id: str) -> FineTuningJobObject:
        return await services.jobs.pause(principal, job_id)

    @post("/{job_id:str}/resume", status_code=200, responses=errors(404, 409))
    async def resume_job(self, services: Services, principal: Principal,
                         job_id: str) -> FineTuningJobObject:
        return await services.jobs.resume(principal, job_id)

    @get("/{job_id:str}/events", responses=errors(404), operation_class=EventsOperation)
    async def list_events(
        self, request: Request, services: Services, principal: Principal, job_id: str,
        after: str | None = None, limit: Annotated[int, limit_param(1000)] = 20,
        stream: Annotated[bool, Parameter(
            description="Answer as Server-Sent Events: the events after `after` (or the "
                        "`Last-Event-ID` header), oldest first, then live ones until the job "
                        "has ended.")] = False,
        last_event_id: Annotated[str | None, Parameter(
            header="Last-Event-ID", required=False,
            description="With `stream=true`: resume after this event (a reconnecting "
                        "client's last seen `id:`); it wins over `after`, which a "
                        "reconnecting EventSource sends again unchanged.")] = None,
    ) -> ListPage[JobEventObject]:
        if not stream:
            events = await services.jobs.list_events(principal, job_id, after=after,
                                                     limit=limit)
            if last_event_id is not None:  # checked after the job, so another's is a 404
                raise invalid("The Last-Event-ID header applies to `stream=true` only; page "
                              "with `after`.", param="Last-Event-ID")
            return events
        body = await event_stream.open_sse(
            services.jobs, principal, job_id, after=last_event_id or after,
            heartbeat_seconds=services.ctx.settings.events_heartbeat_seconds)
        if "limit" in request.query_params:
            raise invalid("`limit` does not apply to `stream=true`: the stream sends every "
                          "event.", param="limit")
        # Litestar sends a returned Response as it is; the annotation documents the JSON page.
        return cast("ListPage[JobEventObject]", _EventStream(
            body, media_type=_SSE,
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}))

    @get("/{job_id:str}/checkpoints", responses=errors(404))
    async def list_checkpoints(self, services: Services, principal: Principal, job_id: str,
                               after: str | None = None,
                               limit: Annotated[int, limit_param(100)] = 10
                               ) -> ListPage[CheckpointObject]:
        return await services.jobs.list_checkpoints(principal, job_id, after=after, limit=limit)
