"""Fine-tuning jobs API through the official openai SDK: parameters, lists, control, errors."""

from __future__ import annotations

import io
import uuid

import httpx
import openai
import pytest

from tests.api.data import chat_jsonl
from tests.conftest import until_validated

MODEL = "SmolLM2-135M-Instruct"


@pytest.fixture
def training_file(client: openai.OpenAI) -> str:
    return client.files.create(file=("train.jsonl", io.BytesIO(chat_jsonl())),
                               purpose="fine-tune").id


def test_create_with_defaults(client: openai.OpenAI, training_file: str,
                              tenant_a) -> None:  # type: ignore[no-untyped-def]
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=training_file)
    assert job.id.startswith("ftjob-")
    assert job.object == "fine_tuning.job"
    assert job.status == "validating_files"
    assert job.organization_id == tenant_a.organization_id
    assert job.model == MODEL and job.training_file == training_file
    assert job.method is not None and job.method.type == "supervised"
    assert job.hyperparameters.n_epochs == "auto"
    assert isinstance(job.seed, int)
    assert job.result_files == [] and job.fine_tuned_model is None
    extension = job.model_extra or {}
    assert extension["lora"] == {"rank": 16, "alpha": 16.0, "dropout": 0.0,
                                 "target_modules": "all-linear", "quantization": "auto"}
    # Only its status moves on meanwhile (the API validates its files and queues it).
    assert client.fine_tuning.jobs.retrieve(job.id).model_copy(update={"status": job.status}) \
        == job


def test_create_with_every_parameter(client: openai.OpenAI, training_file: str) -> None:
    job = client.fine_tuning.jobs.create(
        model=MODEL, training_file=training_file, validation_file=training_file,
        suffix="my-model_v1.2", seed=42, metadata={"team": "search", "run": "7"},
        integrations=[{"type": "wandb", "wandb": {"project": "tf", "tags": ["a"]}}],
        method={"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": 3, "batch_size": 4, "learning_rate_multiplier": 0.5}}},
        extra_body={"lora": {"rank": 8, "alpha": 32, "dropout": 0.05,
                             "target_modules": ["q_proj", "v_proj"], "quantization": "4bit"}},
    )
    assert job.validation_file == training_file
    assert job.seed == 42 and job.metadata == {"team": "search", "run": "7"}
    assert job.integrations and job.integrations[0].wandb.project == "tf"
    assert job.method and job.method.supervised
    assert job.method.supervised.hyperparameters.n_epochs == 3
    assert job.hyperparameters.batch_size == 4
    assert (job.model_extra or {})["lora"]["target_modules"] == ["q_proj", "v_proj"]
    assert (job.model_extra or {})["suffix"] == "my-model_v1.2"


def test_create_dpo_and_legacy_forms(client: openai.OpenAI, training_file: str) -> None:
    dpo = client.fine_tuning.jobs.create(
        model=MODEL, training_file=training_file,
        method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "n_epochs": 2}}},
    )
    assert dpo.method and dpo.method.type == "dpo" and dpo.method.dpo
    assert dpo.method.dpo.hyperparameters.beta == 0.2
    assert dpo.method.dpo.hyperparameters.batch_size == "auto"
    legacy = client.fine_tuning.jobs.create(
        model=MODEL, training_file=training_file, hyperparameters={"n_epochs": 5})
    assert legacy.method and legacy.method.type == "supervised"
    assert legacy.hyperparameters.n_epochs == 5


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"model": "gpt-9"}, "model"),
        ({"training_file": "file-doesnotexist"}, "training_file"),
        ({"validation_file": "file-doesnotexist"}, "validation_file"),
        ({"suffix": "x" * 65}, "suffix"),
        ({"suffix": "has:colon"}, "suffix"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"hyperparameters": {"n_epochs": 51}}, "hyperparameters.n_epochs"),
        ({"hyperparameters": {"n_epochs": 0}}, "hyperparameters.n_epochs"),
        ({"hyperparameters": {"batch_size": 257}}, "hyperparameters.batch_size"),
        ({"method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 2.5}}}},
         "method.dpo.hyperparameters.beta"),
        ({"method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0}}}},
         "method.dpo.hyperparameters.beta"),
        ({"method": {"type": "reinforcement"}}, "method.type"),
        ({"method": {"type": "supervised"}, "hyperparameters": {"n_epochs": 2}},
         "hyperparameters"),
    ],
)
def test_invalid_requests_name_the_param_and_store_nothing(
    client: openai.OpenAI, training_file: str, kwargs: dict, param: str
) -> None:
    before = [j.id for j in client.fine_tuning.jobs.list(limit=100)]
    arguments = {"model": MODEL, "training_file": training_file, **kwargs}
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.create(**arguments)
    assert err.value.status_code == 400
    assert err.value.param == param, err.value.message
    assert [j.id for j in client.fine_tuning.jobs.list(limit=100)] == before


def test_training_file_must_be_fine_tune_purpose(client: openai.OpenAI) -> None:
    other = client.files.create(file=("notes.jsonl", io.BytesIO(b'{"a":1}\n')),
                                purpose="batch").id
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.create(model=MODEL, training_file=other)
    assert (err.value.param, err.value.code) == ("training_file", "invalid_file_purpose")


def test_list_paginates_and_filters_by_metadata(client: openai.OpenAI,
                                                training_file: str) -> None:
    tag = uuid.uuid4().hex[:8]
    ids = [client.fine_tuning.jobs.create(model=MODEL, training_file=training_file,
                                          metadata={"batch": tag, "i": str(i)}).id
           for i in range(3)]
    page1 = client.fine_tuning.jobs.list(limit=2, metadata={"batch": tag})
    assert [j.id for j in page1.data] == ids[::-1][:2]
    assert page1.has_more is True
    page2 = client.fine_tuning.jobs.list(limit=2, after=page1.data[-1].id,
                                         metadata={"batch": tag})
    assert [j.id for j in page2.data] == [ids[0]] and page2.has_more is False
    only = client.fine_tuning.jobs.list(metadata={"batch": tag, "i": "1"})
    assert [j.id for j in only.data] == [ids[1]]
    everything = [j.id for j in client.fine_tuning.jobs.list(limit=2)]  # SDK auto-pages
    assert set(ids) <= set(everything)


def test_events_are_listed_newest_first_with_cursor(client: openai.OpenAI,
                                                    training_file: str) -> None:
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=training_file)
    events = client.fine_tuning.jobs.list_events(job.id).data
    assert [e.message for e in events][::-1][:2] == [
        f"Created fine-tuning job: {job.id}", f"Validating training file: {training_file}"]
    assert all(e.object == "fine_tuning.job.event" and e.level == "info" for e in events)
    older = client.fine_tuning.jobs.list_events(job.id, after=events[0].id, limit=1)
    assert older.data[0].id == events[1].id
    assert client.fine_tuning.jobs.checkpoints.list(job.id).data == []


def test_cancel_then_illegal_transitions(client: openai.OpenAI, training_file: str) -> None:
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=training_file)
    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    for action in (client.fine_tuning.jobs.cancel, client.fine_tuning.jobs.pause,
                   client.fine_tuning.jobs.resume):
        with pytest.raises(openai.ConflictError) as err:
            action(job.id)
        assert "cancelled" in err.value.message
    assert client.fine_tuning.jobs.retrieve(job.id).status == "cancelled"
    assert client.fine_tuning.jobs.list_events(job.id).data[0].message == \
        "Fine-tuning job cancelled"


async def test_pause_resume_moves_a_running_job(client: openai.OpenAI, training_file: str,
                                                services) -> None:  # type: ignore[no-untyped-def]
    from tuneforge.domain import JobStatus

    job = client.fine_tuning.jobs.create(model=MODEL, training_file=training_file)
    with pytest.raises(openai.ConflictError):
        client.fine_tuning.jobs.pause(job.id)  # not running yet
    assert await until_validated(client, job.id) == "queued"
    assert await services.protocol.advance(job.id, [JobStatus.QUEUED], JobStatus.RUNNING)
    assert client.fine_tuning.jobs.pause(job.id).status == "paused"
    resumed = client.fine_tuning.jobs.resume(job.id)
    assert resumed.status == "queued"
    status = await services.ctx.queue.status(f"{job.id}:2")
    assert status.value in ("queued", "deferred")


def test_unknown_job_and_tenant_isolation(client: openai.OpenAI, client_b: openai.OpenAI,
                                          training_file: str) -> None:
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.retrieve("ftjob-nope")
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=training_file)
    for action in (client_b.fine_tuning.jobs.retrieve, client_b.fine_tuning.jobs.cancel,
                   client_b.fine_tuning.jobs.list_events,
                   client_b.fine_tuning.jobs.checkpoints.list):
        with pytest.raises(openai.NotFoundError):
            action(job.id)
    assert job.id not in [j.id for j in client_b.fine_tuning.jobs.list(limit=100)]
    # Another tenant's file cannot be used for training either.
    with pytest.raises(openai.BadRequestError) as err:
        client_b.fine_tuning.jobs.create(model=MODEL, training_file=training_file)
    assert err.value.param == "training_file"
    assert client.fine_tuning.jobs.retrieve(job.id).status in ("validating_files", "queued")


def test_file_in_use_by_a_live_job_cannot_be_deleted(client: openai.OpenAI,
                                                     training_file: str) -> None:
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=training_file)
    with pytest.raises(openai.ConflictError) as err:
        client.files.delete(training_file)
    assert err.value.code == "file_in_use"
    client.fine_tuning.jobs.cancel(job.id)
    assert client.files.delete(training_file).deleted


def test_errors_use_the_openai_envelope(api_server, tenant_a) -> None:  # type: ignore[no-untyped-def]
    headers = {"Authorization": f"Bearer {tenant_a.api_key}"}
    body = httpx.post(f"{api_server.base_url}/fine_tuning/jobs", headers=headers,
                      content=b"{not json", timeout=10)
    assert body.status_code == 400
    assert set(body.json()["error"]) == {"message", "type", "param", "code"}
    unknown = httpx.get(f"{api_server.base_url}/nothing/here", headers=headers, timeout=10)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_url"
