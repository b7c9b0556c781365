"""A job's `integrations`: what cannot be honoured is a 400 naming it, at creation; what is
accepted reaches the worker; the tracker runs the worker starts show on the job (REST and
gRPC alike) and in an event. The runs themselves: tests/worker/test_tracking.py.

The test server runs W&B offline (no key needed) and lets an MLflow integration bring its own
tracking URI, with no default one (tests/conftest.py); the rules for other settings are
checked on the service's own function.
"""

from __future__ import annotations

import io
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import func, select

from server.db.models import Job
from tests import openapi_spec
from tests.api.data import chat_jsonl
from tests.conftest import ApiServer, Tenant
from tuneforge.domain import IntegrationType, TrackingRun
from tuneforge.errors import ApiError
from tuneforge.settings import TrackingSettings

MODEL = "SmolLM2-135M-Instruct"
WANDB = {"type": "wandb", "wandb": {"project": "tf", "entity": "team", "name": "run",
                                    "tags": ["a"]}}
MLFLOW = {"type": "mlflow", "mlflow": {"experiment": "tf", "tracking_uri": "http://mlflow:5000",
                                       "run_name": "run", "tags": {"team": "search"}}}


@pytest.fixture
def training_file(client: openai.OpenAI) -> str:
    return client.files.create(file=("train.jsonl", io.BytesIO(chat_jsonl())),
                               purpose="fine-tune").id


async def job_count(services: Any) -> int:
    async with services.ctx.sessions() as session:
        return (await session.execute(select(func.count()).select_from(Job))).scalar_one()


async def test_integrations_are_echoed_and_reach_the_worker(
        client: openai.OpenAI, services: Any, training_file: str) -> None:
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=training_file,
                                         integrations=[WANDB, MLFLOW])
    assert [i.model_dump(exclude_none=True) for i in job.integrations] == [
        WANDB, {**MLFLOW}]
    assert "tracking_runs" not in (job.model_extra or {})  # none started yet
    spec = await services.protocol.spec(job.id)
    assert [i.type for i in spec.integrations] == [IntegrationType.WANDB,
                                                   IntegrationType.MLFLOW]
    assert spec.integrations[0].wandb.tags == ["a"]
    assert spec.integrations[1].mlflow.tracking_uri == "http://mlflow:5000"
    assert spec.integrations[1].mlflow.tags == {"team": "search"}


@pytest.mark.parametrize(("integration", "param", "code"), [
    ({"type": "comet", "comet": {"project": "x"}}, "integrations[1].type",
     "invalid_integration"),
    ({"type": "wandb"}, "integrations[1].wandb", "invalid_integration"),
    ({"type": "wandb", "wandb": {"project": "x"}, "mlflow": {"experiment": "x"}},
     "integrations[1].mlflow", "invalid_integration"),
    ({"type": "mlflow", "wandb": {"project": "x"}}, "integrations[1].wandb",
     "invalid_integration"),
    # No tracking server configured on this server, and none given.
    ({"type": "mlflow", "mlflow": {"experiment": "x"}}, "integrations[1].mlflow",
     "integration_not_configured"),
])
async def test_an_integration_that_cannot_be_honoured_is_a_400(
        client: openai.OpenAI, services: Any, training_file: str,
        integration: dict[str, Any], param: str, code: str) -> None:
    before = await job_count(services)
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.create(model=MODEL, training_file=training_file,
                                       integrations=[WANDB, integration])
    assert err.value.body["param"] == param, err.value.body  # type: ignore[index]
    assert err.value.body["code"] == code  # type: ignore[index]
    assert await job_count(services) == before  # nothing stored, nothing queued


@pytest.mark.parametrize(("body", "param"), [
    ({"integrations": [WANDB, {"type": "mlflow", "mlflow": {
        "experiment": "x", "tracking_uri": "file:///etc"}}]},
     "integrations[1].mlflow.tracking_uri"),
    ({"integrations": [{"type": "mlflow", "mlflow": {"experiment": "x",
                                                     "tags": {"a/b": "c"}}}]},
     "integrations[0].mlflow.tags"),
    ({"integrations": [{"type": "mlflow", "mlflow": {"experiment": "x", "secret": "y"}}]},
     "integrations[0].mlflow.secret"),
    ({"integrations": [WANDB] * 6}, "integrations"),
])
async def test_malformed_integrations_are_400s_naming_them(
        api_server: ApiServer, tenant_a: Tenant, training_file: str,
        body: dict[str, Any], param: str) -> None:
    async with httpx.AsyncClient(base_url=api_server.base_url, timeout=30, headers={
            "Authorization": f"Bearer {tenant_a.api_key}"}) as http:
        answer = await http.post("/fine_tuning/jobs", json={
            "model": MODEL, "training_file": training_file, **body})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == param, answer.json()


def test_rules_follow_the_servers_tracking_settings() -> None:
    """W&B online needs a key for the organization (its own, or the default one); an
    integration's own MLflow URI only where the server allows it."""
    from server.service.integrations import check_integrations
    from server.service.requests import IntegrationRequest

    def check(settings: TrackingSettings, org: str, *raw: dict[str, Any]) -> Any:
        return check_integrations(settings, org, [IntegrationRequest(**i) for i in raw])

    def refused(settings: TrackingSettings, org: str, *raw: dict[str, Any]) -> ApiError:
        with pytest.raises(ApiError) as err:
            check(settings, org, *raw)
        assert err.value.status == 400
        return err.value

    per_org = TrackingSettings(wandb_api_keys={"org-a": "key-a"})
    assert check(per_org, "org-a", WANDB)[0]["wandb"]["project"] == "tf"
    error = refused(per_org, "org-b", WANDB)
    assert (error.param, error.code) == ("integrations[0].wandb", "integration_not_configured")
    assert "key-a" not in error.message
    assert check(TrackingSettings(wandb_api_key="default"), "org-b", WANDB)
    assert check(TrackingSettings(wandb_mode="offline"), "org-b", WANDB)

    closed = TrackingSettings(mlflow_tracking_uri="http://tracking:5000")
    error = refused(closed, "org-a", MLFLOW)
    assert error.param == "integrations[0].mlflow.tracking_uri"
    own_server = {"type": "mlflow", "mlflow": {"experiment": "tf"}}
    assert check(closed, "org-a", own_server) == [own_server]
    assert check(TrackingSettings(), "org-a") is None


async def test_tracking_runs_show_on_the_job_and_in_an_event(
        api_server: ApiServer, tenant_a: Tenant, settings: Any, services: Any,
        training_file: str) -> None:
    """What the worker writes through the job protocol, shown over REST (conforming to
    OpenAI's document plus the extension) and gRPC alike."""
    from tuneforge_client import TuneForge

    async with httpx.AsyncClient(base_url=api_server.base_url, timeout=30, headers={
            "Authorization": f"Bearer {tenant_a.api_key}"}) as http:
        job = openapi_spec.check(await http.post("/fine_tuning/jobs", json={
            "model": MODEL, "training_file": training_file, "integrations": [WANDB, WANDB]}))
        url = "https://wandb.ai/team/tf/runs/abc123"
        await services.protocol.add_tracking_run(
            job["id"], TrackingRun(index=1, type="wandb", run_id="abc123", url=url),
            f"W&B run started: {url}")
        await services.protocol.add_tracking_run(
            job["id"], TrackingRun(index=0, type="wandb", run_id="off1"),
            "W&B run started: off1 (offline: `wandb sync` uploads it)")
        shown = openapi_spec.check(await http.get(f"/fine_tuning/jobs/{job['id']}"))
        events = openapi_spec.check(await http.get(f"/fine_tuning/jobs/{job['id']}/events"))
    assert shown["tracking_runs"] == [{"type": "wandb", "run_id": "off1", "url": None},
                                      {"type": "wandb", "run_id": "abc123", "url": url}]
    started = next(e for e in events["data"] if e["message"] == f"W&B run started: {url}")
    assert started["data"] == {"tracking_run": {"type": "wandb", "run_id": "abc123",
                                                "url": url}}
    with TuneForge(base_url=api_server.base_url, api_key=tenant_a.api_key,
                   grpc_target=f"127.0.0.1:{settings.grpc_port}", transport="grpc") as tf:
        over_grpc = tf.jobs.get(job["id"])
    assert [(r.type, r.run_id, r.url) for r in over_grpc.tracking_runs or []] == [
        ("wandb", "off1", None), ("wandb", "abc123", url)]
    assert over_grpc.to_dict()["tracking_runs"] == shown["tracking_runs"]
