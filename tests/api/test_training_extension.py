"""The `training` extension and continuing from an `ft:` model, over REST with the official
openai SDK: every rule is a 400 naming its param with nothing stored, valid values are stored
and echoed, and a job started from the caller's own model or checkpoint shows its lineage."""

from __future__ import annotations

import dataclasses
import io
import uuid
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import func, select

from server.auth import Principal
from server.db.models import FineTunedModel, Job, JobCheckpoint
from tests.api.data import chat_jsonl
from tests.conftest import Tenant
from tuneforge.domain import checkpoint_model_name, fine_tuned_model_name, new_id, now
from tuneforge.layout import adapter_prefix, checkpoint_prefix

MODEL = "SmolLM2-135M-Instruct"
PARENT_LORA = {"rank": 8, "alpha": 32.0, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"],
               "quantization": "none"}


@pytest.fixture
def training_file(client: openai.OpenAI) -> str:
    return client.files.create(file=("train.jsonl", io.BytesIO(chat_jsonl())),
                               purpose="fine-tune").id


@pytest.fixture
def validation_file(client: openai.OpenAI) -> str:
    return client.files.create(file=("valid.jsonl", io.BytesIO(chat_jsonl(4))),
                               purpose="fine-tune").id


async def make_parent(services: Any, tenant: Tenant, *, tuning: str = "lora",
                      deleted: bool = False, steps: tuple[int, ...] = (),
                      stored_steps: tuple[int, ...] = ()) -> str:
    """A succeeded SFT job of `tenant` with its model (and checkpoint rows at `steps`, whose
    weights are in the store for `stored_steps`), as a worker leaves them."""
    job_id = new_id("ftjob-")
    name = fine_tuned_model_name(MODEL, tenant.organization_id, "sft", job_id)
    async with services.ctx.sessions() as session, session.begin():
        session.add(Job(
            id=job_id, organization_id=tenant.organization_id, model=MODEL, method="supervised",
            training_file="file-x", seed=1, status="succeeded",
            hyperparameters={"batch_size": 4, "learning_rate_multiplier": 1.0, "n_epochs": 1},
            lora=PARENT_LORA, result_files=[], fine_tuned_model=name, base_model=MODEL,
            training={"tuning": tuning}, finished_at=now()))
        await session.flush()
        session.add(FineTunedModel(id=name, organization_id=tenant.organization_id,
                                   job_id=job_id, base_model=MODEL, tuning=tuning,
                                   deleted_at=now() if deleted else None))
        for step in steps:
            session.add(JobCheckpoint(id=new_id("ftckpt-"), job_id=job_id, step_number=step,
                                      metrics={"step": step},
                                      fine_tuned_model_checkpoint=checkpoint_model_name(
                                          name, step)))
    for step in stored_steps:
        await services.ctx.store.put_bytes(
            f"{checkpoint_prefix(job_id, step)}/adapter_config.json", b"{}")
    return name


async def job_count(services: Any) -> int:
    async with services.ctx.sessions() as session:
        return (await session.execute(select(func.count()).select_from(Job))).scalar_one()


async def refused(client: openai.OpenAI, services: Any, **arguments: Any) -> openai.APIError:
    """The 400 for `arguments`, after checking that nothing was stored (so nothing queued)."""
    before = await job_count(services)
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.create(**arguments)
    assert await job_count(services) == before
    return err.value


async def test_training_is_stored_echoed_and_reaches_the_worker(
        client: openai.OpenAI, services: Any, training_file: str) -> None:
    training = {"tuning": "qlora", "max_seq_length": 512, "warmup_ratio": 0.1,
                "lr_scheduler": "linear", "weight_decay": 0.0,
                "gradient_accumulation_steps": 2, "optimizer": "adamw",
                "gradient_checkpointing": "on", "validation_split": 0.2, "eval_interval": 5,
                "early_stopping": {"patience": 2, "min_delta": 0.01}}
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=training_file,
                                         extra_body={"training": training})
    shown = (job.model_extra or {})["training"]
    assert shown == training
    assert (client.fine_tuning.jobs.retrieve(job.id).model_extra or {})["training"] == training
    assert "base_model" not in (job.model_extra or {})  # same as `model`: not repeated
    assert "parent_model" not in (job.model_extra or {})
    spec = await services.protocol.spec(job.id)
    assert spec.training.model_dump(mode="json", exclude_none=True) == training
    assert spec.base_model == MODEL and spec.parent is None


async def test_defaults_show_auto_and_the_resolved_values_once_written(
        client: openai.OpenAI, services: Any, training_file: str) -> None:
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=training_file)
    assert (job.model_extra or {})["training"] == {
        "tuning": "lora", "max_seq_length": 1024, "warmup_ratio": "auto",
        "lr_scheduler": "auto", "weight_decay": "auto", "gradient_accumulation_steps": "auto",
        "optimizer": "auto", "gradient_checkpointing": "auto", "eval_interval": "auto"}
    resolved = {"tuning": "lora", "tuning_reason": "LoRA was asked for",
                "max_seq_length": 1024, "warmup_ratio": 0.05, "lr_scheduler": "cosine",
                "weight_decay": 0.01, "gradient_accumulation_steps": 1,
                "effective_batch_size": 4, "optimizer": "adamw",
                "gradient_checkpointing": False, "validation_split": None, "eval_interval": 10,
                "early_stopping": None}
    async with services.ctx.sessions() as session, session.begin():
        (await session.execute(select(Job).where(Job.id == job.id))).scalar_one() \
            .resolved_training = resolved
    shown = (client.fine_tuning.jobs.retrieve(job.id).model_extra or {})["training"]
    assert shown == {**{k: v for k, v in resolved.items() if v is not None},
                     "gradient_checkpointing": "off"}


@pytest.mark.parametrize(("training", "extra", "param"), [
    # field rules (pydantic) name the field inside `training`
    ({"tuning": "bogus"}, {}, "training.tuning"),
    ({"warmup_ratio": 0.9}, {}, "training.warmup_ratio"),
    ({"max_seq_length": 8}, {}, "training.max_seq_length"),
    ({"early_stopping": {"patience": 0}, "validation_split": 0.1}, {},
     "training.early_stopping.patience"),
    ({"learning_rate": 1}, {}, "training.learning_rate"),
    # rules across fields (the service)
    ({"validation_split": 0.1}, {"validation_file": True}, "training.validation_split"),
    ({"early_stopping": {"patience": 2}}, {}, "training.early_stopping"),
    ({"spectrum_fraction": 0.3}, {}, "training.spectrum_fraction"),
    ({"tuning": "full", "spectrum_fraction": 0.3}, {}, "training.spectrum_fraction"),
    ({"tuning": "full"}, {"lora": {"rank": 8}}, "lora"),
    ({"tuning": "spectrum"}, {"lora": {"rank": 8}}, "lora"),
    ({"tuning": "qlora"}, {"lora": {"quantization": "none"}}, "lora.quantization"),
])
async def test_invalid_training_names_the_param_and_stores_nothing(
        client: openai.OpenAI, services: Any, training_file: str, validation_file: str,
        training: dict[str, Any], extra: dict[str, Any], param: str) -> None:
    body: dict[str, Any] = {"training": training}
    if "lora" in extra:
        body["lora"] = extra["lora"]
    error = await refused(client, services, model=MODEL, training_file=training_file,
                          validation_file=validation_file if extra.get("validation_file")
                          else openai.NOT_GIVEN, extra_body=body)
    assert error.param == param, error.message


async def test_early_stopping_with_a_validation_file_is_accepted(
        client: openai.OpenAI, training_file: str, validation_file: str) -> None:
    job = client.fine_tuning.jobs.create(
        model=MODEL, training_file=training_file, validation_file=validation_file,
        extra_body={"training": {"tuning": "spectrum", "spectrum_fraction": 0.5,
                                 "early_stopping": {"patience": 1}}})
    shown = (job.model_extra or {})["training"]
    assert shown["spectrum_fraction"] == 0.5
    assert shown["early_stopping"] == {"patience": 1, "min_delta": 0.0}


async def test_max_seq_length_above_what_the_inference_servers_serve(
        services: Any, tenant_a: Tenant, training_file: str) -> None:
    from server.service.jobs import JobService
    from server.service.requests import JobCreateRequest
    from tuneforge.errors import ApiError
    from tuneforge.settings import ServingSettings, VllmServerSettings

    settings = services.ctx.settings.model_copy(update={"serving": ServingSettings(
        servers=[VllmServerSettings(base_model=MODEL, url="http://127.0.0.1:9",
                                    max_model_len=512)])})
    jobs = JobService(dataclasses.replace(services.ctx, settings=settings), services.validation)
    principal = Principal(tenant_a.organization_id, "tests")

    def request(length: int) -> JobCreateRequest:
        return JobCreateRequest(model=MODEL, training_file=training_file,
                                training={"max_seq_length": length})

    with pytest.raises(ApiError) as err:
        await jobs.check_request(principal, request(1024))
    assert (err.value.status, err.value.param) == (400, "training.max_seq_length")
    assert "512" in err.value.message
    checked = await jobs.check_request(principal, request(512))
    assert checked.training.max_seq_length == 512 and checked.base_model == MODEL


# ---- continuing from an ft: model -------------------------------------------------------


async def test_dpo_from_own_sft_model_shows_lineage(
        client: openai.OpenAI, services: Any, tenant_a: Tenant, training_file: str) -> None:
    parent = await make_parent(services, tenant_a)
    job = client.fine_tuning.jobs.create(
        model=parent, training_file=training_file,
        method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1}}},
        extra_body={"training": {"tuning": "qlora"}})
    extra = job.model_extra or {}
    assert job.model == parent  # as given, as OpenAI shows it
    assert extra["base_model"] == MODEL and extra["parent_model"] == parent
    # The adapter continues the parent's: its shape, 4-bit base for qlora.
    assert extra["lora"] == {**PARENT_LORA, "quantization": "4bit"}
    spec = await services.protocol.spec(job.id)
    assert spec.base_model == MODEL and spec.model == parent
    assert spec.parent is not None and spec.parent.model == parent and spec.parent.step is None
    assert spec.parent.weights_prefix == adapter_prefix(spec.parent.job_id)
    assert spec.parent.tuning == "lora"
    events = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=20)]
    assert f"Continuing from {parent} (base model {MODEL})" in events


async def test_from_a_stored_checkpoint(client: openai.OpenAI, services: Any,
                                        tenant_a: Tenant, training_file: str) -> None:
    parent = await make_parent(services, tenant_a, steps=(5, 10), stored_steps=(10,))
    checkpoint = checkpoint_model_name(parent, 10)
    job = client.fine_tuning.jobs.create(model=checkpoint, training_file=training_file)
    assert (job.model_extra or {})["parent_model"] == checkpoint
    spec = await services.protocol.spec(job.id)
    assert spec.parent is not None and spec.parent.step == 10
    assert spec.parent.weights_prefix == checkpoint_prefix(spec.parent.job_id, 10)

    # A step that never was, and one whose weights were pruned from the store.
    for step in (7, 5):
        error = await refused(client, services, model=checkpoint_model_name(parent, step),
                              training_file=training_file)
        assert (error.param, error.code) == ("model", "checkpoint_not_found"), error.message


async def test_another_tenants_model_is_refused_like_a_nonexistent_one(
        client: openai.OpenAI, services: Any, tenant_b: Tenant, training_file: str) -> None:
    theirs = await make_parent(services, tenant_b, steps=(3,), stored_steps=(3,))
    invented = f"ft:{MODEL}:org-nobody::{uuid.uuid4().hex[:24]}"
    answers = []
    for name in (theirs, invented, checkpoint_model_name(theirs, 3),
                 checkpoint_model_name(invented, 3)):
        error = await refused(client, services, model=name, training_file=training_file)
        assert (error.status_code, error.param, error.code) == (
            400, "model", "model_not_available")
        answers.append(error.message.replace(name, "NAME"))
    assert len(set(answers)) == 1, answers


async def test_deleted_and_full_weight_parents_are_refused(
        client: openai.OpenAI, services: Any, tenant_a: Tenant, training_file: str) -> None:
    deleted = await make_parent(services, tenant_a, deleted=True, steps=(2,), stored_steps=(2,))
    for name in (deleted, checkpoint_model_name(deleted, 2)):
        error = await refused(client, services, model=name, training_file=training_file)
        assert (error.param, error.code) == ("model", "model_deleted")
        assert "deleted" in error.message
    for tuning in ("full", "spectrum"):
        full = await make_parent(services, tenant_a, tuning=tuning)
        error = await refused(client, services, model=full, training_file=training_file)
        assert (error.param, error.code) == ("model", "unsupported_parent")
        assert "not supported" in error.message


@pytest.mark.parametrize(("body", "param"), [
    ({"lora": {"rank": 4}}, "lora"),
    ({"training": {"tuning": "full"}}, "training.tuning"),
    ({"training": {"tuning": "spectrum", "spectrum_fraction": 0.2}}, "training.tuning"),
])
async def test_the_adapter_shape_comes_from_the_parent(
        client: openai.OpenAI, services: Any, tenant_a: Tenant, training_file: str,
        body: dict[str, Any], param: str) -> None:
    parent = await make_parent(services, tenant_a)
    error = await refused(client, services, model=parent, training_file=training_file,
                          extra_body=body)
    assert error.param == param, error.message


async def test_model_objects_show_lineage(client: openai.OpenAI, services: Any,
                                          tenant_a: Tenant, training_file: str) -> None:
    parent = await make_parent(services, tenant_a, steps=(4,))
    child_job = client.fine_tuning.jobs.create(model=parent, training_file=training_file)
    child = fine_tuned_model_name(MODEL, tenant_a.organization_id, "dpo", child_job.id)
    async with services.ctx.sessions() as session, session.begin():
        session.add(FineTunedModel(id=child, organization_id=tenant_a.organization_id,
                                   job_id=child_job.id, base_model=MODEL, tuning="qlora",
                                   parent_model=parent))
    shown = client.models.retrieve(child).model_extra or {}
    assert shown == {"base_model": MODEL, "tuning": "qlora", "parent": parent}
    first = client.models.retrieve(parent).model_extra or {}
    assert first == {"base_model": MODEL, "tuning": "lora"}  # from a base: no parent
    assert (client.models.retrieve(checkpoint_model_name(parent, 4)).model_extra or {}) == first
    listed = {m.id: m.model_extra or {} for m in client.models.list()}
    assert listed[child]["parent"] == parent
    # A base model shows its card (docs/base_models.md), never a fine-tuned model's lineage.
    assert not {"base_model", "tuning", "parent"} & set(listed[MODEL])


async def test_extended_objects_conform_to_openais_document(
        api_server: Any, tenant_a: Tenant, services: Any, training_file: str) -> None:
    """The job and model objects with every new field, against OpenAI's document plus the
    listed extensions (tests/openapi_spec.py)."""
    from tests import openapi_spec

    parent = await make_parent(services, tenant_a, steps=(2,))
    async with httpx.AsyncClient(base_url=api_server.base_url, timeout=30, headers={
            "Authorization": f"Bearer {tenant_a.api_key}"}) as http:
        job = openapi_spec.check(await http.post("/fine_tuning/jobs", json={
            "model": parent, "training_file": training_file,
            "training": {"tuning": "auto", "validation_split": 0.1, "eval_interval": 4,
                         "early_stopping": {"patience": 2}}}))
        assert job["parent_model"] == parent
        async with services.ctx.sessions() as session, session.begin():
            (await session.execute(select(Job).where(Job.id == job["id"]))).scalar_one() \
                .resolved_training = {
                    "tuning": "qlora", "tuning_reason": "fits", "max_seq_length": 1024,
                    "warmup_ratio": 0.05, "lr_scheduler": "cosine", "weight_decay": 0.01,
                    "gradient_accumulation_steps": 2, "effective_batch_size": 8,
                    "optimizer": "adamw", "gradient_checkpointing": True,
                    "validation_split": 0.1, "eval_interval": 4,
                    "early_stopping": {"patience": 2, "min_delta": 0.0}}
        resolved = openapi_spec.check(await http.get(f"/fine_tuning/jobs/{job['id']}"))
        assert resolved["training"]["gradient_checkpointing"] == "on"
        openapi_spec.check(await http.get("/models"))
        openapi_spec.check(await http.get(f"/models/{parent}"))
        openapi_spec.check(await http.get(f"/models/{checkpoint_model_name(parent, 2)}"))
