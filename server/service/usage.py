"""What an organization keeps in object storage (`GET /v1/organization/storage`): files from
their rows, and the weights of its jobs by listing each job's prefixes in S3 (a job with no
model and no checkpoints left is skipped without a listing)."""

from __future__ import annotations

from sqlalchemy import func, select

from server.auth import Principal
from server.db.models import File, FineTunedModel, Job, JobCheckpoint
from server.service.context import Context
from server.service.objects import StorageShare, StorageUsageObject
from server.storage import ObjectInfo
from tuneforge.layout import as_dir, checkpoints_prefix, published_prefixes


class UsageService:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def storage(self, principal: Principal) -> StorageUsageObject:
        org = principal.organization_id
        async with self.ctx.sessions() as session:
            files_count, files_bytes = (await session.execute(
                select(func.count(File.id), func.coalesce(func.sum(File.bytes), 0))
                .where(File.organization_id == org))).one()
            models = {row.job_id: row for row in (await session.execute(
                select(FineTunedModel.job_id, FineTunedModel.deleted_at,
                       FineTunedModel.storage_freed_at)
                .where(FineTunedModel.organization_id == org))).all()}
            with_checkpoints = set((await session.execute(
                select(JobCheckpoint.job_id).join(Job, Job.id == JobCheckpoint.job_id)
                .where(Job.organization_id == org).distinct())).scalars().all())
        shares = {kind: [0, 0] for kind in ("models", "checkpoints", "pending_deletion")}
        for job_id in sorted(set(models) | with_checkpoints):
            model = models.get(job_id)
            if model is not None and model.storage_freed_at is not None:
                continue  # deleted and removed
            published = [k for p in published_prefixes(job_id)
                         for k in await self.ctx.store.list_keys(p)]
            stored = await self.ctx.store.list_keys(as_dir(checkpoints_prefix(job_id)))
            if model is not None and model.deleted_at is not None:
                _add(shares["pending_deletion"], 1 if published or stored else 0,
                     published + stored)
                continue
            _add(shares["models"], 1 if published else 0, published)
            steps = {k.key[len(as_dir(checkpoints_prefix(job_id))):].split("/", 1)[0]
                     for k in stored}
            _add(shares["checkpoints"], len(steps), stored)
        total = files_bytes + sum(b for _, b in shares.values())
        return StorageUsageObject(
            files=StorageShare(count=files_count, bytes=files_bytes),
            total_bytes=total,
            **{kind: StorageShare(count=c, bytes=b) for kind, (c, b) in shares.items()})


def _add(share: list[int], count: int, objects: list[ObjectInfo]) -> None:
    share[0] += count
    share[1] += sum(o.size for o in objects)
