"""Job control under racing actions, on SQLite and PostgreSQL: a worker's writes are fenced by
its lease, resume never starts a second run beside a stopping one, and a run's results file is
recorded only with its success."""

from __future__ import annotations

import asyncio

import openai
import pytest
import redis.asyncio as aioredis

from server.job_protocol import LeaseLost, ResultsFile
from tests.store.test_reconciler import wait_for
from tests.store.test_state_machine import MODEL, queued_job
from tuneforge.domain import JobStatus, new_id
from tuneforge.layout import adapter_prefix


async def running_job(client: openai.OpenAI, services, worker: str,  # type: ignore[no-untyped-def]
                      lease_seconds: int = 60) -> str:
    job_id = await queued_job(client)
    assert await services.protocol.claim(job_id, worker, lease_seconds)
    assert await services.protocol.advance(job_id, [JobStatus.QUEUED], JobStatus.RUNNING,
                                           worker_id=worker)
    return job_id


async def test_a_worker_that_lost_its_lease_writes_nothing(
    client: openai.OpenAI, services  # type: ignore[no-untyped-def]
) -> None:
    job_id = await running_job(client, services, "worker-old")
    await services.protocol.add_event(job_id, "Step 1/9: train_loss=1.0", worker_id="worker-old")
    # The lease lapses and another worker takes the job over.
    assert await services.protocol.claim(job_id, "worker-old", -1)
    assert await services.protocol.claim(job_id, "worker-new", 60)
    assert await services.protocol.control(job_id, "worker-old") is None
    assert await services.protocol.control(job_id, "worker-new") == JobStatus.RUNNING
    before = client.fine_tuning.jobs.list_events(job_id, limit=100).data

    with pytest.raises(LeaseLost):
        await services.protocol.add_event(job_id, "Step 9/9: stale", worker_id="worker-old")
    with pytest.raises(LeaseLost):
        await services.protocol.update_progress(job_id, worker_id="worker-old", trained_tokens=9)
    with pytest.raises(LeaseLost):
        await services.protocol.add_checkpoint(job_id, step=9, metrics={"step": 9},
                                               model_name="stale", worker_id="worker-old")
    assert not await services.protocol.succeed(job_id, fine_tuned_model=f"ft:{MODEL}:x::stale",
                                               result_files=[], trained_tokens=9,
                                               worker_id="worker-old")
    assert not await services.protocol.fail(job_id, code="internal_error", message="stale",
                                            worker_id="worker-old")
    with pytest.raises(LeaseLost):
        await services.protocol.request_serving(job_id, "worker-old", model="stale",
                                                base_model=MODEL,
                                                adapter_prefix=adapter_prefix(job_id))

    job = client.fine_tuning.jobs.retrieve(job_id)
    assert job.status == "running" and job.trained_tokens is None
    assert client.fine_tuning.jobs.list_events(job_id, limit=100).data == before
    assert client.fine_tuning.jobs.checkpoints.list(job_id).data == []
    # The new owner writes as usual.
    await services.protocol.add_event(job_id, "Step 5/9: train_loss=0.5", worker_id="worker-new")
    request_id = await services.protocol.request_serving(
        job_id, "worker-new", model="new", base_model=MODEL, adapter_prefix=adapter_prefix(job_id))
    state = await services.protocol.serving_state(request_id)
    assert state is not None and state.requested_at > 0
    assert (state.ready_at, state.replicas, state.error) == (None, None, None)


async def test_a_late_heartbeat_and_the_takeover_race_and_one_wins(
    client: openai.OpenAI, services  # type: ignore[no-untyped-def]
) -> None:
    """A worker whose lease lapsed (its heartbeat came late) keeps the job if it renews before
    anyone takes over; if the reconciler requeues it first, the worker writes nothing more."""
    for _ in range(4):
        job_id = await running_job(client, services, "worker-slow")
        assert await services.protocol.claim(job_id, "worker-slow", -1)  # the lease lapses
        job = next(j for j in await services.jobs.jobs_in([JobStatus.RUNNING]) if j.id == job_id)
        renewed, requeued = await asyncio.gather(
            services.protocol.control(job_id, "worker-slow"),
            services.jobs.requeue(job, "The worker training this job stopped responding"))
        # (The API server's own reconciler may take it over first: then neither wins here.)
        assert renewed is None or requeued is None
        status = client.fine_tuning.jobs.retrieve(job_id).status
        if renewed is not None:
            assert status == "running"
            await services.protocol.add_event(job_id, "Step 2/9: kept", worker_id="worker-slow")
            assert not await services.protocol.claim(job_id, "worker-other", 60)
        else:
            assert status == "queued"
            with pytest.raises(LeaseLost):
                await services.protocol.add_event(job_id, "Step 2/9: stale",
                                                  worker_id="worker-slow")


async def test_resume_waits_for_the_paused_run_to_let_go(
    client: openai.OpenAI, services, settings  # type: ignore[no-untyped-def]
) -> None:
    job_id = await running_job(client, services, "worker-a")
    assert client.fine_tuning.jobs.pause(job_id).status == "paused"
    assert await services.protocol.control(job_id, "worker-a") == JobStatus.PAUSED

    # The paused run still holds the lease (it is saving its checkpoint): no second run yet.
    with pytest.raises(openai.ConflictError) as refused:
        client.fine_tuning.jobs.resume(job_id)
    assert refused.value.body["code"] == "job_still_stopping"
    assert client.fine_tuning.jobs.retrieve(job_id).status == "paused"

    # Resume fired while the run is stopping waits for it, then queues one new run.
    async def stop_soon() -> None:
        await asyncio.sleep(1.0)
        await services.protocol.add_event(job_id, "Training paused at step 3",
                                          worker_id="worker-a")
        await services.protocol.release(job_id, "worker-a")

    resumed, _ = await asyncio.gather(asyncio.to_thread(client.fine_tuning.jobs.resume, job_id),
                                      stop_soon())
    assert resumed.status == "queued"
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job_id, limit=100).data]
    assert messages.index("Fine-tuning job resumed: it continues from its last checkpoint") \
        < messages.index("Training paused at step 3"), "resume landed after the stop"
    assert messages.count("Fine-tuning job resumed: it continues from its last checkpoint") == 1


async def test_pause_and_resume_fired_together_leave_one_run(
    client: openai.OpenAI, services  # type: ignore[no-untyped-def]
) -> None:
    for _ in range(2):
        job_id = await running_job(client, services, "worker-b")

        def pause_then_resume(job_id: str = job_id) -> str:
            client.fine_tuning.jobs.pause(job_id)
            try:
                return client.fine_tuning.jobs.resume(job_id).status
            except openai.ConflictError as exc:
                return str(exc.body["code"])

        outcome = await asyncio.to_thread(pause_then_resume)
        # The run never stopped, so nothing may start a second one beside it.
        assert outcome == "job_still_stopping"
        assert client.fine_tuning.jobs.retrieve(job_id).status == "paused"
        assert await services.protocol.control(job_id, "worker-b") == JobStatus.PAUSED


async def test_results_file_is_recorded_only_with_success(
    client: openai.OpenAI, services  # type: ignore[no-untyped-def]
) -> None:
    from server.auth import Principal
    from tuneforge.errors import ApiError

    def results_files() -> set[str]:
        return {f.id for f in client.files.list(purpose="fine-tune-results").data}

    known = results_files()
    for _ in range(6):
        job_id = await running_job(client, services, "worker-c")
        org = client.fine_tuning.jobs.retrieve(job_id).organization_id
        results = ResultsFile(new_id("file-"), "step_metrics.csv", 42)

        async def cancel(job_id: str = job_id, org: str = org) -> bool:
            try:
                await services.jobs.cancel(Principal(org, "test"), job_id)
                return True
            except ApiError:
                return False

        cancelled, succeeded = await asyncio.gather(cancel(), services.protocol.succeed(
            job_id, fine_tuned_model=f"ft:{MODEL}:{org}::{job_id}", result_files=[],
            results_file=results, trained_tokens=1, worker_id="worker-c"))
        assert cancelled != succeeded
        job = client.fine_tuning.jobs.retrieve(job_id)
        now_known = results_files()
        if succeeded:
            assert job.result_files == [results.file_id]
            assert now_known - known == {results.file_id}
        else:
            assert job.status == "cancelled" and job.result_files == []
            assert now_known == known, "a cancelled run left a results file behind"
        known = now_known


async def test_a_queued_job_whose_worker_died_is_requeued(
    client: openai.OpenAI, services, settings  # type: ignore[no-untyped-def]
) -> None:
    """arq keeps a killed worker's in-progress key for the whole job timeout; the database
    lease decides."""
    from arq.jobs import JobStatus as QueueStatus

    job_id = await queued_job(client)
    assert await services.protocol.claim(job_id, "worker-killed", 1)
    async with aioredis.from_url(settings.redis_url) as redis:
        await redis.set(f"arq:in-progress:{job_id}:1", b"1", ex=3600)
    assert await services.ctx.queue.status(f"{job_id}:1") == QueueStatus.in_progress

    async def requeued() -> bool:
        return await services.ctx.queue.status(f"{job_id}:2") == QueueStatus.queued

    await wait_for(requeued)
    job = client.fine_tuning.jobs.retrieve(job_id)
    assert job.status == "queued"
    assert client.fine_tuning.jobs.list_events(job_id).data[0].message == (
        "The worker handling this job stopped responding; enqueued again")
    assert await services.protocol.control(job_id, "worker-killed") is None


async def test_a_job_waiting_for_a_worker_keeps_its_queue_entry(
    client: openai.OpenAI, services  # type: ignore[no-untyped-def]
) -> None:
    """The reconciler (every second here) must not take a fresh or waiting entry for lost."""
    from arq.jobs import JobStatus as QueueStatus

    from server.reconciler import QUEUE_ENTRY_GRACE_SECONDS

    job_id = await queued_job(client)
    await asyncio.sleep(QUEUE_ENTRY_GRACE_SECONDS + 3)
    assert await services.ctx.queue.status(f"{job_id}:1") == QueueStatus.queued
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job_id).data]
    assert messages[0].startswith("Queued: position")
    assert messages[1:] == [
        "Files validated, moving job to queued state",
        f"Validating training file: {client.fine_tuning.jobs.retrieve(job_id).training_file}",
        f"Created fine-tuning job: {job_id}"]
