"""Every REST operation's raw response, checked against OpenAI's own OpenAPI document.

Status code, content type and body of each answer must match the operation's response in
`shared/openai-openapi.yaml`, except for the differences listed in `tests/openapi_spec.py`
(the `paused` status, and TuneForge's documented extension fields). Events and checkpoints
are recorded through the service layer, as a worker would.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from tests import openapi_spec
from tests.api.data import chat_jsonl
from tests.conftest import ApiServer, Tenant, make_tenant, until_validated
from tuneforge.domain import EventType, JobStatus, fine_tuned_model_name

MODEL = "SmolLM2-135M-Instruct"
# No worker runs here: the API's reconciler may have re-queued a new job by the time the test
# moves it on, as a worker would.
WAITING = (JobStatus.VALIDATING_FILES, JobStatus.QUEUED)
check, check_error = openapi_spec.check, openapi_spec.check_error


@pytest.fixture(scope="module", autouse=True)
def spec() -> dict[str, Any]:
    return openapi_spec.spec()


def _client(api_server: ApiServer, api_key: str) -> httpx.Client:
    return httpx.Client(base_url=api_server.base_url, timeout=30,
                        headers={"Authorization": f"Bearer {api_key}"})


@pytest.fixture
def http(api_server: ApiServer, tenant_a: Tenant) -> Iterator[httpx.Client]:
    with _client(api_server, tenant_a.api_key) as c:
        yield c


@pytest.fixture
async def ahttp(api_server: ApiServer, tenant_a: Tenant) -> AsyncIterator[httpx.AsyncClient]:
    """For the tests that also act as the worker (through the async service layer)."""
    async with httpx.AsyncClient(base_url=api_server.base_url, timeout=30,
                                 headers={"Authorization": f"Bearer {tenant_a.api_key}"}) as c:
        yield c


def upload_file(http: httpx.Client, content: bytes, purpose: str = "fine-tune",
                name: str = "train.jsonl") -> dict[str, Any]:
    return check(http.post("/files", data={"purpose": purpose},
                           files={"file": (name, content, "application/jsonl")}))


@pytest.fixture
def training_file(http: httpx.Client) -> str:
    return upload_file(http, chat_jsonl())["id"]


# ---- files -------------------------------------------------------------------------------


def test_files(http: httpx.Client) -> None:
    content = chat_jsonl()
    created = upload_file(http, content)
    assert created["object"] == "file" and created["bytes"] == len(content)
    listed = check(http.get("/files"))
    assert created["id"] in [f["id"] for f in listed["data"]]
    check(http.get("/files", params={"purpose": "fine-tune", "limit": 1, "order": "asc"}))
    assert check(http.get(f"/files/{created['id']}")) == created

    # OpenAI's document gives the download as `application/json` with `type: string`: its
    # way of saying "raw bytes" (the SDK returns them unparsed). The file's bytes come back
    # as they were uploaded, as application/octet-stream.
    download = http.get(f"/files/{created['id']}/content")
    assert download.status_code == 200 and download.content == content
    assert download.headers["content-type"].startswith("application/octet-stream")

    deleted = check(http.delete(f"/files/{created['id']}"))
    assert deleted == {"id": created["id"], "object": "file", "deleted": True}


async def test_empty_file_list(api_server: ApiServer, services) -> None:  # type: ignore[no-untyped-def]
    nobody = await make_tenant(services, "empty")
    async with httpx.AsyncClient(base_url=api_server.base_url, timeout=30,
                                 headers={"Authorization": f"Bearer {nobody.api_key}"}) as http:
        empty = check(await http.get("/files"))
        assert empty["data"] == [] and empty["has_more"] is False
        assert check(await http.get("/models"))["data"]  # base models only
        jobs = check(await http.get("/fine_tuning/jobs"))
        assert jobs["data"] == []


# ---- uploads -----------------------------------------------------------------------------


def test_uploads(http: httpx.Client) -> None:
    content = chat_jsonl(20)
    body = {"bytes": len(content), "filename": "parts.jsonl", "mime_type": "text/jsonl",
            "purpose": "fine-tune"}
    upload = check(http.post("/uploads", json=body))
    assert upload["status"] == "pending"
    parts = [check(http.post(f"/uploads/{upload['id']}/parts",
                             files={"data": ("blob", piece, "application/octet-stream")}))
             for piece in (content[:100], content[100:])]
    done = check(http.post(f"/uploads/{upload['id']}/complete",
                           json={"part_ids": [p["id"] for p in parts]}))
    assert done["status"] == "completed" and done["file"]["bytes"] == len(content)

    other = check(http.post("/uploads", json={**body, "filename": "dropped.jsonl"}))
    cancelled = check(http.post(f"/uploads/{other['id']}/cancel"))
    assert cancelled["status"] == "cancelled"


# ---- fine-tuning jobs --------------------------------------------------------------------


def test_create_supervised_and_dpo_with_integrations(http: httpx.Client,
                                                     training_file: str) -> None:
    wandb = [{"type": "wandb", "wandb": {"project": "tf"}},
             {"type": "wandb", "wandb": {"project": "tf", "name": "run", "entity": "team",
                                         "tags": ["a", "b"]}}]
    supervised = check(http.post("/fine_tuning/jobs", json={
        "model": MODEL, "training_file": training_file, "integrations": wandb,
        "method": {"type": "supervised",
                   "supervised": {"hyperparameters": {"n_epochs": 2}}}}))
    assert supervised["method"]["type"] == "supervised" and "dpo" not in supervised["method"]
    assert "tags" not in supervised["integrations"][0]["wandb"]
    assert supervised["integrations"][1]["wandb"]["tags"] == ["a", "b"]
    assert "suffix" not in supervised  # an extension the caller did not use stays out

    dpo = check(http.post("/fine_tuning/jobs", json={
        "model": MODEL, "training_file": training_file, "suffix": "spec",
        "integrations": wandb[:1],
        "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2}}}}))
    assert dpo["method"]["type"] == "dpo" and "supervised" not in dpo["method"]
    assert dpo["method"]["dpo"]["hyperparameters"]["beta"] == 0.2

    legacy = check(http.post("/fine_tuning/jobs", json={
        "model": MODEL, "training_file": training_file, "hyperparameters": {"n_epochs": 3},
        "metadata": {"k": "v"}}))
    listed = check(http.get("/fine_tuning/jobs", params={"limit": 3}))
    assert [j["id"] for j in listed["data"]] == [legacy["id"], dpo["id"], supervised["id"]]
    check(http.get("/fine_tuning/jobs", params={"metadata[k]": "v"}))
    # The API validates the files meanwhile (chat data fails a DPO job): only the lifecycle
    # fields may have moved on.
    lifecycle = ("status", "finished_at", "error")
    retrieved = check(http.get(f"/fine_tuning/jobs/{dpo['id']}"))
    assert {k: v for k, v in retrieved.items() if k not in lifecycle} == \
        {k: v for k, v in dpo.items() if k not in lifecycle}


async def test_job_lifecycle_events_and_checkpoints(
        ahttp: httpx.AsyncClient, training_file: str, services) -> None:  # type: ignore[no-untyped-def]
    job = check(await ahttp.post("/fine_tuning/jobs",
                                 json={"model": MODEL, "training_file": training_file}))
    path = f"/fine_tuning/jobs/{job['id']}"
    empty = check(await ahttp.get(f"{path}/checkpoints"))
    assert empty["data"] == []

    # As a worker: run it, report metrics and a checkpoint with training metrics only.
    assert await until_validated(ahttp, job["id"]) == "queued"
    assert await services.protocol.advance(job["id"], WAITING,
                                           JobStatus.RUNNING, message="Fine-tuning job started")
    await services.protocol.update_progress(job["id"], estimated_finish=2_000_000_000,
                                            resolved_hyperparameters={"batch_size": 4,
                                                                  "learning_rate_multiplier": 2.0,
                                                                  "n_epochs": 3})
    data = {"step": 1, "total_steps": 4, "train_loss": 1.5, "valid_loss": None}
    await services.protocol.add_event(job["id"], "Step 1/4: training loss=1.50",
                                      type=EventType.METRICS, data=data)
    await services.protocol.add_checkpoint(job["id"], step=1, model_name="ckpt-1",
                                           metrics={"step": 1, "train_loss": 1.5,
                                                "valid_loss": None})
    running = check(await ahttp.get(path))
    assert running["status"] == "running" and running["hyperparameters"]["batch_size"] == 4

    events = check(await ahttp.get(f"{path}/events"))["data"]
    assert events[0]["type"] == "metrics" and events[0]["data"] == data
    # Plain messages carry none, but for the place in the queue (OpenAI's event has `data`).
    assert all("data" not in e for e in events[1:] if not e["message"].startswith("Queued:"))
    queued = next(e for e in events if e["message"].startswith("Queued:"))
    assert set(queued["data"]) == {"queue_position", "jobs_ahead"}
    check(await ahttp.get(f"{path}/events", params={"limit": 1, "after": events[0]["id"]}))
    checkpoint = check(await ahttp.get(f"{path}/checkpoints"))["data"][0]
    assert checkpoint["metrics"] == {"step": 1, "train_loss": 1.5}

    # `paused` is the one status OpenAI's enum lacks (an allowed, listed deviation).
    assert check(await ahttp.post(f"{path}/pause"))["status"] == "paused"
    assert check(await ahttp.post(f"{path}/resume"))["status"] == "queued"
    cancelled = check(await ahttp.post(f"{path}/cancel"))
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"]


async def test_failed_and_succeeded_jobs(ahttp: httpx.AsyncClient, training_file: str,
                                         services) -> None:  # type: ignore[no-untyped-def]
    create = {"model": MODEL, "training_file": training_file}
    failing = check(await ahttp.post("/fine_tuning/jobs", json=create))
    assert await services.protocol.fail(failing["id"], code="invalid_training_file",
                                     message="line 3: no assistant message")
    failed = check(await ahttp.get(f"/fine_tuning/jobs/{failing['id']}"))
    assert failed["error"]["param"] is None  # nullable in OpenAI's spec: stays null

    job = check(await ahttp.post("/fine_tuning/jobs", json={**create, "suffix": "spec-ok"}))
    assert await until_validated(ahttp, job["id"]) == "queued"
    assert await services.protocol.advance(job["id"], WAITING,
                                           JobStatus.RUNNING)
    name = fine_tuned_model_name(MODEL, job["organization_id"], "spec-ok", job["id"])
    assert await services.protocol.succeed(job["id"], fine_tuned_model=name,
                                           result_files=[training_file], trained_tokens=321)
    done = check(await ahttp.get(f"/fine_tuning/jobs/{job['id']}"))
    assert done["fine_tuned_model"] == name and done["trained_tokens"] == 321
    full = {"step": 2, "train_loss": 0.5, "train_mean_token_accuracy": 0.9, "valid_loss": 0.6,
            "valid_mean_token_accuracy": 0.8, "full_valid_loss": 0.7,
            "full_valid_mean_token_accuracy": 0.85}
    await services.protocol.add_checkpoint(job["id"], step=2, model_name=f"{name}:ckpt-step-2",
                                           metrics=full)
    assert check(await ahttp.get(f"/fine_tuning/jobs/{job['id']}/checkpoints"))["data"][0][
        "metrics"] == full

    # ---- models
    models = check(await ahttp.get("/models"))
    assert {MODEL, name} <= {m["id"] for m in models["data"]}
    check(await ahttp.get(f"/models/{MODEL}"))
    check(await ahttp.get(f"/models/{name}"))
    check(await ahttp.get(f"/models/{name}:ckpt-step-2"))
    deleted = check(await ahttp.delete(f"/models/{name}"))
    assert deleted == {"id": name, "object": "model", "deleted": True}


# ---- errors ------------------------------------------------------------------------------


def test_error_envelopes(api_server: ApiServer, http: httpx.Client, training_file: str) -> None:
    with httpx.Client(base_url=api_server.base_url, timeout=30) as anonymous:
        check_error(anonymous.get("/files"), 401)
    with _client(api_server, "tf-not-a-key") as wrong:
        check_error(wrong.get("/fine_tuning/jobs"), 401)

    check_error(http.post("/fine_tuning/jobs", content=b"{not json",
                          headers={"content-type": "application/json"}), 400)
    invalid = check_error(http.post("/fine_tuning/jobs", json={
        "model": MODEL, "training_file": training_file, "hyperparameters": {"n_epochs": 99}}),
        400)
    assert invalid["error"]["param"] == "hyperparameters.n_epochs"
    check_error(http.post("/files", data={"purpose": "fine-tune"},
                          files={"file": ("bad.jsonl", b"{not json\n", "application/jsonl")}),
                400)

    missing = f"nope-{uuid.uuid4().hex[:6]}"
    for response in (http.get(f"/files/file-{missing}"), http.delete(f"/files/file-{missing}"),
                     http.get(f"/files/file-{missing}/content"),
                     http.get(f"/fine_tuning/jobs/ftjob-{missing}"),
                     http.post(f"/fine_tuning/jobs/ftjob-{missing}/cancel"),
                     http.get(f"/fine_tuning/jobs/ftjob-{missing}/events"),
                     http.get(f"/fine_tuning/jobs/ftjob-{missing}/checkpoints"),
                     http.post(f"/uploads/upload_{missing}/cancel"),
                     http.get(f"/models/ft:{MODEL}:org:{missing}"),
                     http.get("/nothing/here")):
        check_error(response, 404)

    job = check(http.post("/fine_tuning/jobs",
                          json={"model": MODEL, "training_file": training_file}))
    check_error(http.post(f"/fine_tuning/jobs/{job['id']}/pause"), 409)  # not running
    check_error(http.delete(f"/files/{training_file}"), 409)  # in use by a live job
    check(http.post(f"/fine_tuning/jobs/{job['id']}/cancel"))
    check_error(http.post(f"/fine_tuning/jobs/{job['id']}/cancel"), 409)
    check_error(http.delete(f"/models/{MODEL}"), 403)  # base models are not yours to delete
