"""Models API: base models, the caller's fine-tuned models, delete."""

from __future__ import annotations

import io

import openai
import pytest

from tests.api.data import chat_jsonl
from tests.conftest import until_validated
from tuneforge.domain import JobStatus, fine_tuned_model_name

MODEL = "SmolLM2-135M-Instruct"


async def finish_job(services, client: openai.OpenAI, suffix: str) -> str:  # type: ignore[no-untyped-def]
    """Drive a job to `succeeded` through the service layer, as a worker would."""
    file_id = client.files.create(file=("t.jsonl", io.BytesIO(chat_jsonl())),
                                  purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=file_id, suffix=suffix)
    assert await until_validated(client, job.id) == "queued"
    assert await services.protocol.advance(job.id, [JobStatus.QUEUED], JobStatus.RUNNING)
    name = fine_tuned_model_name(MODEL, job.organization_id, suffix, job.id)
    assert await services.protocol.succeed(job.id, fine_tuned_model=name, result_files=[],
                                           trained_tokens=1234)
    return job.id


async def test_list_get_delete_fine_tuned_model(client: openai.OpenAI, client_b: openai.OpenAI,
                                                services) -> None:  # type: ignore[no-untyped-def]
    job_id = await finish_job(services, client, "models-test")
    job = client.fine_tuning.jobs.retrieve(job_id)
    assert job.status == "succeeded" and job.trained_tokens == 1234
    name = job.fine_tuned_model
    assert name == f"ft:{MODEL}:{job.organization_id}:models-test:{job_id.removeprefix('ftjob-')}"

    ids = [m.id for m in client.models.list()]
    assert MODEL in ids and name in ids
    model = client.models.retrieve(name)
    assert model.owned_by == job.organization_id
    assert client.models.retrieve(MODEL).owned_by == "tuneforge"

    assert name not in [m.id for m in client_b.models.list()]
    with pytest.raises(openai.NotFoundError):
        client_b.models.retrieve(name)
    with pytest.raises(openai.NotFoundError):
        client_b.models.delete(name)

    with pytest.raises(openai.PermissionDeniedError):
        client.models.delete(MODEL)
    assert client.models.delete(name).deleted is True
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve(name)
    with pytest.raises(openai.NotFoundError):
        client.models.delete(name)
    assert name not in [m.id for m in client.models.list()]


async def test_checkpoint_models_are_retrievable(client: openai.OpenAI,
                                                 services) -> None:  # type: ignore[no-untyped-def]
    job_id = await finish_job(services, client, "ckpt")
    job = client.fine_tuning.jobs.retrieve(job_id)
    checkpoint_name = f"{job.fine_tuned_model}:ckpt-step-5"
    await services.protocol.add_checkpoint(job_id, step=5, metrics={"step": 5, "train_loss": 1.5},
                                           model_name=checkpoint_name)
    listed = client.fine_tuning.jobs.checkpoints.list(job_id).data
    assert [c.step_number for c in listed] == [5]
    assert listed[0].metrics.train_loss == 1.5
    assert listed[0].fine_tuned_model_checkpoint == checkpoint_name
    assert client.models.retrieve(checkpoint_name).id == checkpoint_name
