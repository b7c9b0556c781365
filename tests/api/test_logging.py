"""Structured logs and the request id: JSON lines from the API and the worker, `X-Request-ID`
over REST and `x-request-id` over gRPC, and one id that follows a job from the request that
created it into every worker log line of its run. Real API and worker processes."""

from __future__ import annotations

import asyncio
import io
import json
import re
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from sqlalchemy import select

from tests.conftest import REPO, ApiServer, Tenant
from tuneforge.processes import ManagedProcess, spawn
from tuneforge.settings import Settings

GENERATED = re.compile(r"req_[0-9a-f]{32}")
MODEL = "SmolLM2-135M-Instruct"


def json_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of a process's log, each parsed as JSON (a line that is not fails)."""
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return [json.loads(line) for line in lines]


def wait_for_lines(path: Path, predicate: Any, what: str, timeout: float = 60) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        found = [line for line in json_lines(path) if predicate(line)]
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"no log line of {path.name} shows {what}")
        time.sleep(0.2)


def get(api_server: ApiServer, tenant: Tenant, path: str, **headers: str) -> httpx.Response:
    return httpx.get(f"{api_server.base_url}{path}",
                     headers={"Authorization": f"Bearer {tenant.api_key}", **headers})


def test_a_client_request_id_is_echoed_and_logged_as_json(
        api_server: ApiServer, tenant_a: Tenant, settings: Settings) -> None:
    request_id = f"client-{uuid.uuid4().hex[:12]}.trace_1"
    response = get(api_server, tenant_a, "/models", **{"X-Request-ID": request_id})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == request_id

    lines = wait_for_lines(settings.data_dir / "api.log",
                           lambda line: line.get("request_id") == request_id, request_id)
    access = [line for line in lines if line["logger"] == "tuneforge.access"]
    assert access and access[0]["route"] == "/v1/models" and access[0]["status"] == 200
    for line in json_lines(settings.data_dir / "api.log"):
        assert {"timestamp", "level", "logger", "message"} <= line.keys(), line
        assert tenant_a.api_key not in json.dumps(line)
    assert "trace_id" not in access[0]  # tracing is off here


def test_a_request_id_is_generated_for_every_response(
        api_server: ApiServer, tenant_a: Tenant) -> None:
    answers = [get(api_server, tenant_a, "/models"),
               get(api_server, tenant_a, "/no-such-route"),  # 404 before any route runs
               httpx.get(f"{api_server.base_url}/models")]  # 401
    assert [r.status_code for r in answers] == [200, 404, 401]
    ids = [r.headers["x-request-id"] for r in answers]
    assert all(GENERATED.fullmatch(i) for i in ids), ids
    assert len(set(ids)) == 3


@pytest.mark.parametrize("bad", ["has spaces in it", "x" * 129, "semi;colon", "ümlaut"])
def test_an_invalid_request_id_is_replaced(api_server: ApiServer, tenant_a: Tenant,
                                           bad: str) -> None:
    response = httpx.get(f"{api_server.base_url}/models",
                         headers=[("Authorization", f"Bearer {tenant_a.api_key}"),
                                  ("X-Request-ID", bad.encode())])
    assert response.status_code == 200
    assert GENERATED.fullmatch(response.headers["x-request-id"])


async def test_grpc_echoes_and_generates_the_request_id(
        api_server: ApiServer, tenant_a: Tenant, settings: Settings) -> None:
    from server.grpc.pb.tuneforge.v1 import models_pb2, models_pb2_grpc

    auth = ("authorization", f"Bearer {tenant_a.api_key}")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{settings.grpc_port}") as channel:
        stub = models_pb2_grpc.ModelsStub(channel)
        sent = f"grpc-{uuid.uuid4().hex[:8]}"
        call = stub.List(models_pb2.ListModelsRequest(), metadata=(auth, ("x-request-id", sent)))
        await call
        assert dict(await call.initial_metadata())["x-request-id"] == sent

        for metadata in ((auth,), (auth, ("x-request-id", "not valid!"))):
            call = stub.List(models_pb2.ListModelsRequest(), metadata=metadata)
            await call
            assert GENERATED.fullmatch(dict(await call.initial_metadata())["x-request-id"])

        refused = stub.List(models_pb2.ListModelsRequest(), metadata=(("x-request-id", sent),))
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await refused
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert dict(await refused.initial_metadata())["x-request-id"] == sent


# ---- the id follows a job into the worker -----------------------------------------------------


@pytest.fixture(scope="module")
def worker(settings: Settings, api_server: ApiServer,
           no_leftover_jobs: None) -> Iterator[ManagedProcess]:
    """A real worker whose copy of the base model is missing: it takes the job, runs it and
    fails it at once (no training), which is all its log lines need."""
    missing = settings.data_dir / "no-such-model"
    env = {**settings.to_env(),
           "TUNEFORGE_BASE_MODELS": json.dumps([{"name": MODEL, "path": str(missing)}])}
    process = spawn("worker-logging", [sys.executable, "-m", "trainer.worker"],
                    settings.data_dir / "worker-logging.log", env=env, cwd=REPO)
    yield process
    process.stop()


def training_file(client: Any) -> str:
    from trainer.samples import arithmetic_chat

    lines = "".join(json.dumps(row) + "\n" for row in arithmetic_chat(12, seed=0))
    return client.files.create(file=("arith.jsonl", io.BytesIO(lines.encode())),
                               purpose="fine-tune").id


async def test_the_request_id_is_stored_on_the_job_and_on_every_worker_line_of_its_run(
        client: Any, services: Any, settings: Settings, worker: ManagedProcess) -> None:
    from server.db.models import Job

    request_id = f"job-req-{uuid.uuid4().hex[:10]}"
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=training_file(client),
                                         extra_headers={"X-Request-ID": request_id})
    async with services.ctx.sessions() as session:
        row = (await session.execute(select(Job.request_id, Job.traceparent)
                                     .where(Job.id == job.id))).one()
    assert row.request_id == request_id
    assert row.traceparent is None  # tracing is off: nothing to continue

    deadline = time.monotonic() + 60
    while client.fine_tuning.jobs.retrieve(job.id).status != "failed":
        assert time.monotonic() < deadline, "the worker did not fail the job"
        await asyncio.sleep(0.3)
    lines = wait_for_lines(worker.log, lambda line: line.get("job_id") == job.id
                           and "failed" in line["message"], f"the end of {job.id}")
    of_job = [line for line in json_lines(worker.log) if line.get("job_id") == job.id]
    assert len(of_job) >= 2 and lines
    assert all(line["request_id"] == request_id for line in of_job), of_job
    assert "run starts" in of_job[0]["message"]
    # The worker's own lines (start-up) are JSON too, without a job's context.
    assert any("ready on queue" in line["message"] and "job_id" not in line
               for line in json_lines(worker.log))
