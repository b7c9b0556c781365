"""Nothing is lost when Redis loses the queue or a worker dies."""

from __future__ import annotations

import asyncio

import openai
import redis.asyncio as aioredis
from arq.jobs import JobStatus as QueueStatus

from tests.store.test_state_machine import new_job
from tuneforge.domain import JobStatus


async def wait_for(predicate, within_s: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + within_s
    while asyncio.get_running_loop().time() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.2)
    raise AssertionError("condition not reached in time")


async def test_jobs_are_enqueued_again_after_redis_is_flushed(
    client: openai.OpenAI, services, settings  # type: ignore[no-untyped-def]
) -> None:
    job_ids = [new_job(client) for _ in range(3)]
    for job_id in job_ids:
        assert await services.ctx.queue.status(f"{job_id}:1") == QueueStatus.queued
    async with aioredis.from_url(settings.redis_url) as redis:
        await redis.flushdb()
    for job_id in job_ids:
        assert await services.ctx.queue.status(f"{job_id}:1") == QueueStatus.not_found

    async def all_requeued() -> bool:
        # The API server's reconciler runs every second in the tests.
        jobs = [client.fine_tuning.jobs.retrieve(j) for j in job_ids]
        return all(j.status == "validating_files" for j in jobs) and all([
            await services.ctx.queue.status(f"{j}:2") == QueueStatus.queued for j in job_ids])

    await wait_for(all_requeued)
    events = client.fine_tuning.jobs.list_events(job_ids[0]).data
    assert events[0].message == "The job's queue entry was lost; enqueued again"
    assert events[0].level == "warn"


async def test_a_running_job_whose_worker_died_is_requeued(
    client: openai.OpenAI, services  # type: ignore[no-untyped-def]
) -> None:
    job_id = new_job(client)
    assert await services.protocol.claim(job_id, "worker-dead", 1)
    assert await services.protocol.advance(job_id, [JobStatus.VALIDATING_FILES], JobStatus.RUNNING,
                                           worker_id="worker-dead")

    async def requeued() -> bool:
        return client.fine_tuning.jobs.retrieve(job_id).status == "queued"

    await wait_for(requeued)
    assert await services.ctx.queue.status(f"{job_id}:2") == QueueStatus.queued
    # The dead worker's lease is gone: it can no longer move the job.
    assert await services.protocol.heartbeat(job_id, "worker-dead", 60) is None
