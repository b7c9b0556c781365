"""Makes the queue and the database agree, so a Redis restart or a dead worker loses nothing.

- A `validating_files`/`queued` job whose queue entry is gone is enqueued again.
- A `running` job whose worker's lease expired goes back to the queue (it resumes from its
  last checkpoint).
- Pending uploads past their expiry are expired and their parts removed.
"""

from __future__ import annotations

import asyncio
import logging

from arq.jobs import JobStatus as QueueStatus

from server.service import Services
from tuneforge.domain import JobStatus, now

log = logging.getLogger(__name__)


async def reconcile_once(services: Services) -> dict[str, int]:
    requeued = 0
    for job in await services.jobs.jobs_in((JobStatus.VALIDATING_FILES, JobStatus.QUEUED,
                                            JobStatus.RUNNING)):
        if job.status == JobStatus.RUNNING:
            if job.lease_expires_at is not None and job.lease_expires_at < now():
                reason = "The worker training this job stopped responding; requeued to " \
                         "resume from its last checkpoint"
                requeued += await services.jobs.requeue(job, reason) is not None
            continue
        if job.lease_owner and (job.lease_expires_at or 0) >= now():
            continue  # a live worker holds it
        queue_status = await services.ctx.queue.status(job.queue_job_id or "")
        if queue_status == QueueStatus.not_found:
            await services.jobs.requeue(job, "The job's queue entry was lost; enqueued again")
            requeued += 1
        elif queue_status == QueueStatus.complete:
            # The task ended without moving the job on (e.g. aborted): give it a new entry.
            await services.jobs.requeue(job, "The job's queue task ended early; enqueued again")
            requeued += 1
    expired = await services.uploads.expire_due()
    return {"requeued": requeued, "expired_uploads": expired}


async def run_forever(services: Services, interval: float) -> None:
    while True:
        try:
            result = await reconcile_once(services)
            if any(result.values()):
                log.info("reconciled: %s", result)
        except Exception:
            log.warning("reconcile pass failed; retrying", exc_info=True)
        await asyncio.sleep(interval)
