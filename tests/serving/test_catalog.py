"""What the serving plane asks the service layer, and how it answers workers' serving requests
(both databases; no vLLM needed)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from server.auth import Principal
from server.db.models import ServingRequest
from server.service.requests import JobCreateRequest
from serving.adapters import AdapterCache
from serving.registry import Registry, Replica, ReplicaState
from serving.requests import RequestDesk
from serving.router import Router
from serving.vllm import VllmClient
from tests.api.data import chat_jsonl
from tests.conftest import Tenant, until_validated
from tuneforge.domain import JobStatus, fine_tuned_model_name, new_id
from tuneforge.errors import ApiError
from tuneforge.layout import adapter_prefix, file_key
from tuneforge.processes import free_port

_WORKER = "tests-catalog"

BASE = "SmolLM2-135M-Instruct"


async def _running(services, principal: Principal, suffix: str) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """A job a worker is training (through the service layer only: no API server, no vLLM)."""
    data = chat_jsonl()
    file_id = new_id("file-")
    await services.ctx.store.put_bytes(file_key(file_id), data)
    await services.files.record(principal.organization_id, file_id, "t.jsonl", "fine-tune",
                                len(data))
    job = await services.jobs.create(principal, JobCreateRequest(
        model=BASE, training_file=file_id, suffix=suffix))
    assert await until_validated(services, job.id) == "queued"
    assert await services.protocol.claim(job.id, _WORKER, 3600)
    assert await services.protocol.advance(job.id, [JobStatus.QUEUED],
                                           JobStatus.RUNNING, worker_id=_WORKER)
    return job.id, fine_tuned_model_name(BASE, job.organization_id, suffix, job.id)


async def _succeeded(services, principal: Principal, suffix: str) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    job_id, name = await _running(services, principal, suffix)
    assert await services.protocol.succeed(job_id, fine_tuned_model=name, result_files=[],
                                           trained_tokens=1, worker_id=_WORKER)
    return job_id, name


async def test_servable_lookup_scope_and_states(
        services, tenant_a: Tenant, tenant_b: Tenant) -> None:  # type: ignore[no-untyped-def]
    models = services.models
    mine = Principal(tenant_a.organization_id, "k")
    theirs = Principal(tenant_b.organization_id, "k")
    job_id, name = await _succeeded(services, mine, "cat")
    _, newer = await _succeeded(services, mine, "cat2")
    checkpoint = f"{name}:ckpt-step-3"
    await services.protocol.add_checkpoint(job_id, step=3, metrics={"step": 3},
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
    assert states[checkpoint] is None  # its weights went with the deleted model
    assert "ft:unknown" not in states


async def test_serving_requests_count_from_the_request_until_the_job_ends(
        services, tenant_a: Tenant, tenant_b: Tenant) -> None:  # type: ignore[no-untyped-def]
    models = services.models
    mine = Principal(tenant_a.organization_id, "k")
    theirs = Principal(tenant_b.organization_id, "k")
    job_id, name = await _running(services, mine, "asked")
    request_id = await services.protocol.request_serving(
        job_id, _WORKER, model=name, base_model=BASE, adapter_prefix=adapter_prefix(job_id))

    asks = {a.id: a for a in await models.serving_asks([BASE])}
    ask = asks[request_id]
    assert (ask.model, ask.adapter_prefix, ask.job_status) == (name, f"jobs/{job_id}/adapter",
                                                               "running")
    assert ask.ready_at is None and ask.error is None
    assert request_id not in {a.id for a in await models.serving_asks(["another-base"])}
    # Pending: wanted by the reconciler, not yet open to requests.
    assert (await models.servable_states([name]))[name] is not None
    with pytest.raises(ApiError):
        await models.servable(mine, name)

    await models.answer_serving(request_id, ready_at=time.time(), replicas=2)
    await models.refuse_serving(request_id, "too late: answered once")  # changes nothing
    state = await services.protocol.serving_state(request_id)
    assert state.ready_at is not None and state.replicas == 2 and state.error is None
    found = await models.servable(mine, name)  # before the job reports succeeded
    assert (found.base_model, found.adapter_prefix) == (BASE, f"jobs/{job_id}/adapter")
    with pytest.raises(ApiError):
        await models.servable(theirs, name)

    assert await services.protocol.advance(job_id, [JobStatus.RUNNING], JobStatus.CANCELLED)
    assert (await models.servable_states([name]))[name] is None  # unloaded everywhere
    with pytest.raises(ApiError):
        await models.servable(mine, name)
    await models.drop_serving([request_id])
    assert await services.protocol.serving_state(request_id) is None


async def _ask(services, job_id: str, model: str, base_model: str = BASE, *,  # type: ignore[no-untyped-def]
               requested_at: float | None = None, ready_at: float | None = None) -> str:
    """A serving request row as a worker writes it (and, with `ready_at`, as answered)."""
    request_id = new_id("srv-")
    async with services.ctx.sessions() as session, session.begin():
        session.add(ServingRequest(
            id=request_id, job_id=job_id, model=model, base_model=base_model,
            adapter_prefix=adapter_prefix(job_id), requested_at=requested_at or time.time(),
            ready_at=ready_at, replicas=1 if ready_at else None))
    return request_id


async def test_desk_waits_for_a_replica_and_forgets_ended_jobs(
        services, tenant_a: Tenant, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    mine = Principal(tenant_a.organization_id, "k")
    pending_job, pending = await _running(services, mine, "waits")
    cancelled_job, cancelled = await _running(services, mine, "gone")
    done_job, done = await _succeeded(services, mine, "done")
    elsewhere_job, elsewhere = await _running(services, mine, "elsewhere")
    waits = await _ask(services, pending_job, pending)
    gone = await _ask(services, cancelled_job, cancelled)
    answered = await _ask(services, done_job, done, requested_at=time.time() - 120,
                          ready_at=time.time() - 100)
    other_base = await _ask(services, elsewhere_job, elsewhere, "a-base-served-elsewhere")
    for job_id in (cancelled_job, elsewhere_job):
        assert await services.protocol.advance(job_id, [JobStatus.RUNNING], JobStatus.CANCELLED)

    unpublished: list[str] = []

    async def unpublish(model: str) -> None:
        unpublished.append(model)

    async with httpx.AsyncClient() as http:
        url = f"http://127.0.0.1:{free_port()}"  # nothing listens: the replica is starting
        registry = Registry([Replica(id=f"{BASE}#1", base_model=BASE, url=url, capacity=2,
                                     client=VllmClient(url, http),
                                     state=ReplicaState.STARTING)])
        router = Router(registry, services.ctx.store, AdapterCache(tmp_path), http)
        desk = RequestDesk(registry, router, services.models, services.ctx.store,
                           missing_timeout=60, on_unpublished=unpublish)
        await desk.poll_once()
        await desk.stop()
        router.upstream.close()

    assert unpublished == [cancelled]
    left = {a.id for a in await services.models.serving_asks([BASE, "a-base-served-elsewhere"])}
    assert waits in left  # no replica is ready yet: asked again at the next poll
    assert other_base in left  # for the API process that serves that base model
    assert gone not in left and answered not in left
    state = await services.protocol.serving_state(waits)
    assert state.ready_at is None and state.error is None
