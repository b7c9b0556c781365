"""Models: the configured base models plus each organization's fine-tuned models."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.auth import Principal
from server.db.models import FineTunedModel, Job, JobCheckpoint
from server.errors import ApiError, not_found
from server.service.context import Context
from server.service.objects import ListPage, ModelDeleted, ModelObject, page
from server.service.pagination import scoped
from tuneforge.domain import job_prefix, now

BASE_OWNER = "tuneforge"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServableModel:
    """A model inference can be routed to: a base model (no adapter), a fine-tuned model or a
    checkpoint (a PEFT adapter under `adapter_prefix` in S3)."""

    id: str
    base_model: str
    adapter_prefix: str | None
    created_at: int


class ModelService:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._started = int(time.time())
        # Called with the model id after a successful delete (the serving plane unloads it).
        self.on_delete: list[Callable[[str], Awaitable[None]]] = []

    def _base_models(self) -> list[ModelObject]:
        return [ModelObject(id=m.name, created=self._started, owned_by=BASE_OWNER)
                for m in self.ctx.settings.base_models]

    async def list(self, principal: Principal) -> ListPage[ModelObject]:
        async with self.ctx.sessions() as session:
            rows = (await session.execute(
                scoped(FineTunedModel, principal.organization_id)
                .where(FineTunedModel.deleted_at.is_(None)).order_by(FineTunedModel.seq)
            )).scalars()
            tuned = [ModelObject(id=r.id, created=r.created_at, owned_by=r.organization_id)
                     for r in rows]
        return ListPage[ModelObject](**page(self._base_models() + tuned, False))

    async def get(self, principal: Principal, model_id: str) -> ModelObject:
        base = next((m for m in self._base_models() if m.id == model_id), None)
        if base is not None:
            return base
        async with self.ctx.sessions() as session:
            row = (await session.execute(
                scoped(FineTunedModel, principal.organization_id)
                .where(FineTunedModel.id == model_id, FineTunedModel.deleted_at.is_(None))
            )).scalar_one_or_none()
            if row is not None:
                return ModelObject(id=row.id, created=row.created_at, owned_by=row.organization_id)
            checkpoint = (await session.execute(
                select(JobCheckpoint).join(Job, Job.id == JobCheckpoint.job_id)
                .where(Job.organization_id == principal.organization_id,
                       JobCheckpoint.fine_tuned_model_checkpoint == model_id)
            )).scalar_one_or_none()
        if checkpoint is None:
            raise not_found("model", model_id, param="model")
        return ModelObject(id=model_id, created=checkpoint.created_at,
                           owned_by=principal.organization_id)

    async def delete(self, principal: Principal, model_id: str) -> ModelDeleted:
        if any(m.id == model_id for m in self._base_models()):
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
        fine-tuned model or checkpoint of the caller's organization; else 404."""
        base = self.ctx.settings.base_model(model_id)
        if base is not None:
            return ServableModel(model_id, model_id, None, self._started)
        if model_id.startswith("ft:"):
            async with self.ctx.sessions() as session:
                row = (await session.execute(
                    select(FineTunedModel.base_model, FineTunedModel.job_id,
                           FineTunedModel.created_at)
                    .where(FineTunedModel.id == model_id,
                           FineTunedModel.organization_id == principal.organization_id,
                           FineTunedModel.deleted_at.is_(None))
                )).one_or_none()
                if row is not None:
                    return ServableModel(model_id, row.base_model,
                                         f"{job_prefix(row.job_id)}/adapter", row.created_at)
                found = await self._checkpoints(session, [model_id], principal.organization_id)
            if model_id in found:
                return found[model_id]
        raise not_found("model", model_id, param="model")

    async def servable_models(self, base_model: str, limit: int) -> list[ServableModel]:
        """Every organization's fine-tuned models of `base_model` not deleted, newest first."""
        async with self.ctx.sessions() as session:
            rows = (await session.execute(
                select(FineTunedModel.id, FineTunedModel.job_id, FineTunedModel.created_at)
                .where(FineTunedModel.base_model == base_model,
                       FineTunedModel.deleted_at.is_(None))
                .order_by(FineTunedModel.seq.desc()).limit(limit)
            )).all()
        return [ServableModel(r.id, base_model, f"{job_prefix(r.job_id)}/adapter",
                              r.created_at) for r in rows]

    async def servable_states(self, ids: Collection[str]) -> dict[str, ServableModel | None]:
        """For each of `ids` that exists: the servable model, or None if it was deleted."""
        ids = list(ids)
        result: dict[str, ServableModel | None] = {}
        async with self.ctx.sessions() as session:
            for row in (await session.execute(
                select(FineTunedModel).where(FineTunedModel.id.in_(ids))
            )).scalars():
                result[row.id] = None if row.deleted_at is not None else ServableModel(
                    row.id, row.base_model, f"{job_prefix(row.job_id)}/adapter",
                    row.created_at)
            rest = [i for i in ids if i not in result]
            if rest:
                result.update(await self._checkpoints(session, rest, None))
        return result

    async def _checkpoints(self, session: AsyncSession, ids: list[str],
                           organization_id: str | None) -> dict[str, ServableModel]:
        stmt = (select(JobCheckpoint.fine_tuned_model_checkpoint, JobCheckpoint.job_id,
                       JobCheckpoint.step_number, JobCheckpoint.created_at, Job.model)
                .join(Job, Job.id == JobCheckpoint.job_id)
                .where(JobCheckpoint.fine_tuned_model_checkpoint.in_(ids)))
        if organization_id is not None:
            stmt = stmt.where(Job.organization_id == organization_id)
        return {
            row.fine_tuned_model_checkpoint: ServableModel(
                row.fine_tuned_model_checkpoint, row.model,
                f"{job_prefix(row.job_id)}/checkpoints/step-{row.step_number}", row.created_at)
            for row in (await session.execute(stmt)).all()
        }
