"""The GPU worker process: an arq worker that takes fine-tuning jobs from the queue.

`tuneforge worker` runs it. One job at a time per worker (one device); the job's lease in the
database, not arq's retry, guarantees no two workers train the same job.
"""

from __future__ import annotations

import logging
from typing import Any

from arq.worker import Worker, func

from server.queue import TRAIN_TASK, job_deserializer, job_serializer, redis_pool
from server.service import Services
from server.service.context import Context
from trainer.job_runner import JobRunner, worker_identity
from tuneforge.settings import Settings

log = logging.getLogger(__name__)

# Long enough for any training run; a dead worker is detected by its lease, not this timeout.
JOB_TIMEOUT_SECONDS = 7 * 24 * 3600


async def run_fine_tuning_job(ctx: dict[str, Any], job_id: str) -> str:
    runner = JobRunner(ctx["services"], job_id, ctx["worker_id"])
    outcome = await runner.run()
    log.info("job %s: %s", job_id, outcome)
    return outcome


def create_worker(settings: Settings) -> Worker:
    services = Services(Context.from_settings(settings))

    async def startup(ctx: dict[str, Any]) -> None:
        await services.ctx.store.ensure_bucket()
        ctx["services"] = services
        ctx["worker_id"] = worker_identity()
        log.info("worker %s ready on queue %s", ctx["worker_id"], settings.queue_name)

    async def shutdown(ctx: dict[str, Any]) -> None:
        await services.ctx.close()

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
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    create_worker(settings).run()


if __name__ == "__main__":
    run(Settings())
