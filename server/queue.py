"""The job queue: arq on Redis. The API only produces; `trainer.worker` consumes."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from arq.jobs import Job, JobStatus

log = logging.getLogger(__name__)

TRAIN_TASK = "run_fine_tuning_job"


class JobQueue:
    def __init__(self, redis_url: str, queue_name: str) -> None:
        self.redis_settings = RedisSettings.from_dsn(redis_url)
        self.queue_name = queue_name
        self._pool: ArqRedis | None = None

    async def pool(self) -> ArqRedis:
        if self._pool is None:
            self._pool = await create_pool(
                self.redis_settings, default_queue_name=self.queue_name
            )
        return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None

    async def enqueue(self, queue_job_id: str, job_id: str) -> bool:
        """Queue the training task; False if a queue entry with this id already exists."""
        pool = await self.pool()
        job = await pool.enqueue_job(TRAIN_TASK, job_id, _job_id=queue_job_id)
        return job is not None

    async def status(self, queue_job_id: str) -> JobStatus:
        pool = await self.pool()
        return await Job(queue_job_id, pool, _queue_name=self.queue_name).status()

    async def abort(self, queue_job_id: str) -> None:
        """Ask arq to abort the task (dequeue it, or cancel it if a worker runs it)."""
        pool = await self.pool()
        job = Job(queue_job_id, pool, _queue_name=self.queue_name)
        with contextlib.suppress(asyncio.TimeoutError):
            await job.abort(timeout=0.05, poll_delay=0.05)
