"""What the worker autoscaler counts, on a real Redis: TuneForge's producer (server.queue)
and an arq worker. KEDA's `redis` scaler reads a key's TYPE and uses ZCARD for a sorted set;
deploy/k8s/base/worker-autoscaling.yaml relies on arq's queue being a sorted set that holds
each job from enqueue until it finishes, so that ZCARD = jobs queued + jobs running."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from arq.connections import RedisSettings, create_pool
from arq.worker import Worker, func

from server.queue import TRAIN_TASK, JobQueue, job_deserializer, job_serializer


async def _wait_for(predicate: Any, seconds: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


# arq's own Worker.close() calls redis-py's deprecated close().
@pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")
async def test_queue_depth_counts_queued_and_running_jobs(redis_url: str) -> None:
    queue_name = f"tuneforge:deploy-test:{uuid.uuid4().hex[:8]}"
    producer = JobQueue(redis_url, queue_name)
    redis = await create_pool(RedisSettings.from_dsn(redis_url))
    started = asyncio.Event()
    release = asyncio.Event()

    async def train(ctx: dict[str, Any], job_id: str) -> str:
        started.set()
        await release.wait()
        return job_id

    worker = Worker(functions=[func(train, name=TRAIN_TASK)],
                    redis_settings=RedisSettings.from_dsn(redis_url), queue_name=queue_name,
                    max_jobs=1, burst=True, poll_delay=0.05, handle_signals=False,
                    keep_result=0, job_serializer=job_serializer,
                    job_deserializer=job_deserializer)
    running = None
    try:
        assert await producer.enqueue(f"q-{uuid.uuid4().hex}", "ftjob-a")
        assert await producer.enqueue(f"q-{uuid.uuid4().hex}", "ftjob-b")
        assert await redis.type(queue_name) == b"zset"
        assert await redis.zcard(queue_name) == 2  # two queued: KEDA asks for two workers

        running = asyncio.create_task(worker.main())
        await asyncio.wait_for(started.wait(), 20)
        # One running (still in the set while it runs), one waiting: still two.
        assert await redis.zcard(queue_name) == 2

        release.set()

        async def drained() -> bool:
            return await redis.zcard(queue_name) == 0

        await _wait_for(drained)  # finished jobs leave the set: scale back towards zero
        await asyncio.wait_for(running, 20)
        assert worker.jobs_complete == 2
    finally:
        release.set()
        if running is not None and not running.done():
            running.cancel()
        await worker.close()
        await producer.close()
        await redis.delete(queue_name)
        await redis.aclose()
