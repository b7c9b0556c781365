"""What the serving plane asks the service layer (both databases; no vLLM needed)."""

from __future__ import annotations

import pytest

from server.auth import Principal
from server.errors import ApiError
from server.service.requests import JobCreateRequest
from serving.hotload import make_servable
from tests.api.data import chat_jsonl
from tests.conftest import Tenant
from tuneforge.domain import JobStatus, file_key, fine_tuned_model_name, new_id
from tuneforge.settings import Settings

BASE = "SmolLM2-135M-Instruct"


async def _succeeded(services, principal: Principal, suffix: str) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """Through the service layer only (no API server: this module needs no vLLM)."""
    data = chat_jsonl()
    file_id = new_id("file-")
    await services.ctx.store.put_bytes(file_key(file_id), data)
    await services.files.record(principal.organization_id, file_id, "t.jsonl", "fine-tune",
                                len(data))
    job = await services.jobs.create(principal, JobCreateRequest(
        model=BASE, training_file=file_id, suffix=suffix))
    assert await services.jobs.advance(job.id, [JobStatus.VALIDATING_FILES], JobStatus.RUNNING)
    name = fine_tuned_model_name(BASE, job.organization_id, suffix, job.id)
    assert await services.jobs.succeed(job.id, fine_tuned_model=name, result_files=[],
                                       trained_tokens=1)
    return job.id, name


async def test_servable_lookup_scope_and_states(
        services, tenant_a: Tenant, tenant_b: Tenant) -> None:  # type: ignore[no-untyped-def]
    models = services.models
    mine = Principal(tenant_a.organization_id, "k")
    theirs = Principal(tenant_b.organization_id, "k")
    job_id, name = await _succeeded(services, mine, "cat")
    _, newer = await _succeeded(services, mine, "cat2")
    checkpoint = f"{name}:ckpt-step-3"
    await services.jobs.add_checkpoint(job_id, step=3, metrics={"step": 3},
                                       model_name=checkpoint)

    base = await models.servable(theirs, BASE)
    assert base.adapter_prefix is None and base.base_model == BASE
    found = await models.servable(mine, name)
    assert (found.base_model, found.adapter_prefix) == (BASE, f"jobs/{job_id}/adapter")
    found = await models.servable(mine, checkpoint)
    assert found.adapter_prefix == f"jobs/{job_id}/checkpoints/step-3"
    for who, model in ((theirs, name), (theirs, checkpoint), (mine, "ft:nope"), (mine, "x")):
        with pytest.raises(ApiError) as info:
            await models.servable(who, model)
        assert info.value.status == 404

    listed = [m.id for m in await models.servable_models(BASE, limit=1000)]
    assert listed.index(newer) < listed.index(name)  # newest first

    deleted: list[str] = []

    async def hook(model_id: str) -> None:
        deleted.append(model_id)

    models.on_delete.append(hook)
    try:
        with pytest.raises(ApiError):
            await models.delete(theirs, name)
        assert (await models.delete(mine, name)).deleted
    finally:
        models.on_delete.remove(hook)
    assert deleted == [name]
    with pytest.raises(ApiError):
        await models.servable(mine, name)
    assert name not in [m.id for m in await models.servable_models(BASE, limit=1000)]
    states = await models.servable_states([name, newer, checkpoint, "ft:unknown"])
    assert states[name] is None
    assert states[newer] is not None and states[newer].adapter_prefix.endswith("/adapter")
    assert states[checkpoint] is not None
    assert "ft:unknown" not in states


async def test_make_servable_without_servers_returns_none(settings: Settings, services) -> None:  # type: ignore[no-untyped-def]
    assert not settings.serving.servers and not settings.serving.embedded
    seconds = await make_servable(settings, services.ctx.store, model_name="ft:x:y::z",
                                  base_model=BASE, adapter_prefix="jobs/ftjob-none/adapter")
    assert seconds is None
