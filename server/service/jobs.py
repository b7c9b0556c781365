"""Fine-tuning jobs: the public API (creation rules, list/get, the user's transitions) and
what the reconciler does to jobs whose queue entry or worker was lost.

The worker's side (lease, progress, checkpoints, success) is `server.job_protocol`; its
guarded-transition and event helpers are the ones used here, so a user's cancel and a
worker's finish are decided by the same kind of transaction and can never both win.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.auth import Principal
from server.db.models import File, Job, JobCheckpoint, JobEvent
from server.job_protocol import lease_is_free, record_event, status_values, transition
from server.observability.logging import current_request_id
from server.observability.tracing import current_traceparent
from server.service.context import Context
from server.service.integrations import check_integrations
from server.service.lora_targets import check_lora_targets
from server.service.objects import (
    CheckpointObject,
    FineTuningJobObject,
    JobEventObject,
    ListPage,
    checkpoint_object,
    event_object,
    job_object,
    page,
)
from server.service.pagination import Order, check_limit, fetch_page, scoped
from server.service.parents import not_available, resolve_parent
from server.service.requests import JobCreateRequest
from server.service.validation import ValidationService
from tuneforge.domain import (
    FULL_WEIGHT_TUNINGS,
    DpoHyperparameters,
    EventLevel,
    FilePurpose,
    JobStatus,
    LoraConfig,
    MethodType,
    ParentModel,
    Quantization,
    TrainingConfig,
    TuningType,
    new_id,
    now,
)
from tuneforge.errors import conflict, invalid, not_found

log = logging.getLogger(__name__)

CANCELLABLE = (JobStatus.VALIDATING_FILES, JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.PAUSED)


def first_queue_job_id(job_id: str) -> str:
    return f"{job_id}:1"


def next_queue_job_id(current: str | None, job_id: str) -> str:
    attempt = int(current.rsplit(":", 1)[1]) if current and ":" in current else 0
    return f"{job_id}:{attempt + 1}"


@dataclass(frozen=True)
class CheckedJobRequest:
    """A job request that passed every rule of creation, with what it resolved to: the base
    model the result belongs to (the request's `model`, or the base of its `ft:` parent), the
    parent, and the adapter shape (the parent's, when continuing one)."""

    method: str
    hyperparameters: dict[str, Any]
    base_model: str
    parent: ParentModel | None
    lora: LoraConfig
    training: TrainingConfig
    integrations: list[dict[str, Any]] | None = None


class JobService:
    def __init__(self, ctx: Context, validation: ValidationService) -> None:
        self.ctx = ctx
        self.validation = validation

    # ---- the public API -------------------------------------------------------------------

    async def check_request(self, principal: Principal,
                            request: JobCreateRequest) -> CheckedJobRequest:
        """Every rule job creation applies, without storing anything: the same answer for
        `POST /v1/fine_tuning/jobs` and its plan (`…/jobs/plan`)."""
        method, hyperparameters = self._method_and_hyperparameters(request)
        settings = self.ctx.settings
        training = request.training or TrainingConfig()
        parent: ParentModel | None = None
        if settings.base_model(request.model) is not None:
            base_model = request.model
            lora = request.lora or LoraConfig()
        elif request.model.startswith("ft:"):
            resolved = await resolve_parent(self.ctx, principal, request.model)
            parent, base_model, lora = resolved.parent, resolved.base_model, resolved.lora
            self._check_continuation(request, training)
        else:
            raise not_available(settings, request.model)
        self._check_training(request, training, lora if request.lora else None)
        if training.tuning == TuningType.QLORA:  # the job shows the 4-bit base it trains on
            lora = lora.model_copy(update={"quantization": Quantization.NF4})
        self._check_max_seq_length(base_model, training)
        if training.tuning not in FULL_WEIGHT_TUNINGS:
            self._check_servable_rank(base_model, lora.rank)
            if parent is None:
                await check_lora_targets(settings, base_model, lora)
        async with self.ctx.sessions() as session:
            await self._check_file(session, principal, request.training_file, "training_file")
            if request.validation_file:
                await self._check_file(session, principal, request.validation_file,
                                       "validation_file")
        integrations = check_integrations(settings.tracking, principal.organization_id,
                                          request.integrations)
        return CheckedJobRequest(method=method, hyperparameters=hyperparameters,
                                 base_model=base_model, parent=parent, lora=lora,
                                 training=training, integrations=integrations)

    async def create(self, principal: Principal, request: JobCreateRequest) -> FineTuningJobObject:
        checked = await self.check_request(principal, request)
        async with self.ctx.sessions() as session:
            job_id = new_id("ftjob-")
            row = Job(
                id=job_id, organization_id=principal.organization_id, model=request.model,
                method=checked.method, training_file=request.training_file,
                validation_file=request.validation_file, suffix=request.suffix,
                seed=request.seed if request.seed is not None else secrets.randbelow(2**31),
                status=JobStatus.VALIDATING_FILES, hyperparameters=checked.hyperparameters,
                lora=checked.lora.model_dump(mode="json"),
                training=checked.training.model_dump(mode="json"),
                base_model=checked.base_model,
                parent=checked.parent.model_dump(mode="json") if checked.parent else None,
                metadata_=request.metadata,
                integrations=checked.integrations,
                result_files=[], queue_job_id=first_queue_job_id(job_id),
                # The request and trace that created it follow the job to the worker.
                request_id=current_request_id(), traceparent=current_traceparent(),
            )
            session.add(row)
            await session.flush()
            await record_event(session, job_id, f"Created fine-tuning job: {job_id}")
            if checked.parent is not None:
                await record_event(session, job_id,
                                   f"Continuing from {checked.parent.model} "
                                   f"(base model {checked.base_model})")
            await record_event(session, job_id,
                               f"Validating training file: {row.training_file}"
                               + (f" and validation file: {row.validation_file}"
                                  if row.validation_file else ""))
            await session.commit()
        # Validated in the background, then queued and enqueued (`server.service.validation`);
        # the reconciler starts it again if this process dies first.
        self.validation.start(job_id)
        return job_object(row)

    @staticmethod
    def _check_continuation(request: JobCreateRequest, training: TrainingConfig) -> None:
        """A job from an `ft:` adapter trains that adapter further: its shape is the parent's."""
        if request.lora is not None:
            raise invalid("`lora` cannot be given when `model` is a fine-tuned model: the job "
                          "continues training its adapter, whose rank, alpha, dropout and "
                          "target modules it keeps.", param="lora", code="invalid_lora")
        if training.tuning in FULL_WEIGHT_TUNINGS:
            raise invalid(f"training.tuning '{training.tuning}' cannot continue a fine-tuned "
                          "(LoRA) model; use 'lora', 'qlora' or 'auto', or start a "
                          f"'{training.tuning}' job from the base model.",
                          param="training.tuning", code="invalid_tuning")

    @staticmethod
    def _check_training(request: JobCreateRequest, training: TrainingConfig,
                        lora: LoraConfig | None) -> None:
        """The rules across fields of `training`, `lora` and the validation data."""
        if training.validation_split is not None and request.validation_file:
            raise invalid("training.validation_split holds out part of the training file; it "
                          "cannot be combined with validation_file. Pass one of them.",
                          param="training.validation_split", code="invalid_validation_split")
        if training.early_stopping is not None and not request.validation_file \
                and training.validation_split is None:
            raise invalid("training.early_stopping needs validation data: pass validation_file "
                          "or training.validation_split.",
                          param="training.early_stopping", code="invalid_early_stopping")
        if training.spectrum_fraction is not None and training.tuning != TuningType.SPECTRUM:
            raise invalid(f"training.spectrum_fraction applies to tuning 'spectrum' only; "
                          f"this job's tuning is '{training.tuning}'.",
                          param="training.spectrum_fraction", code="invalid_spectrum_fraction")
        if lora is not None and training.tuning in FULL_WEIGHT_TUNINGS:
            raise invalid(f"`lora` configures an adapter, but training.tuning "
                          f"'{training.tuning}' trains the model's own weights. Leave `lora` "
                          "out, or use tuning 'lora' or 'qlora'.", param="lora",
                          code="invalid_lora")
        if lora is not None and training.tuning == TuningType.QLORA \
                and lora.quantization == Quantization.NONE:
            raise invalid("training.tuning 'qlora' trains on a 4-bit base, but "
                          "lora.quantization is 'none'. Use quantization '4bit' or 'auto', or "
                          "tuning 'lora'.", param="lora.quantization", code="invalid_quantization")

    def _check_max_seq_length(self, base_model: str, training: TrainingConfig) -> None:
        """An explicit max_seq_length the inference servers could not serve is refused: the
        model would be trained on contexts it can never be given."""
        if training.max_seq_length is None:
            return
        limit = min((s.max_model_len for s in self.ctx.settings.inference_servers()
                     if s.base_model == base_model), default=None)
        if limit is not None and training.max_seq_length > limit:
            raise invalid(f"training.max_seq_length {training.max_seq_length} is above {limit}, "
                          f"the longest context (max_model_len) the inference servers for "
                          f"'{base_model}' serve. Use at most {limit}.",
                          param="training.max_seq_length", code="invalid_max_seq_length")

    def _check_servable_rank(self, base_model: str, rank: int) -> None:
        """Refuse a LoRA rank the inference servers could not load, before hours of training
        produce a model that cannot be served."""
        limit = min((s.max_lora_rank for s in self.ctx.settings.inference_servers()
                     if s.base_model == base_model), default=None)
        if limit is not None and rank > limit:
            raise invalid(f"lora.rank {rank} is above {limit}, the largest LoRA rank the "
                          f"inference servers for '{base_model}' load; the fine-tuned model "
                          f"could not be served. Use a rank of at most {limit}.",
                          param="lora.rank", code="invalid_lora_rank")

    def _method_and_hyperparameters(self, request: JobCreateRequest) -> tuple[str, dict[str, Any]]:
        if request.method is not None and request.hyperparameters is not None:
            raise invalid("Pass hyperparameters inside `method` (the top-level `hyperparameters` "
                          "is the deprecated form), not both.", param="hyperparameters")
        method = request.method
        if method is None or method.type == "supervised":
            if method is not None and method.dpo is not None:
                raise invalid("method.dpo is given but method.type is 'supervised'.",
                              param="method.dpo")
            chosen = (method.supervised.hyperparameters if method and method.supervised
                      else request.hyperparameters)
            values = chosen.model_dump() if chosen else {}
            values.pop("beta", None)
            defaults = {"batch_size": "auto", "learning_rate_multiplier": "auto",
                        "n_epochs": "auto"}
            return MethodType.SUPERVISED, {**defaults, **values}
        if method.type == "dpo":
            if method.supervised is not None:
                raise invalid("method.supervised is given but method.type is 'dpo'.",
                              param="method.supervised")
            dpo = method.dpo.hyperparameters if method.dpo else DpoHyperparameters()
            return MethodType.DPO, dpo.model_dump()
        raise invalid("Reinforcement fine-tuning is not supported; use 'supervised' or 'dpo'.",
                      param="method.type", code="unsupported_method")

    async def _check_file(self, session: AsyncSession, principal: Principal, file_id: str,
                          param: str) -> None:
        row = (await session.execute(
            scoped(File, principal.organization_id).where(File.id == file_id)
        )).scalar_one_or_none()
        if row is None:
            raise invalid(f"File '{file_id}' does not exist.", param=param,
                          code="invalid_file_id")
        if row.purpose != FilePurpose.FINE_TUNE:
            raise invalid(f"File '{file_id}' has purpose '{row.purpose}'; fine-tuning needs a "
                          "file uploaded with purpose 'fine-tune'.", param=param,
                          code="invalid_file_purpose")

    async def list(self, principal: Principal, *, after: str | None = None, limit: int = 20,
                   metadata: dict[str, str] | None = None) -> ListPage[FineTuningJobObject]:
        check_limit(limit, 100)
        # A job holds at most 16 metadata pairs, so more filters can match nothing (and a long
        # chain of them makes the SQL expression too deep to compile).
        if metadata and len(metadata) > 16:
            raise invalid(f"At most 16 metadata filters may be given (a job holds at most 16 "
                          f"metadata keys); got {len(metadata)}.",
                          param="metadata", code="too_many_metadata_filters")
        stmt = scoped(Job, principal.organization_id)
        for key, value in (metadata or {}).items():
            stmt = stmt.where(Job.metadata_[key].as_string() == value)
        async with self.ctx.sessions() as session:
            rows, has_more = await fetch_page(session, stmt, Job, after=after, limit=limit)
        return ListPage[FineTuningJobObject](**page([job_object(r) for r in rows], has_more))

    async def _row(self, session: AsyncSession, principal: Principal, job_id: str) -> Job:
        row = (await session.execute(
            scoped(Job, principal.organization_id).where(Job.id == job_id)
        )).scalar_one_or_none()
        if row is None:
            raise not_found("fine-tuning job", job_id, param="fine_tuning_job_id")
        return row

    async def get(self, principal: Principal, job_id: str) -> FineTuningJobObject:
        async with self.ctx.sessions() as session:
            return job_object(await self._row(session, principal, job_id))

    async def cancel(self, principal: Principal, job_id: str) -> FineTuningJobObject:
        row = await self._user_transition(
            principal, job_id, CANCELLABLE, JobStatus.CANCELLED, "Fine-tuning job cancelled",
            verb="cancel", finished_at=now(), estimated_finish=None,
        )
        if row.queue_job_id:
            try:
                await self.ctx.queue.abort(row.queue_job_id)
            except Exception:  # the worker also sees the status between steps
                log.warning("could not abort queue job of %s", job_id, exc_info=True)
        return job_object(row)

    async def pause(self, principal: Principal, job_id: str) -> FineTuningJobObject:
        row = await self._user_transition(
            principal, job_id, (JobStatus.RUNNING,), JobStatus.PAUSED,
            "Fine-tuning job paused: training stops after the current step and saves a "
            "checkpoint",
            verb="pause", estimated_finish=None,
        )
        return job_object(row)

    async def resume(self, principal: Principal, job_id: str) -> FineTuningJobObject:
        """paused → queued with a fresh queue entry, once the paused run has let go of the job.

        A pause reaches the worker within a step, but the worker still saves its checkpoint
        and holds the lease until then; resuming before that would start a second run beside
        the first. So resume waits (up to `resume_wait_seconds`) for the lease to be released
        or to lapse, then refuses with 409."""
        settings = self.ctx.settings
        deadline = time.monotonic() + settings.resume_wait_seconds
        while True:
            async with self.ctx.sessions() as session:
                current = await self._row(session, principal, job_id)
            lease_held = current.lease_owner is not None and (
                current.lease_expires_at or 0) >= now()
            if current.status != JobStatus.PAUSED or not lease_held:
                break
            if time.monotonic() >= deadline:
                raise conflict(f"Cannot resume fine-tuning job {job_id} yet: its worker is "
                               "still stopping and saving a checkpoint. Retry in a few seconds.",
                               code="job_still_stopping")
            await asyncio.sleep(0.2)
        queue_job_id = next_queue_job_id(current.queue_job_id, job_id)
        row = await self._user_transition(
            principal, job_id, (JobStatus.PAUSED,), JobStatus.QUEUED,
            "Fine-tuning job resumed: it continues from its last checkpoint",
            verb="resume", require_free_lease=True, queue_job_id=queue_job_id,
        )
        await self._enqueue(job_id, queue_job_id)
        return job_object(row)

    async def _user_transition(self, principal: Principal, job_id: str,
                               allowed: Iterable[JobStatus], to: JobStatus, message: str, *,
                               verb: str, require_free_lease: bool = False,
                               **values: Any) -> Job:
        async with self.ctx.sessions() as session, session.begin():
            await self._row(session, principal, job_id)  # 404 for another tenant's job
            if not await transition(session, job_id, allowed, to,
                                    require_free_lease=require_free_lease, **values):
                current = (await session.execute(
                    select(Job.status).where(Job.id == job_id))).scalar_one()
                if require_free_lease and current in status_values(allowed):
                    raise conflict(f"Cannot {verb} fine-tuning job {job_id} yet: its worker is "
                                   "still stopping. Retry in a few seconds.",
                                   code="job_still_stopping")
                raise conflict(f"Cannot {verb} fine-tuning job {job_id}: it is {current}.")
            await record_event(session, job_id, message)
        async with self.ctx.sessions() as session:
            return await self._row(session, principal, job_id)

    async def list_events(self, principal: Principal, job_id: str, *, after: str | None = None,
                          limit: int = 20, order: Order = "desc") -> ListPage[JobEventObject]:
        check_limit(limit, 1000)
        async with self.ctx.sessions() as session:
            await self._row(session, principal, job_id)
            rows, has_more = await fetch_page(
                session, select(JobEvent).where(JobEvent.job_id == job_id), JobEvent,
                after=after, limit=limit, order=order)
        return ListPage[JobEventObject](**page([event_object(r) for r in rows], has_more))

    async def list_checkpoints(self, principal: Principal, job_id: str, *,
                               after: str | None = None,
                               limit: int = 10) -> ListPage[CheckpointObject]:
        check_limit(limit, 100)
        async with self.ctx.sessions() as session:
            await self._row(session, principal, job_id)
            rows, has_more = await fetch_page(
                session, select(JobCheckpoint).where(JobCheckpoint.job_id == job_id),
                JobCheckpoint, after=after, limit=limit)
        return ListPage[CheckpointObject](**page([checkpoint_object(r) for r in rows], has_more))

    # ---- the reconciler's side -----------------------------------------------------------

    async def jobs_in(self, statuses: Iterable[JobStatus]) -> list[Job]:
        async with self.ctx.sessions() as session:
            return list((await session.execute(
                select(Job).where(Job.status.in_(status_values(statuses)))
            )).scalars())

    async def requeue(self, job: Job, reason: str) -> str | None:
        """Give a job whose queue entry or worker was lost a fresh queue entry."""
        queue_job_id = next_queue_job_id(job.queue_job_id, job.id)
        moved_to = JobStatus.QUEUED if job.status == JobStatus.RUNNING else JobStatus(job.status)
        async with self.ctx.sessions() as session, session.begin():
            result = await session.execute(
                update(Job).where(Job.id == job.id, Job.status == job.status,
                                  Job.queue_job_id == job.queue_job_id, lease_is_free())
                .values(status=moved_to, queue_job_id=queue_job_id, lease_owner=None,
                        lease_expires_at=None, updated_at=now())
            )
            if result.rowcount != 1:
                return None
            await record_event(session, job.id, reason, level=EventLevel.WARN)
        await self._enqueue(job.id, queue_job_id)
        return queue_job_id

    # ---- helpers ---------------------------------------------------------------------------

    async def _enqueue(self, job_id: str, queue_job_id: str | None) -> None:
        if not queue_job_id:
            return
        try:
            await self.ctx.queue.enqueue(queue_job_id, job_id)
        except Exception:  # the reconciler re-enqueues it once the queue is back
            log.warning("could not enqueue %s; the reconciler will retry", job_id, exc_info=True)
