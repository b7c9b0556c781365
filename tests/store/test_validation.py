"""The API validates a new job's files in the background, then queues it (with its place in
line in an event) and only then enqueues it; bad data fails the job as the worker would; a
cancel during validation wins; the reconciler validates again what a dead API left."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import openai
import pytest
from arq.jobs import JobStatus as QueueStatus
from sqlalchemy import select

from server.db.models import Job
from tests.api.data import chat_jsonl
from tests.conftest import until_validated

MODEL = "SmolLM2-135M-Instruct"


def upload(client: openai.OpenAI, content: bytes) -> str:
    return client.files.create(file=("t.jsonl", io.BytesIO(content)), purpose="fine-tune").id


def messages(client: openai.OpenAI, job_id: str) -> list[Any]:
    return list(reversed(client.fine_tuning.jobs.list_events(job_id, limit=100).data))


def queued_event(client: openai.OpenAI, job_id: str) -> Any:
    return next(e for e in messages(client, job_id) if e.message.startswith("Queued: position"))


async def test_a_valid_job_is_queued_with_its_position_then_enqueued(
        client: openai.OpenAI, services) -> None:  # type: ignore[no-untyped-def]
    file_id = upload(client, chat_jsonl())
    first = client.fine_tuning.jobs.create(model=MODEL, training_file=file_id)
    assert first.status == "validating_files"
    assert await until_validated(client, first.id) == "queued"
    second = client.fine_tuning.jobs.create(model=MODEL, training_file=file_id)
    assert await until_validated(client, second.id) == "queued"

    ordered = [e.message for e in messages(client, second.id)]
    assert ordered[:2] == [f"Created fine-tuning job: {second.id}",
                           f"Validating training file: {file_id}"]
    assert ordered[2] == "Files validated, moving job to queued state"
    one, two = queued_event(client, first.id), queued_event(client, second.id)
    # No worker runs here: the first job is still in line ahead of the second.
    assert two.data["queue_position"] == one.data["queue_position"] + 1
    assert two.data["jobs_ahead"] == two.data["queue_position"] - 1
    assert f"position {two.data['queue_position']} in the queue" in two.message
    # Queued in the database first, then enqueued.
    assert await services.ctx.queue.status(f"{second.id}:1") == QueueStatus.queued

    # A job that leaves the line no longer counts ahead of the next one.
    client.fine_tuning.jobs.cancel(first.id)
    third = client.fine_tuning.jobs.create(model=MODEL, training_file=file_id)
    assert await until_validated(client, third.id) == "queued"
    assert queued_event(client, third.id).data["queue_position"] == two.data["queue_position"]
    for job in (second, third):
        client.fine_tuning.jobs.cancel(job.id)


BAD_SHAPE = (b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", '
             b'"content": "yo"}]}\n' * 2 + b'{"prompt": "x", "text": 1}\n'
             + b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", '
               b'"content": "yo"}]}\n' * 9)


@pytest.mark.parametrize(("training", "validation", "param"), [
    (BAD_SHAPE, None, "training_file"),
    (chat_jsonl(3), None, "training_file"),
    (chat_jsonl(), BAD_SHAPE, "validation_file"),
])
async def test_invalid_data_fails_the_job_as_the_worker_would(
        client: openai.OpenAI, services, tmp_path: Path, training: bytes,  # type: ignore[no-untyped-def]
        validation: bytes | None, param: str) -> None:
    from trainer.data import DataError, validate_files

    train_id = upload(client, training)
    valid_id = upload(client, validation) if validation is not None else None
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=train_id,
                                         validation_file=valid_id)
    assert await until_validated(client, job.id) == "failed"
    error = client.fine_tuning.jobs.retrieve(job.id).error
    assert error is not None and error.param == param

    # The worker's own validation says exactly the same.
    (tmp_path / "t.jsonl").write_bytes(training)
    valid_path = None
    if validation is not None:
        valid_path = tmp_path / "v.jsonl"
        valid_path.write_bytes(validation)
    with pytest.raises(DataError) as worker:
        validate_files(tmp_path / "t.jsonl", valid_path, "supervised")  # type: ignore[arg-type]
    assert (error.code, error.message) == (worker.value.code, worker.value.message)
    if training is BAD_SHAPE or validation is BAD_SHAPE:
        assert error.message.startswith("line 3: ")
    assert messages(client, job.id)[-1].message == f"Fine-tuning job failed: {error.message}"
    assert await services.ctx.queue.status(f"{job.id}:1") == QueueStatus.not_found


async def test_a_cancel_during_validation_wins(client: openai.OpenAI, services,  # type: ignore[no-untyped-def]
                                               tenant_a) -> None:
    """Validation and cancel fired together, in this process: whichever comes first, a
    cancelled job is never queued or enqueued afterwards."""
    from server.auth import Principal
    from server.service.requests import JobCreateRequest

    principal = Principal(tenant_a.organization_id, "test")
    file_id = upload(client, chat_jsonl())
    outcomes = set()
    for delay in (0.0, 0.0, 0.01, 0.05, 0.2):
        job = await services.jobs.create(principal, JobCreateRequest.model_validate(
            {"model": MODEL, "training_file": file_id}))
        await asyncio.sleep(delay)
        await services.jobs.cancel(principal, job.id)
        await services.validation.wait_idle()
        assert (await services.jobs.get(principal, job.id)).status == "cancelled"
        page = await services.jobs.list_events(principal, job.id, limit=100, order="asc")
        said = [e.message for e in page.data]
        assert said[-1] == "Fine-tuning job cancelled"
        validated = "Files validated, moving job to queued state" in said
        outcomes.add(validated)
        if not validated:  # the cancel came first: never enqueued
            assert await services.ctx.queue.status(f"{job.id}:1") == QueueStatus.not_found
        # The validation let go of the job either way.
        async with services.ctx.sessions() as session:
            owner = (await session.execute(
                select(Job.lease_owner).where(Job.id == job.id))).scalar_one()
        assert owner is None
    assert False in outcomes  # the cancel won at least the immediate races


class _DiedBeforeValidating:
    """What an API process that died right after creating a job left behind."""

    def start(self, job_id: str) -> bool:
        return False


async def test_the_reconciler_validates_again_what_a_dead_api_left(
        client: openai.OpenAI, services, tenant_a) -> None:  # type: ignore[no-untyped-def]
    from server.auth import Principal
    from server.service.jobs import JobService
    from server.service.requests import JobCreateRequest

    dead_api = JobService(services.ctx, _DiedBeforeValidating())  # type: ignore[arg-type]
    principal = Principal(tenant_a.organization_id, "test")
    file_id = upload(client, chat_jsonl())
    job = await dead_api.create(principal, JobCreateRequest.model_validate(
        {"model": MODEL, "training_file": file_id}))
    # It died mid-validation: its lease (1 s) lapses; the API server's reconciler (every
    # second here) validates the job again, queues and enqueues it.
    assert await services.protocol.claim(job.id, "api-validation:dead", 1)
    assert await until_validated(client, job.id) == "queued"
    assert await services.ctx.queue.status(f"{job.id}:1") == QueueStatus.queued
    said = [e.message for e in messages(client, job.id)]
    assert said.count("Files validated, moving job to queued state") == 1
    client.fine_tuning.jobs.cancel(job.id)

