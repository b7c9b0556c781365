"""Makes the queue and the database agree, so a Redis restart or a dead worker loses nothing.

- A `validating_files` job nobody validates (its API process died mid-validation, so it has
  no queue entry yet) is validated again (`server.service.validation`).
- A job no worker holds whose queue entry is gone (or whose task ended without moving it on)
  is enqueued again; a `running` one resumes from its last checkpoint.
- A job whose worker's lease lapsed (in a state a worker owns: `queued`, `running`) goes
  back to the queue; a running one resumes from its last checkpoint.
- Pending uploads past their expiry are expired and their parts removed.
- Deleted models whose weights are still in object storage lose them (`model_storage`).
"""

from __future__ import annotations

import asyncio
import logging

from arq.jobs import JobStatus as QueueStatus

from server.db.models import Job
from server.service import Services
from tuneforge.domain import JobStatus, now

log = logging.getLogger(__name__)

# A job's row commits before its queue entry is written (resume, requeue) or its validation
# takes it (create); an entry or a lease missing for less than this is not taken as lost.
QUEUE_ENTRY_GRACE_SECONDS = 5


async def reconcile_once(services: Services) -> dict[str, int]:
    requeued = revalidated = 0
    for job in await services.jobs.jobs_in((JobStatus.VALIDATING_FILES, JobStatus.QUEUED,
                                            JobStatus.RUNNING)):
        if job.status == JobStatus.VALIDATING_FILES:
            revalidated += _revalidate(services, job)
            continue
        # The lease in the database is the truth for every state a worker owns; arq's
        # in-progress key outlives a killed worker by the whole job timeout.
        if job.lease_owner is not None:
            if (job.lease_expires_at or 0) >= now():
                continue  # a live worker holds it
            reason = ("The worker training this job stopped responding; requeued to resume "
                      "from its last checkpoint" if job.status == JobStatus.RUNNING else
                      "The worker handling this job stopped responding; enqueued again")
            requeued += await services.jobs.requeue(job, reason) is not None
            continue
        # No lease: the job waits for its queue entry. That holds for a `running` job too,
        # whose worker let go of it without moving it on (shut down, or lost its lease):
        # arq retries an interrupted task, and an entry that is gone or done is lost.
        if now() - max(job.created_at, job.updated_at or 0) < QUEUE_ENTRY_GRACE_SECONDS:
            continue  # its queue entry is written just after its row: not lost, only not yet
        queue_status = await services.ctx.queue.status(job.queue_job_id or "")
        if queue_status == QueueStatus.not_found:
            requeued += await services.jobs.requeue(
                job, "The job's queue entry was lost; enqueued again") is not None
        elif queue_status == QueueStatus.complete:
            # The task ended without moving the job on (e.g. aborted): give it a new entry.
            requeued += await services.jobs.requeue(
                job, "The job's queue task ended early; enqueued again") is not None
    expired = await services.uploads.expire_due()
    aborted = await services.uploads.abort_stale_multipart_uploads()  # throttled inside
    freed = await services.model_storage.free()
    return {"requeued": requeued, "revalidated": revalidated, "expired_uploads": expired,
            "aborted_multipart_uploads": aborted, "freed_models": freed}


def _revalidate(services: Services, job: Job) -> bool:
    """A `validating_files` job is the API's until validated (it has no queue entry yet):
    validate it again when nobody holds its lease, i.e. the process that validated it died
    (its lease lapsed) or died before taking it. A live lease means a validation (or, for a
    job created before validation moved to the API, a worker) is at work."""
    if job.lease_owner is not None and (job.lease_expires_at or 0) >= now():
        return False
    if job.lease_owner is None and (
            now() - max(job.created_at, job.updated_at or 0) < QUEUE_ENTRY_GRACE_SECONDS):
        return False  # just created: its validation is about to take it
    return services.validation.start(job.id)


async def run_forever(services: Services, interval: float) -> None:
    while True:
        try:
            result = await reconcile_once(services)
            if any(result.values()):
                log.info("reconciled: %s", result)
        except Exception:
            log.warning("reconcile pass failed; retrying", exc_info=True)
        await asyncio.sleep(interval)
