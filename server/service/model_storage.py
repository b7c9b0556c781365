"""Deleted models give their storage back: the adapter, merged weights and checkpoints of a
model deleted with `DELETE /v1/models/{id}` are removed from object storage.

The delete itself only marks the row (one transaction) and unloads the model; the objects go
afterwards, here, once nothing needs them: not while a job that has not ended trains from the
model or one of its checkpoints (its worker reads the parent's weights when it starts and when
it resumes). A removal that S3 refuses, or one that must wait for such a job, is owed
(`storage_freed_at` NULL) and the API's reconciler pays it on a later pass.
"""

from __future__ import annotations

import logging

from sqlalchemy import select, update

from server.db.models import FineTunedModel, Job
from server.service.context import Context
from tuneforge.domain import TERMINAL_STATUSES, now
from tuneforge.layout import model_prefixes

log = logging.getLogger(__name__)


class ModelStorage:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def free(self, model_id: str | None = None, *, limit: int = 20) -> int:
        """Remove the weights of deleted models whose removal is owed (only `model_id`'s, when
        given), skipping those a job still trains from. Returns how many were freed; an S3
        failure leaves the removal owed."""
        async with self.ctx.sessions() as session:
            stmt = (select(FineTunedModel.id, FineTunedModel.job_id,
                           FineTunedModel.organization_id)
                    .where(FineTunedModel.deleted_at.is_not(None),
                           FineTunedModel.storage_freed_at.is_(None))
                    .order_by(FineTunedModel.seq).limit(limit))
            if model_id is not None:
                stmt = stmt.where(FineTunedModel.id == model_id)
            owed = (await session.execute(stmt)).all()
        freed = 0
        for row in owed:
            if await self._trained_from(row.organization_id, row.job_id):
                continue
            try:
                for prefix in model_prefixes(row.job_id):
                    await self.ctx.store.delete_prefix(prefix)
            except Exception:
                log.warning("could not remove the weights of deleted model %s; retrying later",
                            row.id, exc_info=True)
                continue
            async with self.ctx.sessions() as session, session.begin():
                await session.execute(
                    update(FineTunedModel)
                    .where(FineTunedModel.id == row.id,
                           FineTunedModel.storage_freed_at.is_(None))
                    .values(storage_freed_at=now()))
            log.info("removed the weights of deleted model %s", row.id)
            freed += 1
        return freed

    async def _trained_from(self, organization_id: str, job_id: str) -> bool:
        """Whether a job of the organization that has not ended starts from the model of job
        `job_id` or from one of its checkpoints (`jobs.parent` is JSON: compared here)."""
        async with self.ctx.sessions() as session:
            parents = (await session.execute(
                select(Job.parent).where(Job.organization_id == organization_id,
                                         Job.status.not_in([s.value for s in TERMINAL_STATUSES]))
            )).scalars().all()
        return any((parent or {}).get("job_id") == job_id for parent in parents)

    async def freed_after_delete(self, model_id: str) -> None:
        """`ModelService.on_delete` listener: free the model's weights now when nothing needs
        them (the serving plane, registered before, has unloaded it)."""
        await self.free(model_id)
