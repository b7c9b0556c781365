"""`POST /v1/fine_tuning/jobs/plan` (TuneForge extension): a job's plan, nothing created."""

from __future__ import annotations

from litestar import Controller, post

from server.api.error_docs import errors
from server.auth import Principal
from server.service import Services
from server.service.plan import PlanService
from server.service.plan_objects import JobPlanObject
from server.service.requests import JobCreateRequest


class PlanController(Controller):
    path = "/v1/fine_tuning/jobs/plan"
    tags = ["fine-tuning"]

    @post("/", status_code=200, responses=errors(), summary="Plan a fine-tuning job")
    async def plan_job(self, services: Services, principal: Principal,
                       data: JobCreateRequest) -> JobPlanObject:
        """TuneForge extension. The body of `POST /v1/fine_tuning/jobs`, checked the same way
        (the same 400s), but nothing is created: no job, no event, no queue entry. Answers the
        detected data format and every data error with its line (up to a limit), example and
        token counts, and for each planned device (the CPU worker, each configured GPU size)
        the tuning type and quantization the worker would choose, the resolved hyperparameters
        and training controls, the estimated peak memory, optimizer steps and duration, and
        warnings. Data errors are reported in the plan (`valid: false`), not as a 400."""
        return await PlanService(services.ctx, services.jobs).plan(principal, data)
