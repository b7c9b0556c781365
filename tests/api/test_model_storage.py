"""Deleting a model gives its storage back: adapter, merged weights and checkpoints leave S3 at
once, or, while a job still trains from the model, once that job has ended."""

from __future__ import annotations

import io

import httpx
import openai
import pytest

from tests.api.data import chat_jsonl
from tests.api.test_models import finish_job
from tests.conftest import until_validated
from tuneforge.layout import adapter_prefix, as_dir, checkpoint_prefix, job_prefix, merged_prefix


async def store_weights(services, job_id: str) -> None:  # type: ignore[no-untyped-def]
    """What a worker leaves in S3 for a LoRA job that also wrote merged weights."""
    store = services.ctx.store
    for prefix in (adapter_prefix(job_id), checkpoint_prefix(job_id, 2),
                   checkpoint_prefix(job_id, 4)):
        await store.put_bytes(f"{prefix}/adapter_config.json", b'{"r": 8}')
        await store.put_bytes(f"{prefix}/adapter_model.safetensors", b"\0" * 1024)
    await store.put_bytes(f"{merged_prefix(job_id)}/config.json", b"{}")


async def stored(services, job_id: str) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted(o.key for o in await services.ctx.store.list_keys(as_dir(job_prefix(job_id))))


async def test_deleting_a_model_removes_its_weights(client: openai.OpenAI,
                                                    services) -> None:  # type: ignore[no-untyped-def]
    job_id = await finish_job(services, client, "freed")
    other_id = await finish_job(services, client, "kept")
    await store_weights(services, job_id)
    await store_weights(services, other_id)
    kept = await stored(services, other_id)
    assert len(await stored(services, job_id)) == 7

    name = client.fine_tuning.jobs.retrieve(job_id).fine_tuned_model
    assert client.models.delete(name).deleted
    assert await stored(services, job_id) == []
    assert await stored(services, other_id) == kept  # another model's weights stay
    assert await services.model_storage.free() == 0  # nothing is owed


async def test_a_model_a_job_trains_from_keeps_its_weights_until_the_job_ends(
        client: openai.OpenAI, services) -> None:  # type: ignore[no-untyped-def]
    job_id = await finish_job(services, client, "parent")
    await store_weights(services, job_id)
    name = client.fine_tuning.jobs.retrieve(job_id).fine_tuned_model
    await services.protocol.add_checkpoint(job_id, step=4, metrics={"step": 4},
                                           model_name=f"{name}:ckpt-step-4")
    training = client.files.create(file=("t.jsonl", io.BytesIO(chat_jsonl())),
                                   purpose="fine-tune").id
    child = client.fine_tuning.jobs.create(model=f"{name}:ckpt-step-4", training_file=training)
    assert await until_validated(client, child.id) == "queued"

    assert client.models.delete(name).deleted
    assert len(await stored(services, job_id)) == 7  # the child's worker still needs them
    assert await services.model_storage.free() == 0

    assert client.fine_tuning.jobs.cancel(child.id).status == "cancelled"
    await services.model_storage.free()  # or the API's reconciler did, first
    assert await stored(services, job_id) == []
    assert await services.model_storage.free() == 0


async def test_storage_usage_counts_files_models_checkpoints_and_owed_removals(
        client: openai.OpenAI, client_b: openai.OpenAI, services) -> None:  # type: ignore[no-untyped-def]
    def usage(c: openai.OpenAI) -> dict:  # type: ignore[type-arg]
        return c.get("/organization/storage", cast_to=httpx.Response).json()

    before, other_org = usage(client), usage(client_b)
    assert before["object"] == "organization.storage"
    job_id = await finish_job(services, client, "usage")
    await store_weights(services, job_id)
    after = usage(client)
    # finish_job uploaded one training file; the job stored an adapter (2 objects, 1032 bytes)
    # and merged weights (2 bytes), and two checkpoints of 1032 bytes each.
    assert after["files"]["count"] == before["files"]["count"] + 1
    assert after["models"] == {"count": before["models"]["count"] + 1,
                               "bytes": before["models"]["bytes"] + 1032 + 2}
    assert after["checkpoints"] == {"count": before["checkpoints"]["count"] + 2,
                                    "bytes": before["checkpoints"]["bytes"] + 2 * 1032}
    assert after["total_bytes"] == (after["files"]["bytes"] + after["models"]["bytes"]
                                    + after["checkpoints"]["bytes"]
                                    + after["pending_deletion"]["bytes"])
    assert usage(client_b) == other_org

    name = client.fine_tuning.jobs.retrieve(job_id).fine_tuned_model
    assert client.models.delete(name).deleted
    freed = usage(client)
    assert (freed["models"], freed["checkpoints"]) == (before["models"], before["checkpoints"])
    assert freed["pending_deletion"] == after["pending_deletion"]


async def test_the_checkpoints_of_a_deleted_model_go_with_it(
        client: openai.OpenAI, services) -> None:  # type: ignore[no-untyped-def]
    job_id = await finish_job(services, client, "ckpts")
    name = client.fine_tuning.jobs.retrieve(job_id).fine_tuned_model
    checkpoint = f"{name}:ckpt-step-4"
    await services.protocol.add_checkpoint(job_id, step=4, metrics={"step": 4},
                                           model_name=checkpoint)
    assert client.models.retrieve(checkpoint).id == checkpoint
    assert client.models.delete(name).deleted
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve(checkpoint)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model=checkpoint, max_tokens=1,
                                       messages=[{"role": "user", "content": "hi"}])
    # The job still lists it, as OpenAI lists a job's checkpoints.
    assert [c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job_id).data] == [4]
