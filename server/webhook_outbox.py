"""The webhook outbox's writing side: a job's transition to an end (or to paused) writes one
delivery per subscribed endpoint of the job's organization, in the transition's own
transaction, so an event is never lost to a crash between the two and never sent for a
transition that did not commit. The API processes send them (`server/service/webhook_delivery`).

This module sits beside the job protocol (the worker imports it) and imports nothing of the
public service layer.
"""

from __future__ import annotations

import json
import time

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.models import Job, WebhookDelivery, WebhookEndpoint
from tuneforge.domain import JobStatus, new_id

# The events, by the job status that causes them. The first three are OpenAI's; `paused` is
# TuneForge's own (its jobs can be paused).
EVENT_TYPES = {
    JobStatus.SUCCEEDED: "fine_tuning.job.succeeded",
    JobStatus.FAILED: "fine_tuning.job.failed",
    JobStatus.CANCELLED: "fine_tuning.job.cancelled",
    JobStatus.PAUSED: "fine_tuning.job.paused",
}
ALL_EVENT_TYPES = tuple(EVENT_TYPES.values())


def event_body(event_id: str, event_type: str, created_at: int, job_id: str) -> str:
    """OpenAI's webhook event, e.g. `FineTuningJobSucceededWebhookEvent`."""
    return json.dumps({"id": event_id, "object": "event", "created_at": created_at,
                       "type": event_type, "data": {"id": job_id}}, separators=(",", ":"))


async def enqueue_job_event(session: AsyncSession, job_id: str, status: JobStatus | str) -> int:
    """Inside the transaction that moved `job_id` to `status`: one pending delivery per live
    endpoint of the job's organization subscribed to the status's event (none for a status
    without an event). Returns how many were written."""
    event_type = EVENT_TYPES.get(JobStatus(status))
    if event_type is None:
        return 0
    organization_id = (await session.execute(
        select(Job.organization_id).where(Job.id == job_id))).scalar_one()
    endpoints = (await session.execute(
        select(WebhookEndpoint.id, WebhookEndpoint.event_types).where(
            WebhookEndpoint.organization_id == organization_id,
            WebhookEndpoint.deleted_at.is_(None)))).all()
    subscribed = [endpoint_id for endpoint_id, types in endpoints if event_type in types]
    if not subscribed:
        return 0
    at = time.time()
    event_id = new_id("evt_")
    body = event_body(event_id, event_type, int(at), job_id)
    for endpoint_id in subscribed:
        session.add(WebhookDelivery(
            id=new_id("whdel_"), organization_id=organization_id, endpoint_id=endpoint_id,
            event_id=event_id, event_type=event_type, body=body, status="pending",
            attempts=0, next_attempt_at=at, created_at=at))
    await session.flush()
    return len(subscribed)
