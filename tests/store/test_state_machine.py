"""The job state machine on SQLite and PostgreSQL: guarded transitions under concurrency."""

from __future__ import annotations

import asyncio
import io

import openai
import pytest

from tests.api.data import chat_jsonl
from tests.conftest import until_validated
from tuneforge.domain import JobStatus

MODEL = "SmolLM2-135M-Instruct"


def new_job(client: openai.OpenAI) -> str:
    file_id = client.files.create(file=("t.jsonl", io.BytesIO(chat_jsonl())),
                                  purpose="fine-tune").id
    return client.fine_tuning.jobs.create(model=MODEL, training_file=file_id).id


async def queued_job(client: openai.OpenAI) -> str:
    """A new job once the API has validated its files and queued it (as a worker finds it)."""
    job_id = new_job(client)
    assert await until_validated(client, job_id) == "queued"
    return job_id


async def test_concurrent_cancel_and_finish_have_one_winner(
    client: openai.OpenAI, services, tenant_a  # type: ignore[no-untyped-def]
) -> None:
    from server.auth import Principal
    from tuneforge.errors import ApiError

    principal = Principal(tenant_a.organization_id, "test")
    outcomes = {"cancelled": 0, "succeeded": 0}
    for _ in range(8):
        job_id = await queued_job(client)
        assert await services.protocol.advance(job_id, [JobStatus.QUEUED],
                                               JobStatus.RUNNING)

        async def cancel(job_id: str = job_id) -> bool:
            try:
                await services.jobs.cancel(principal, job_id)
                return True
            except ApiError as exc:
                assert exc.status == 409
                return False

        finish = services.protocol.succeed(job_id, fine_tuned_model=f"ft:{MODEL}:x::{job_id}",
                                           result_files=[], trained_tokens=1)
        cancelled, succeeded = await asyncio.gather(cancel(), finish)
        assert cancelled != succeeded, "exactly one of cancel and finish may win"
        job = client.fine_tuning.jobs.retrieve(job_id)
        if cancelled:
            assert job.status == "cancelled" and job.fine_tuned_model is None
            assert job_id not in str([m.id for m in client.models.list()])
        else:
            assert job.status == "succeeded" and job.fine_tuned_model
        outcomes[job.status] += 1
    assert sum(outcomes.values()) == 8


async def test_lease_keeps_a_job_on_one_worker(client: openai.OpenAI,
                                               services) -> None:  # type: ignore[no-untyped-def]
    job_id = await queued_job(client)
    claims = await asyncio.gather(*(services.protocol.claim(job_id, f"worker-{i}", 60)
                                    for i in range(5)))
    assert sum(claims) == 1
    owner = f"worker-{claims.index(True)}"
    other = "worker-x"
    assert not await services.protocol.claim(job_id, other, 60)
    assert await services.protocol.heartbeat(job_id, other, 60) is None
    assert await services.protocol.heartbeat(job_id, owner, 60) == JobStatus.QUEUED
    # Only the lease holder moves it on.
    assert not await services.protocol.advance(job_id, [JobStatus.QUEUED],
                                               JobStatus.RUNNING, worker_id=other)
    assert await services.protocol.advance(job_id, [JobStatus.QUEUED], JobStatus.RUNNING,
                                           worker_id=owner)
    # An expired lease can be taken over.
    assert await services.protocol.claim(job_id, owner, -1)
    assert await services.protocol.claim(job_id, other, 60)


async def test_failure_is_terminal_and_recorded(client: openai.OpenAI,
                                                services) -> None:  # type: ignore[no-untyped-def]
    job_id = new_job(client)
    assert await services.protocol.fail(job_id, code="invalid_training_file",
                                        message="line 3: no assistant message",
                                        param="training_file")
    assert not await services.protocol.fail(job_id, code="x", message="again")
    job = client.fine_tuning.jobs.retrieve(job_id)
    assert job.status == "failed" and job.error is not None
    assert (job.error.code, job.error.param) == ("invalid_training_file", "training_file")
    assert job.error.message == "line 3: no assistant message"
    with pytest.raises(openai.ConflictError):
        client.fine_tuning.jobs.cancel(job_id)
