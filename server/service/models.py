"""Models: the configured base models plus each organization's fine-tuned models."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, delete, exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.auth import Principal
from server.db.models import FineTunedModel, Job, JobCheckpoint, ServingRequest
from server.service.context import Context
from server.service.objects import ListPage, ModelDeleted, ModelObject, page
from server.service.parents import job_tuning
from tuneforge.domain import UNPUBLISHED_STATUSES, now
from tuneforge.errors import ApiError, not_found
from tuneforge.layout import adapter_prefix, checkpoint_prefix, merged_prefix
from tuneforge.model_card import ModelCard, model_card

BASE_OWNER = "tuneforge"
# A base model card whose files could not all be read (S3 down, the embedded model not yet
# converted) is read again after this long; a complete one is kept for the process's life.
CARD_RETRY_SECONDS = 30.0
# A request waits this long for a card being read; then it shows what is known so far.
CARD_WAIT_SECONDS = 6.0

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServableModel:
    """A model inference can be routed to: a base model (no adapter), a fine-tuned model or a
    checkpoint (a PEFT adapter under `adapter_prefix` in S3)."""

    id: str
    base_model: str
    adapter_prefix: str | None
    created_at: int
    # "adapter" (a PEFT adapter under adapter_prefix) or "full": full weights (full/Spectrum
    # jobs) under that prefix, served by a vLLM server of their own.
    kind: str = "adapter"


FULL_TUNINGS = ("full", "spectrum")


def _trained(resolved: dict[str, Any] | None, requested: dict[str, Any] | None) -> str:
    """A job's tuning as the worker resolved it, else as requested (as `job_tuning`)."""
    for values in (resolved, requested):
        tuning = (values or {}).get("tuning")
        if tuning and tuning != "auto":
            return str(tuning)
    return "lora"


def _servable(model_id: str, base_model: str, job_id: str, created_at: int,
              tuning: str | None) -> ServableModel:
    if tuning in FULL_TUNINGS:
        return ServableModel(model_id, base_model, merged_prefix(job_id), created_at,
                             kind="full")
    return ServableModel(model_id, base_model, adapter_prefix(job_id), created_at)


@dataclass(frozen=True)
class ServingAsk:
    """A worker's serving request (`serving_requests` row) and the status of its job."""

    id: str
    model: str
    base_model: str
    adapter_prefix: str
    requested_at: float
    ready_at: float | None
    error: str | None
    job_status: str
    # The job, and the request (id and W3C traceparent) that created it: the hot-load's log
    # lines and span carry them.
    job_id: str | None = None
    request_id: str | None = None
    traceparent: str | None = None
    kind: str = "adapter"  # or "full": adapter_prefix holds full weights


def _tuned_object(row: FineTunedModel, job_parent: dict[str, Any] | None) -> ModelObject:
    """A fine-tuned model with its lineage: the worker records the parent on the model row;
    the job's parent stands in for rows written before it did."""
    parent = row.parent_model or (job_parent or {}).get("model")
    return ModelObject(id=row.id, created=row.created_at, owned_by=row.organization_id,
                       base_model=row.base_model, tuning=row.tuning or "lora", parent=parent)


class ModelService:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._started = int(time.time())
        # Called with the model id after a successful delete (the serving plane unloads it).
        self.on_delete: list[Callable[[str], Awaitable[None]]] = []
        self._cards: dict[str, tuple[ModelCard, float]] = {}
        self._reading: dict[str, asyncio.Task[ModelCard]] = {}

    async def card(self, name: str) -> ModelCard:
        """What base model `name` supports (`tuneforge.model_card`), read once per process:
        an incomplete card is read again after CARD_RETRY_SECONDS, and a read that takes
        longer than CARD_WAIT_SECONDS answers with what is known (it goes on, and the next
        request gets its result)."""
        cached = self._cards.get(name)
        if cached is not None and (cached[0].complete
                                   or time.monotonic() - cached[1] < CARD_RETRY_SECONDS):
            return cached[0]
        task = self._reading.get(name)
        if task is None:
            task = asyncio.create_task(asyncio.to_thread(model_card, self.ctx.settings, name))
            self._reading[name] = task
            task.add_done_callback(lambda t, n=name: self._card_read(n, t))
        try:
            return await asyncio.wait_for(asyncio.shield(task), CARD_WAIT_SECONDS)
        except TimeoutError:
            return cached[0] if cached is not None else ModelCard(complete=False)
        except Exception:
            log.warning("could not read the model card of %s", name, exc_info=True)
            return ModelCard(complete=False)

    def _card_read(self, name: str, task: asyncio.Task[ModelCard]) -> None:
        self._reading.pop(name, None)
        if not task.cancelled() and task.exception() is None:
            self._cards[name] = (task.result(), time.monotonic())

    async def _base_models(self) -> list[ModelObject]:
        names = [m.name for m in self.ctx.settings.base_models]
        cards = await asyncio.gather(*(self.card(name) for name in names))
        return [ModelObject(id=name, created=self._started, owned_by=BASE_OWNER,
                            **card.fields())
                for name, card in zip(names, cards, strict=True)]

    def _is_base(self, model_id: str) -> bool:
        return self.ctx.settings.base_model(model_id) is not None

    async def list(self, principal: Principal) -> ListPage[ModelObject]:
        async with self.ctx.sessions() as session:
            rows = (await session.execute(
                select(FineTunedModel, Job.parent).join(Job, Job.id == FineTunedModel.job_id)
                .where(FineTunedModel.organization_id == principal.organization_id,
                       FineTunedModel.deleted_at.is_(None))
                .order_by(FineTunedModel.seq)
            )).all()
            tuned = [_tuned_object(r.FineTunedModel, r.parent) for r in rows]
        return ListPage[ModelObject](**page(await self._base_models() + tuned, False))

    async def get(self, principal: Principal, model_id: str) -> ModelObject:
        if self._is_base(model_id):
            card = await self.card(model_id)
            return ModelObject(id=model_id, created=self._started, owned_by=BASE_OWNER,
                               **card.fields())
        async with self.ctx.sessions() as session:
            row = (await session.execute(
                select(FineTunedModel, Job.parent).join(Job, Job.id == FineTunedModel.job_id)
                .where(FineTunedModel.organization_id == principal.organization_id,
                       FineTunedModel.id == model_id, FineTunedModel.deleted_at.is_(None))
            )).one_or_none()
            if row is not None:
                return _tuned_object(row.FineTunedModel, row.parent)
            found = (await session.execute(
                select(JobCheckpoint, Job).join(Job, Job.id == JobCheckpoint.job_id)
                .where(~_model_deleted(Job.id))
                .where(Job.organization_id == principal.organization_id,
                       JobCheckpoint.fine_tuned_model_checkpoint == model_id)
            )).one_or_none()
        if found is None:
            raise not_found("model", model_id, param="model")
        checkpoint, job = found
        return ModelObject(id=model_id, created=checkpoint.created_at,
                           owned_by=principal.organization_id,
                           base_model=job.base_model or job.model, tuning=job_tuning(job),
                           parent=(job.parent or {}).get("model"))

    async def delete(self, principal: Principal, model_id: str) -> ModelDeleted:
        if self._is_base(model_id):
            raise ApiError(403, f"Base model '{model_id}' cannot be deleted.",
                           type="permission_error", param="model", code="model_not_deletable")
        async with self.ctx.sessions() as session, session.begin():
            result = await session.execute(
                update(FineTunedModel).where(
                    FineTunedModel.id == model_id,
                    FineTunedModel.organization_id == principal.organization_id,
                    FineTunedModel.deleted_at.is_(None),
                ).values(deleted_at=now())
            )
            if result.rowcount != 1:
                raise not_found("model", model_id, param="model")
        for listener in self.on_delete:
            try:
                await listener(model_id)
            except Exception:
                log.warning("on_delete hook failed for %s", model_id, exc_info=True)
        return ModelDeleted(id=model_id, deleted=True)

    # ---- for the serving plane ---------------------------------------------------------

    async def servable(self, principal: Principal, model_id: str) -> ServableModel:
        """The model `model_id` for inference: a base model (open to every tenant), or a
        fine-tuned model or checkpoint of the caller's organization (a fine-tuned model from
        the moment the serving plane loaded it, before its job reports succeeded); else 404."""
        base = self.ctx.settings.base_model(model_id)
        if base is not None:
            return ServableModel(model_id, model_id, None, self._started)
        if model_id.startswith("ft:"):
            async with self.ctx.sessions() as session:
                row = (await session.execute(
                    select(FineTunedModel.base_model, FineTunedModel.job_id,
                           FineTunedModel.created_at, FineTunedModel.deleted_at,
                           FineTunedModel.tuning)
                    .where(FineTunedModel.id == model_id,
                           FineTunedModel.organization_id == principal.organization_id)
                )).one_or_none()
                if row is not None:
                    if row.deleted_at is not None:
                        raise not_found("model", model_id, param="model")
                    return _servable(model_id, row.base_model, row.job_id,
                                     row.created_at, row.tuning)
                found: Mapping[str, ServableModel | None] = await self._checkpoints(
                    session, [model_id], principal.organization_id)
                if model_id not in found:  # loaded before its job reports succeeded
                    found = await self._requested(session, [model_id], principal.organization_id,
                                                  ready_only=True)
            model = found.get(model_id)
            if model is not None:
                return model
        raise not_found("model", model_id, param="model")

    async def servable_models(self, base_model: str, limit: int) -> list[ServableModel]:
        """Every organization's fine-tuned models of `base_model` not deleted, newest first."""
        async with self.ctx.sessions() as session:
            rows = (await session.execute(
                select(FineTunedModel.id, FineTunedModel.job_id, FineTunedModel.created_at,
                       FineTunedModel.tuning)
                .where(FineTunedModel.base_model == base_model,
                       FineTunedModel.deleted_at.is_(None))
                .order_by(FineTunedModel.seq.desc()).limit(limit)
            )).all()
        return [_servable(r.id, base_model, r.job_id, r.created_at, r.tuning) for r in rows]

    async def servable_states(self, ids: Collection[str]) -> dict[str, ServableModel | None]:
        """For each of `ids` that exists: the servable model, or None if it was deleted."""
        ids = list(ids)
        result: dict[str, ServableModel | None] = {}
        async with self.ctx.sessions() as session:
            for row in (await session.execute(
                select(FineTunedModel).where(FineTunedModel.id.in_(ids))
            )).scalars():
                result[row.id] = None if row.deleted_at is not None else _servable(
                    row.id, row.base_model, row.job_id, row.created_at, row.tuning)
            rest = [i for i in ids if i not in result]
            if rest:
                result.update(await self._checkpoints(session, rest, None))
                result.update(dict.fromkeys((await session.execute(  # gone with their model
                    select(JobCheckpoint.fine_tuned_model_checkpoint)
                    .where(JobCheckpoint.fine_tuned_model_checkpoint.in_(rest),
                           _model_deleted(JobCheckpoint.job_id)))).scalars()))
            rest = [i for i in rest if i not in result]
            if rest:
                result.update(await self._requested(session, rest, None, ready_only=False))
        return result

    async def _requested(self, session: AsyncSession, ids: list[str],
                         organization_id: str | None, *,
                         ready_only: bool) -> dict[str, ServableModel | None]:
        """Models a worker asked to serve before its job succeeded: servable while the job has
        not ended cancelled or failed (None after that), and the load was not refused.
        `ready_only`: only once the plane answered that they are loaded."""
        stmt = (select(ServingRequest.model, ServingRequest.base_model,
                       ServingRequest.adapter_prefix, ServingRequest.requested_at,
                       ServingRequest.ready_at, ServingRequest.kind, Job.status)
                .join(Job, Job.id == ServingRequest.job_id)
                .where(ServingRequest.model.in_(ids), ServingRequest.error.is_(None))
                .order_by(ServingRequest.seq))
        if organization_id is not None:
            stmt = stmt.where(Job.organization_id == organization_id)
        if ready_only:
            stmt = stmt.where(ServingRequest.ready_at.is_not(None))
        result: dict[str, ServableModel | None] = {}
        for row in (await session.execute(stmt)).all():  # the newest request wins
            result[row.model] = None if row.status in UNPUBLISHED_STATUSES else ServableModel(
                row.model, row.base_model, row.adapter_prefix, int(row.requested_at),
                kind=row.kind)
        return result

    # ---- serving requests (the worker writes them; the serving plane answers) -------------

    async def serving_asks(self, base_models: Collection[str]) -> list[ServingAsk]:
        """Every serving request for one of `base_models`, oldest first. The plane polls this
        several times a second; the table stays small because the plane drops a request once
        its job has ended."""
        async with self.ctx.sessions() as session:
            rows = (await session.execute(
                select(ServingRequest.id, ServingRequest.model, ServingRequest.base_model,
                       ServingRequest.adapter_prefix, ServingRequest.requested_at,
                       ServingRequest.ready_at, ServingRequest.error, Job.status,
                       ServingRequest.job_id, Job.request_id, Job.traceparent,
                       ServingRequest.kind)
                .join(Job, Job.id == ServingRequest.job_id)
                .where(ServingRequest.base_model.in_(list(base_models)))
                .order_by(ServingRequest.seq)
            )).all()
        return [ServingAsk(r.id, r.model, r.base_model, r.adapter_prefix, r.requested_at,
                           r.ready_at, r.error, r.status, r.job_id, r.request_id,
                           r.traceparent, r.kind) for r in rows]

    async def answer_serving(self, request_id: str, *, ready_at: float, replicas: int) -> None:
        await self._settle(request_id, ready_at=ready_at, replicas=replicas)

    async def refuse_serving(self, request_id: str, error: str) -> None:
        await self._settle(request_id, error=error)

    async def _settle(self, request_id: str, **values: object) -> None:
        """Answer a request once: a second answer (another API process) changes nothing."""
        async with self.ctx.sessions() as session, session.begin():
            await session.execute(
                update(ServingRequest).where(
                    ServingRequest.id == request_id, ServingRequest.ready_at.is_(None),
                    ServingRequest.error.is_(None)).values(**values))

    async def drop_serving(self, request_ids: Collection[str]) -> None:
        if not request_ids:
            return
        async with self.ctx.sessions() as session, session.begin():
            await session.execute(
                delete(ServingRequest).where(ServingRequest.id.in_(list(request_ids))))

    async def _checkpoints(self, session: AsyncSession, ids: list[str],
                           organization_id: str | None) -> dict[str, ServableModel]:
        stmt = (select(JobCheckpoint.fine_tuned_model_checkpoint, JobCheckpoint.job_id,
                       JobCheckpoint.step_number, JobCheckpoint.created_at,
                       func.coalesce(Job.base_model, Job.model).label("base"),
                       Job.resolved_training, Job.training)
                .join(Job, Job.id == JobCheckpoint.job_id)
                .where(JobCheckpoint.fine_tuned_model_checkpoint.in_(ids),
                       ~_model_deleted(Job.id)))
        if organization_id is not None:
            stmt = stmt.where(Job.organization_id == organization_id)
        return {
            row.fine_tuned_model_checkpoint: ServableModel(
                row.fine_tuned_model_checkpoint, row.base,
                checkpoint_prefix(row.job_id, row.step_number), row.created_at,
                kind="full" if _trained(row.resolved_training, row.training) in FULL_TUNINGS
                else "adapter")
            for row in (await session.execute(stmt)).all()
        }


def _model_deleted(job_id: Any) -> ColumnElement[bool]:
    """Whether the model of job `job_id` was deleted: its checkpoints went with it."""
    return exists().where(FineTunedModel.job_id == job_id,
                          FineTunedModel.deleted_at.is_not(None))
