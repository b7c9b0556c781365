"""The GPU worker process: an arq worker that takes fine-tuning jobs from the queue.

`tuneforge worker` runs it. One job at a time per worker (one device); the job's lease in the
database, not arq's retry, guarantees no two workers train the same job.
"""

from __future__ import annotations

import logging
from typing import Any

import structlog
from arq.worker import Worker, func

from server.db.session import create_engine, create_sessionmaker
from server.job_protocol import JobProtocol
from server.observability import tracing
from server.observability.logging import configure_logging
from server.observability.tracing import configure_tracing, shutdown_tracing
from server.queue import TRAIN_TASK, job_deserializer, job_serializer, redis_pool
from server.storage import ObjectStore
from trainer import worker_metrics
from trainer.job_runner import JobRunner, worker_identity
from tuneforge.settings import Settings

log = logging.getLogger(__name__)

# Long enough for any training run; a dead worker is detected by its lease, not this timeout.
JOB_TIMEOUT_SECONDS = 7 * 24 * 3600


async def run_fine_tuning_job(ctx: dict[str, Any], job_id: str) -> str:
    # Every line of this run carries the job and the request that created it; its span
    # continues that request's trace (stored in the job row, so a requeue continues it too).
    request_id, traceparent = await ctx["jobs"].origin(job_id)
    with structlog.contextvars.bound_contextvars(request_id=request_id, job_id=job_id), \
            tracing.span("job.run", traceparent=traceparent,
                         attributes={"tuneforge.job_id": job_id,
                                     "tuneforge.request_id": request_id or ""}):
        log.info("job %s: run starts on %s", job_id, ctx["worker_id"])
        runner = JobRunner(ctx["jobs"], ctx["store"], ctx["settings"], job_id, ctx["worker_id"])
        worker_metrics.RECORDER.start_run()
        worker_metrics.JOB_RUNNING.set(1)
        try:
            outcome = await runner.run()
        finally:
            worker_metrics.JOB_RUNNING.set(0)
        log.info("job %s: %s", job_id, outcome)
    return outcome


def create_worker(settings: Settings) -> Worker:
    """The worker talks to the control plane through the job protocol (DB) and the object
    store only; the queue delivers job ids."""
    engine = create_engine(settings.effective_database_url)
    store = ObjectStore(settings.s3, settings.storage)

    async def startup(ctx: dict[str, Any]) -> None:
        await store.ensure_bucket()
        ctx["jobs"] = JobProtocol(create_sessionmaker(engine), settings)
        ctx["store"] = store
        ctx["settings"] = settings
        ctx["worker_id"] = worker_identity()
        ctx["metrics_server"] = worker_metrics.serve(settings)  # None unless a port is set
        log.info("worker %s ready on queue %s", ctx["worker_id"], settings.queue_name)

    async def shutdown(ctx: dict[str, Any]) -> None:
        if ctx.get("metrics_server") is not None:
            ctx["metrics_server"].stop()
        await engine.dispose()
        store.close()

    return Worker(
        functions=[func(run_fine_tuning_job, name=TRAIN_TASK)],
        # JSON payloads (never pickle) and socket timeouts on every Redis call.
        redis_pool=redis_pool(settings.redis_url, settings.queue_name),
        job_serializer=job_serializer,
        job_deserializer=job_deserializer,
        queue_name=settings.queue_name,
        on_startup=startup,
        on_shutdown=shutdown,
        max_jobs=1,
        job_timeout=JOB_TIMEOUT_SECONDS,
        max_tries=50,
        allow_abort_jobs=True,
        keep_result=60,
        handle_signals=True,
    )


def run(settings: Settings) -> None:
    configure_logging(settings.log_format)  # JSON lines with request_id and job_id
    configure_tracing(settings.tracing)
    try:
        create_worker(settings).run()
    finally:
        shutdown_tracing()


if __name__ == "__main__":
    run(Settings())
