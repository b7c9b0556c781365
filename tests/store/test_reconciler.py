"""Nothing is lost when Redis loses the queue or a worker dies."""

from __future__ import annotations

import asyncio

import openai
import redis.asyncio as aioredis
from arq.jobs import JobStatus as QueueStatus

from tests.store.test_state_machine import queued_job
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
    job_ids = [await queued_job(client) for _ in range(3)]
    for job_id in job_ids:
        assert await services.ctx.queue.status(f"{job_id}:1") == QueueStatus.queued
    async with aioredis.from_url(settings.redis_url) as redis:
        await redis.flushdb()
    for job_id in job_ids:
        assert await services.ctx.queue.status(f"{job_id}:1") == QueueStatus.not_found

    async def all_requeued() -> bool:
        # The API server's reconciler runs every second in the tests.
        jobs = [client.fine_tuning.jobs.retrieve(j) for j in job_ids]
        return all(j.status == "queued" for j in jobs) and all([
            await services.ctx.queue.status(f"{j}:2") == QueueStatus.queued for j in job_ids])

    await wait_for(all_requeued)
    events = client.fine_tuning.jobs.list_events(job_ids[0]).data
    assert events[0].message == "The job's queue entry was lost; enqueued again"
    assert events[0].level == "warn"


async def test_a_running_job_whose_worker_died_is_requeued(
    client: openai.OpenAI, services  # type: ignore[no-untyped-def]
) -> None:
    job_id = await queued_job(client)
    assert await services.protocol.claim(job_id, "worker-dead", 1)
    assert await services.protocol.advance(job_id, [JobStatus.QUEUED], JobStatus.RUNNING,
                                           worker_id="worker-dead")

    async def requeued() -> bool:
        return client.fine_tuning.jobs.retrieve(job_id).status == "queued"

    await wait_for(requeued)
    assert await services.ctx.queue.status(f"{job_id}:2") == QueueStatus.queued
    # The dead worker's lease is gone: it can no longer move the job.
    assert await services.protocol.heartbeat(job_id, "worker-dead", 60) is None


async def test_a_running_job_its_worker_let_go_of_waits_for_its_entry_then_is_requeued(
    client: openai.OpenAI, services, settings  # type: ignore[no-untyped-def]
) -> None:
    """A worker can release a `running` job without moving it on (it shut down, or lost its
    lease): arq hands an interrupted task back, so the job waits for that entry; once the
    entry is gone nothing would ever run it, and it is requeued to resume."""
    from arq.constants import job_key_prefix

    from server.reconciler import QUEUE_ENTRY_GRACE_SECONDS

    job_id = await queued_job(client)
    assert await services.protocol.claim(job_id, "worker-gone", 60)
    assert await services.protocol.advance(job_id, [JobStatus.QUEUED], JobStatus.RUNNING,
                                           worker_id="worker-gone")
    await services.protocol.release(job_id, "worker-gone")
    await asyncio.sleep(QUEUE_ENTRY_GRACE_SECONDS + 2)  # several reconciler passes
    assert client.fine_tuning.jobs.retrieve(job_id).status == "running"
    assert await services.ctx.queue.status(f"{job_id}:1") == QueueStatus.queued

    async with aioredis.from_url(settings.redis_url) as redis:
        await redis.delete(job_key_prefix + f"{job_id}:1")
        await redis.zrem(settings.queue_name, f"{job_id}:1")

    async def requeued() -> bool:
        return client.fine_tuning.jobs.retrieve(job_id).status == "queued"

    await wait_for(requeued)
    assert await services.ctx.queue.status(f"{job_id}:2") == QueueStatus.queued
    assert client.fine_tuning.jobs.list_events(job_id).data[0].message == (
        "The job's queue entry was lost; enqueued again")
