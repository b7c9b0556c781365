"""`/v1/fine_tuning/jobs`"""

from __future__ import annotations

import re
from typing import Annotated

from litestar import Controller, Request, get, post

from server.api.error_docs import errors
from server.api.openapi_bodies import JobListOperation, limit_param
from server.auth import Principal
from server.service import Services
from server.service.objects import CheckpointObject, FineTuningJobObject, JobEventObject, ListPage
from server.service.requests import JobCreateRequest

_METADATA_KEY = re.compile(r"^metadata\[(.+)\]$")


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

    @get("/{job_id:str}/events", responses=errors(404))
    async def list_events(
        self, services: Services, principal: Principal, job_id: str, after: str | None = None,
        limit: Annotated[int, limit_param(1000)] = 20,
    ) -> ListPage[JobEventObject]:
        return await services.jobs.list_events(principal, job_id, after=after, limit=limit)

    @get("/{job_id:str}/checkpoints", responses=errors(404))
    async def list_checkpoints(self, services: Services, principal: Principal, job_id: str,
                               after: str | None = None,
                               limit: Annotated[int, limit_param(100)] = 10
                               ) -> ListPage[CheckpointObject]:
        return await services.jobs.list_checkpoints(principal, job_id, after=after, limit=limit)
