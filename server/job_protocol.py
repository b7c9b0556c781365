"""The worker's job protocol: how a worker takes a job, keeps it, moves it and records what
its run produced. The worker imports this module (with `server.db` and `server.storage`)
and nothing of the public service layer.

A worker holds a job under a lease in the DB (`claim`, renewed by `heartbeat`) and every
write of its run is fenced by that lease: the write's own transaction locks the job row and
checks the lease (`fence`), so a run whose lease was taken writes nothing (`LeaseLost`).
Every transition is one transaction whose UPDATE is guarded by the current status, so two
actors (a user's cancel, a worker's finish) can never both win. The transition and event
helpers below are the ones the public `JobService` uses too.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.db.models import File, FineTunedModel, Job, JobCheckpoint, JobEvent, ServingRequest
from server.webhook_outbox import enqueue_job_event
from tuneforge.domain import (
    ACTIVE_STATUSES,
    DpoHyperparameters,
    EventLevel,
    EventType,
    FilePurpose,
    Integration,
    JobSpec,
    JobStatus,
    LoraConfig,
    MethodType,
    ParentModel,
    TrackingRun,
    TrainingConfig,
    new_id,
    now,
)
from tuneforge.settings import Settings


class LeaseLost(Exception):
    """The worker no longer holds the job's lease: another worker, or nobody, owns it now.
    Nothing the old run would write may land."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"lost the lease on {job_id}")
        self.job_id = job_id


@dataclass(frozen=True)
class ResultsFile:
    """The results file a successful run records with its success (its object already in S3)."""

    file_id: str
    filename: str
    size: int


@dataclass(frozen=True)
class ServingState:
    """The serving plane's answer to a serving request: `ready_at` once every replica loaded
    the model, `error` when a replica refused it; both None while it is pending."""

    requested_at: float
    ready_at: float | None
    replicas: int | None
    error: str | None


# ---- helpers shared with the public service layer ------------------------------------------


def status_values(statuses: Iterable[JobStatus]) -> list[str]:
    return [s.value for s in statuses]


def holds_lease(worker_id: str) -> tuple[Any, ...]:
    """WHERE clauses: `worker_id` still holds the job's lease. Every takeover (another
    worker's claim, the reconciler's requeue, a release) changes the owner in one guarded
    UPDATE, so the owner alone decides; a lapse only lets someone take over. A worker whose
    heartbeat came late but whom nobody replaced keeps its job instead of restarting it."""
    return (Job.lease_owner == worker_id,)


def lease_is_free() -> Any:
    """WHERE clause: nobody holds a live lease on the job."""
    return Job.lease_owner.is_(None) | (Job.lease_expires_at < now())


async def transition(session: AsyncSession, job_id: str, allowed: Iterable[JobStatus],
                     to: JobStatus, *, worker_id: str | None = None,
                     require_free_lease: bool = False, **values: Any) -> bool:
    """One guarded UPDATE: the job moves to `to` only from an `allowed` status (and, with
    `worker_id`, only while that worker holds the lease). Returns whether it moved. A move to
    an end (or to paused) writes its webhook deliveries in the same transaction."""
    stmt = update(Job).where(Job.id == job_id, Job.status.in_(status_values(allowed)))
    if worker_id is not None:
        stmt = stmt.where(*holds_lease(worker_id))
    if require_free_lease:
        stmt = stmt.where(lease_is_free())
    result = await session.execute(stmt.values(status=to, updated_at=now(), **values))
    if result.rowcount != 1:
        return False
    await enqueue_job_event(session, job_id, to)  # the webhook outbox, in this transaction
    return True


async def fence(session: AsyncSession, job_id: str, worker_id: str | None) -> None:
    """Inside a worker's write transaction: lock the job row and check the lease, so the
    write commits only while `worker_id` holds a live lease (a no-op without worker_id)."""
    if worker_id is None:
        return
    result = await session.execute(
        update(Job).where(Job.id == job_id, *holds_lease(worker_id))
        .values(lease_owner=worker_id))
    if result.rowcount != 1:
        raise LeaseLost(job_id)


async def record_event(session: AsyncSession, job_id: str, message: str, *,
                       level: EventLevel = EventLevel.INFO, type: EventType = EventType.MESSAGE,
                       data: dict[str, Any] | None = None) -> None:
    session.add(JobEvent(id=new_id("ftevent-"), job_id=job_id, level=level, type=type,
                         message=message, data=data))
    await session.flush()


# ---- the protocol ----------------------------------------------------------------------------


class JobProtocol:
    """The worker's side of a job (trusted callers: no tenant check). Methods that take a
    `worker_id` write only while that worker holds the job's lease."""

    def __init__(self, sessions: async_sessionmaker, settings: Settings) -> None:
        self.sessions = sessions
        self.lease_seconds = settings.worker_lease_seconds

    async def spec(self, job_id: str) -> JobSpec | None:
        async with self.sessions() as session:
            row = (await session.execute(select(Job).where(Job.id == job_id))).scalar_one_or_none()
        if row is None:
            return None
        return JobSpec(
            job_id=row.id, organization_id=row.organization_id, model=row.model,
            method=MethodType(row.method), training_file=row.training_file,
            validation_file=row.validation_file,
            hyperparameters=DpoHyperparameters(**row.hyperparameters),
            lora=LoraConfig(**row.lora), seed=row.seed, suffix=row.suffix,
            base_model=row.base_model or row.model,
            training=TrainingConfig(**(row.training or {})),
            parent=ParentModel(**row.parent) if row.parent else None,
            integrations=[Integration(**i) for i in row.integrations or []],
            tracking_runs=[TrackingRun(**r) for r in row.tracking_runs or []],
        )

    async def origin(self, job_id: str) -> tuple[str | None, str | None]:
        """The request id and the W3C `traceparent` of the request that created the job (for
        the worker's log context and spans); (None, None) when unknown."""
        async with self.sessions() as session:
            row = (await session.execute(
                select(Job.request_id, Job.traceparent).where(Job.id == job_id))).one_or_none()
        return (row.request_id, row.traceparent) if row is not None else (None, None)

    async def status(self, job_id: str) -> JobStatus | None:
        async with self.sessions() as session:
            value = (await session.execute(
                select(Job.status).where(Job.id == job_id))).scalar_one_or_none()
        return JobStatus(value) if value else None

    # ---- the lease ----------------------------------------------------------------------

    async def claim(self, job_id: str, worker_id: str, lease_seconds: int | None = None) -> bool:
        """Take the job's lease if nobody else holds a live one. A job never trains on two
        workers at once: only the lease holder may move it forward."""
        t = now()
        seconds = self.lease_seconds if lease_seconds is None else lease_seconds
        async with self.sessions() as session, session.begin():
            result = await session.execute(
                update(Job).where(
                    Job.id == job_id,
                    Job.status.in_(status_values(ACTIVE_STATUSES)),
                    (Job.lease_owner.is_(None)) | (Job.lease_expires_at < t)
                    | (Job.lease_owner == worker_id),
                ).values(lease_owner=worker_id, lease_expires_at=t + seconds)
            )
            return result.rowcount == 1

    async def heartbeat(self, job_id: str, worker_id: str,
                        lease_seconds: int | None = None) -> JobStatus | None:
        """Renew the lease; returns the job's status, or None if the lease was lost (taken
        over by another worker or the reconciler, or released)."""
        seconds = self.lease_seconds if lease_seconds is None else lease_seconds
        async with self.sessions() as session, session.begin():
            result = await session.execute(
                update(Job).where(Job.id == job_id, *holds_lease(worker_id))
                .values(lease_expires_at=now() + seconds)
            )
            if result.rowcount != 1:
                return None
            value = (await session.execute(select(Job.status).where(Job.id == job_id))).scalar_one()
        return JobStatus(value)

    async def control(self, job_id: str, worker_id: str) -> JobStatus | None:
        """What a running worker polls between heartbeats: the job's status, or None when it
        no longer holds the lease. One indexed read (a write only to renew a lapsed lease)."""
        async with self.sessions() as session:
            row = (await session.execute(
                select(Job.status, Job.lease_owner, Job.lease_expires_at).where(Job.id == job_id)
            )).one_or_none()
        if row is None or row.lease_owner != worker_id:
            return None
        if (row.lease_expires_at or 0) < now():  # lapsed, but nobody took over: renew it
            return await self.heartbeat(job_id, worker_id)
        return JobStatus(row.status)

    async def release(self, job_id: str, worker_id: str) -> None:
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(Job).where(Job.id == job_id, Job.lease_owner == worker_id)
                .values(lease_owner=None, lease_expires_at=None)
            )

    # ---- transitions --------------------------------------------------------------------

    async def advance(self, job_id: str, allowed: Iterable[JobStatus], to: JobStatus, *,
                      message: str | None = None, worker_id: str | None = None,
                      **values: Any) -> bool:
        """Guarded transition from the worker; with `worker_id`, only while holding the lease."""
        async with self.sessions() as session, session.begin():
            ok = await transition(session, job_id, allowed, to, worker_id=worker_id, **values)
            if ok and message:
                await record_event(session, job_id, message)
            return ok

    async def update_progress(self, job_id: str, *, worker_id: str | None = None,
                              **values: Any) -> None:
        """Non-status fields a running job keeps current (trained_tokens, estimated_finish,
        resolved_hyperparameters, resolved_training). With `worker_id`, only while holding
        the lease."""
        async with self.sessions() as session, session.begin():
            stmt = update(Job).where(Job.id == job_id)
            if worker_id is not None:
                stmt = stmt.where(*holds_lease(worker_id))
            result = await session.execute(stmt.values(**values))
            if worker_id is not None and result.rowcount != 1:
                raise LeaseLost(job_id)

    async def succeed(self, job_id: str, *, fine_tuned_model: str, result_files: list[str],
                      trained_tokens: int | None, worker_id: str | None = None,
                      results_file: ResultsFile | None = None, tuning: str = "lora",
                      parent_model: str | None = None) -> bool:
        """running → succeeded, the model servable and its results file recorded, all in one
        transaction: a run that loses the race (cancel, pause, lost lease) records nothing.
        The model records its base (the job's served base model, also when the job started
        from a fine-tuned parent), the tuning type that trained it and that parent."""
        if results_file is not None:
            result_files = [*result_files, results_file.file_id]
        async with self.sessions() as session, session.begin():
            ok = await transition(
                session, job_id, (JobStatus.RUNNING,), JobStatus.SUCCEEDED, worker_id=worker_id,
                fine_tuned_model=fine_tuned_model, result_files=result_files,
                trained_tokens=trained_tokens, finished_at=now(), estimated_finish=None,
                lease_owner=None, lease_expires_at=None,
            )
            if not ok:
                return False
            row = (await session.execute(select(Job).where(Job.id == job_id))).scalar_one()
            session.add(FineTunedModel(id=fine_tuned_model, organization_id=row.organization_id,
                                       job_id=job_id, base_model=row.base_model or row.model,
                                       tuning=tuning, parent_model=parent_model))
            if results_file is not None:
                session.add(File(id=results_file.file_id, organization_id=row.organization_id,
                                 filename=results_file.filename,
                                 purpose=FilePurpose.FINE_TUNE_RESULTS,
                                 bytes=results_file.size, status="processed"))
            await record_event(session, job_id, "The job has successfully completed")
            return True

    async def fail(self, job_id: str, *, code: str, message: str, param: str | None = None,
                   worker_id: str | None = None) -> bool:
        active = (*ACTIVE_STATUSES, JobStatus.PAUSED)
        async with self.sessions() as session, session.begin():
            ok = await transition(
                session, job_id, active, JobStatus.FAILED, worker_id=worker_id,
                error={"code": code, "message": message, "param": param}, finished_at=now(),
                estimated_finish=None, lease_owner=None, lease_expires_at=None,
            )
            if ok:
                await record_event(session, job_id, f"Fine-tuning job failed: {message}",
                                   level=EventLevel.ERROR)
            return ok

    # ---- what a run records -------------------------------------------------------------

    async def add_event(self, job_id: str, message: str, *, level: EventLevel = EventLevel.INFO,
                        type: EventType = EventType.MESSAGE,
                        data: dict[str, Any] | None = None,
                        worker_id: str | None = None) -> None:
        """With `worker_id`, written only while that worker holds the lease (else LeaseLost)."""
        async with self.sessions() as session, session.begin():
            await fence(session, job_id, worker_id)
            await record_event(session, job_id, message, level=level, type=type, data=data)

    async def add_tracking_run(self, job_id: str, run: TrackingRun, message: str, *,
                               worker_id: str | None = None) -> None:
        """Show a tracker run on the job (replacing an earlier one of the same integration)
        and say so in an event, in one transaction."""
        async with self.sessions() as session, session.begin():
            await fence(session, job_id, worker_id)
            row = (await session.execute(select(Job).where(Job.id == job_id))).scalar_one()
            runs = [r for r in row.tracking_runs or [] if r.get("index") != run.index]
            row.tracking_runs = sorted([*runs, run.model_dump(mode="json")],
                                       key=lambda r: r["index"])
            await record_event(session, job_id, message,
                               data={"tracking_run": run.model_dump(mode="json",
                                                                    exclude={"index"})})

    async def add_checkpoint(self, job_id: str, *, step: int, metrics: dict[str, Any],
                             model_name: str, worker_id: str | None = None) -> JobCheckpoint:
        row = JobCheckpoint(id=new_id("ftckpt-"), job_id=job_id, step_number=step,
                            metrics=metrics, fine_tuned_model_checkpoint=model_name)
        async with self.sessions() as session, session.begin():
            await fence(session, job_id, worker_id)
            session.add(row)
        return row

    async def checkpoints(self, job_id: str) -> list[JobCheckpoint]:
        """The job's checkpoints, oldest first."""
        async with self.sessions() as session:
            return list((await session.execute(
                select(JobCheckpoint).where(JobCheckpoint.job_id == job_id)
                .order_by(JobCheckpoint.step_number)
            )).scalars())

    async def remove_checkpoint(self, checkpoint_id: str, *, job_id: str | None = None,
                                worker_id: str | None = None) -> None:
        async with self.sessions() as session, session.begin():
            if job_id is not None:
                await fence(session, job_id, worker_id)
            await session.execute(delete(JobCheckpoint).where(JobCheckpoint.id == checkpoint_id))

    # ---- serving ------------------------------------------------------------------------

    async def request_serving(self, job_id: str, worker_id: str, *, model: str, base_model: str,
                              adapter_prefix: str, kind: str = "adapter") -> str:
        """Ask the serving plane (in the API process, the only writer of vLLM's adapter sets)
        to serve `model`: kind "adapter" loads the PEFT adapter at S3 `adapter_prefix` on
        every replica of `base_model`; kind "full" serves the full weights at that prefix
        (`jobs/{id}/merged/`) on a server of their own. Written only while `worker_id` holds
        the job's lease. Returns the request's id."""
        request_id = new_id("srv-")
        async with self.sessions() as session, session.begin():
            await fence(session, job_id, worker_id)
            session.add(ServingRequest(id=request_id, job_id=job_id, model=model,
                                       base_model=base_model, adapter_prefix=adapter_prefix,
                                       kind=kind, requested_at=time.time()))
        return request_id

    async def serving_state(self, request_id: str) -> ServingState | None:
        async with self.sessions() as session:
            row = (await session.execute(
                select(ServingRequest.requested_at, ServingRequest.ready_at,
                       ServingRequest.replicas, ServingRequest.error)
                .where(ServingRequest.id == request_id)
            )).one_or_none()
        if row is None:
            return None
        return ServingState(requested_at=row.requested_at, ready_at=row.ready_at,
                            replicas=row.replicas, error=row.error)
