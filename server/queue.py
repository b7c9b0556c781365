"""The job queue: arq on Redis. The API only produces; `trainer.worker` consumes.

Two protections apply to every Redis connection made here (producer and worker alike):

- Payloads are JSON, never pickle: arq unpickles job payloads and results by default, so anyone
  able to write one Redis key would run code as the worker. `job_serializer` and
  `job_deserializer` are passed to both ends; a payload that is not JSON is refused.
- Every Redis call has a deadline (`socket_timeout`), and `JobQueue` wraps each operation in
  `asyncio.wait_for`, so a hung Redis cannot hang a request or the reconciler. The URL may
  override the socket timeouts (`redis://…?socket_timeout=10&socket_connect_timeout=5`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any
from urllib.parse import parse_qs, urlsplit

from arq.connections import ArqRedis
from arq.constants import expires_extra_ms
from arq.jobs import Job, JobStatus

from server.observability import tracing

log = logging.getLogger(__name__)

TRAIN_TASK = "run_fine_tuning_job"

# Seconds. A healthy Redis answers in well under a millisecond here.
SOCKET_TIMEOUT = 5.0
CONNECT_TIMEOUT = 2.0
# How long a request waits for one queue operation before giving up on it (enqueue: the job
# stays `validating_files` and the reconciler enqueues it once Redis answers again).
OPERATION_TIMEOUT = 3.0


def _json_default(value: Any) -> Any:
    """What arq puts in a payload that JSON lacks: tuples are lists already; exceptions (a
    failed job's result) and anything else become a plain description."""
    if isinstance(value, BaseException):
        return {"error": type(value).__name__, "message": str(value)}
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    return {"unserializable": type(value).__name__, "repr": repr(value)[:200]}


def job_serializer(data: dict[str, Any]) -> bytes:
    return json.dumps(data, default=_json_default, separators=(",", ":")).encode()


def job_deserializer(raw: bytes) -> dict[str, Any]:
    """JSON objects only: anything else (a pickle, garbage) raises, and arq then fails the job
    without running anything ('deserializing job … failed')."""
    value = json.loads(raw.decode("utf-8"))
    if not isinstance(value, dict):
        raise ValueError(f"a queue payload must be a JSON object, not {type(value).__name__}")
    return value


def redis_pool(redis_url: str, queue_name: str) -> ArqRedis:
    """An arq client with JSON payloads and socket timeouts; connects on first use.
    `rediss://` URLs use TLS (see docs/security.md)."""
    parts = urlsplit(redis_url)
    query = parse_qs(parts.query)
    options: dict[str, Any] = {}
    if parts.scheme == "rediss" and "ssl_check_hostname" not in query:
        options["ssl_check_hostname"] = True  # redis-py checks only the chain by default
    if "socket_timeout" not in query:
        options["socket_timeout"] = SOCKET_TIMEOUT
    if "socket_connect_timeout" not in query:
        options["socket_connect_timeout"] = CONNECT_TIMEOUT
    pool = ArqRedis.from_url(redis_url, encoding="utf8", **options)
    pool.job_serializer = job_serializer
    pool.job_deserializer = job_deserializer
    pool.default_queue_name = queue_name
    pool.expires_extra_ms = expires_extra_ms
    return pool


class JobQueue:
    def __init__(self, redis_url: str, queue_name: str,
                 timeout: float = OPERATION_TIMEOUT) -> None:
        self.redis_url = redis_url
        self.queue_name = queue_name
        self.timeout = timeout
        self._pool: ArqRedis | None = None

    async def pool(self) -> ArqRedis:
        if self._pool is None:
            self._pool = redis_pool(self.redis_url, self.queue_name)
        return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pool.aclose(), self.timeout)

    async def enqueue(self, queue_job_id: str, job_id: str) -> bool:
        """Queue the training task; False if a queue entry with this id already exists.
        Raises TimeoutError when Redis does not answer within `timeout`."""
        with tracing.span("queue.enqueue", attributes={"tuneforge.job_id": job_id,
                                                       "tuneforge.queue_job_id": queue_job_id}):
            pool = await self.pool()
            job = await asyncio.wait_for(
                pool.enqueue_job(TRAIN_TASK, job_id, _job_id=queue_job_id), self.timeout)
        return job is not None

    async def status(self, queue_job_id: str) -> JobStatus:
        pool = await self.pool()
        job = Job(queue_job_id, pool, _queue_name=self.queue_name,
                  _deserializer=job_deserializer)
        return await asyncio.wait_for(job.status(), self.timeout)

    async def abort(self, queue_job_id: str) -> None:
        """Ask arq to abort the task (dequeue it, or cancel it if a worker runs it)."""
        pool = await self.pool()
        job = Job(queue_job_id, pool, _queue_name=self.queue_name,
                  _deserializer=job_deserializer)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(job.abort(timeout=0.05, poll_delay=0.05), self.timeout)
