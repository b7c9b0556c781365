"""`GET /metrics` on the real API process: request counters and latency histograms move for
the right route template and status, jobs by status match the database, the queue depth
follows job creation, and a `metrics_token` guards the endpoint (tenant keys never open it).
The serving plane's recorders are checked as functions (no vLLM server starts here)."""

from __future__ import annotations

import io
import secrets
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import redis as redis_sync
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from tests.api.data import chat_jsonl
from tests.conftest import REPO, ApiServer, Tenant, until_validated
from tuneforge.processes import free_port, spawn, wait_until
from tuneforge.settings import Settings

MODEL = "SmolLM2-135M-Instruct"
JOB_ROUTE = "/v1/fine_tuning/jobs/{job_id}"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(root: str, headers: dict[str, str] | None = None) -> Samples:
    answer = httpx.get(f"{root}/metrics", headers=headers, timeout=15)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return parse(answer.text)


def parse(text: str) -> Samples:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def root(api_server: ApiServer) -> str:
    return api_server.base_url.removesuffix("/v1")


def test_requests_are_counted_by_route_template_and_status(
        root: str, client: openai.OpenAI) -> None:
    before = scrape(root)
    missing = [f"ftjob-{uuid.uuid4().hex}" for _ in range(3)]
    for job_id in missing:
        with pytest.raises(openai.NotFoundError):
            client.fine_tuning.jobs.retrieve(job_id)
    client.fine_tuning.jobs.list(limit=1)
    answer = httpx.get(f"{root}/metrics", timeout=15)
    after = parse(answer.text)

    labels = {"method": "GET", "route": JOB_ROUTE, "status": "404"}
    assert value(after, "tuneforge_http_requests_total", **labels) - \
        value(before, "tuneforge_http_requests_total", **labels) == 3
    assert value(after, "tuneforge_http_request_duration_seconds_count", **labels) - \
        value(before, "tuneforge_http_request_duration_seconds_count", **labels) == 3
    inf = {**labels, "le": "+Inf"}
    assert value(after, "tuneforge_http_request_duration_seconds_bucket", **inf) - \
        value(before, "tuneforge_http_request_duration_seconds_bucket", **inf) == 3
    listed = {"method": "GET", "route": "/v1/fine_tuning/jobs", "status": "200"}
    assert value(after, "tuneforge_http_requests_total", **listed) > \
        value(before, "tuneforge_http_requests_total", **listed)
    # Templates only: no id, key or organization ever becomes a label.
    for job_id in missing:
        assert job_id not in answer.text
    assert "org-" not in answer.text and "tf-" not in answer.text.replace("tf-test", "")


def test_unknown_urls_count_as_unmatched(root: str) -> None:
    path = f"/v1/nothing-{uuid.uuid4().hex}"
    before = scrape(root)
    assert httpx.get(f"{root}{path}", timeout=10).status_code == 404
    httpx.request("BREWCOFFEE", f"{root}/v1/models", timeout=10)
    after_text = httpx.get(f"{root}/metrics", timeout=15).text
    labels = {"method": "GET", "route": "unmatched", "status": "404"}
    assert value(parse(after_text), "tuneforge_http_requests_total", **labels) - \
        value(before, "tuneforge_http_requests_total", **labels) == 1
    assert path not in after_text
    # A made-up method is counted as OTHER, never as a label value of its own.
    assert "BREWCOFFEE" not in after_text
    assert any(name == "tuneforge_http_requests_total" and ("method", "OTHER") in labels
               for name, labels in parse(after_text))


async def _status_counts(services: object) -> dict[str, int]:
    from sqlalchemy import func, select

    from server.db.models import Job

    async with services.ctx.sessions() as session:  # type: ignore[attr-defined]
        rows = (await session.execute(select(Job.status, func.count()).group_by(Job.status)))
        return {status: count for status, count in rows.all()}


async def test_jobs_by_status_and_queue_depth_follow_created_jobs(
        root: str, client: openai.OpenAI, services: object, settings: Settings) -> None:
    training_file = client.files.create(file=("train.jsonl", io.BytesIO(chat_jsonl())),
                                        purpose="fine-tune").id
    before = scrape(root)
    jobs = [client.fine_tuning.jobs.create(model=MODEL, training_file=training_file)
            for _ in range(2)]
    try:
        for job in jobs:  # the API validates the files, then the job waits in the queue
            assert await until_validated(client, job.id) == "queued"
        after = scrape(root)
        counts = await _status_counts(services)
        queue = redis_sync.Redis.from_url(settings.redis_url).zcard(settings.queue_name)
        # No worker runs in this module: the jobs wait, in the database and in the queue.
        for status in ("validating_files", "queued", "running", "paused", "succeeded",
                       "failed", "cancelled"):
            assert value(after, "tuneforge_jobs", status=status) == counts.get(status, 0), status
        waiting = ("validating_files", "queued")
        assert sum(value(after, "tuneforge_jobs", status=s) for s in waiting) - \
            sum(value(before, "tuneforge_jobs", status=s) for s in waiting) == 2
        assert value(after, "tuneforge_queue_depth") == queue
        assert value(after, "tuneforge_queue_depth") - value(before, "tuneforge_queue_depth") == 2
        assert value(after, "tuneforge_metrics_source_up", source="db") == 1
        assert value(after, "tuneforge_metrics_source_up", source="redis") == 1
        # What the API lists for this tenant is among what the gauge counts.
        listed = [j for j in client.fine_tuning.jobs.list(limit=100).data
                  if j.id in {job.id for job in jobs}]
        assert {j.status for j in listed} <= set(waiting)
        assert ("tuneforge_queue_oldest_age_seconds", frozenset()) in after
    finally:
        for job in jobs:
            client.fine_tuning.jobs.cancel(job.id)


@pytest.fixture(scope="module")
def guarded_api(settings: Settings, tmp_root: Path) -> Iterator[tuple[str, str]]:
    """A second API process with a `metrics_token`: (root URL, token)."""
    if "postgresql" in settings.effective_database_url:
        pytest.skip("the token check does not depend on the database; checked on SQLite")
    data_dir = tmp_root / f"metrics-{uuid.uuid4().hex[:6]}"
    data_dir.mkdir()
    token = secrets.token_urlsafe(24)
    private = settings.model_copy(update={
        "metrics_token": SecretStr(token), "data_dir": data_dir, "port": free_port(),
        "grpc_port": free_port(), "queue_name": f"tf-metrics-{uuid.uuid4().hex[:6]}"})
    api = spawn("api-metrics-token", [sys.executable, "-m", "stack.cli", "server"],
                data_dir / "api.log", env=private.to_env(), cwd=REPO)
    root = f"http://127.0.0.1:{private.port}"
    try:
        wait_until(lambda: httpx.get(f"{root}/healthz").status_code == 200, 120, "API", api)
        yield root, token
    finally:
        api.stop()


def test_metrics_token_is_required_when_set(guarded_api: tuple[str, str],
                                            tenant_a: Tenant) -> None:
    root, token = guarded_api
    for headers in ({}, {"Authorization": f"Bearer {tenant_a.api_key}"},
                    {"Authorization": f"Bearer {token}x"}, {"Authorization": token}):
        answer = httpx.get(f"{root}/metrics", headers=headers, timeout=10)
        assert answer.status_code == 401, headers
        assert "tuneforge_" not in answer.text and token not in answer.text
    samples = scrape(root, {"Authorization": f"Bearer {token}"})
    assert ("tuneforge_queue_depth", frozenset()) in samples
    # Health needs no token.
    assert httpx.get(f"{root}/healthz", timeout=10).status_code == 200


def test_serving_recorders_count_adapter_loads_and_proxied_tokens() -> None:
    from prometheus_client import REGISTRY, generate_latest

    from serving import metrics

    base = f"base-{uuid.uuid4().hex[:6]}"
    metrics.adapter_loaded(base, 0.03, ok=True)
    metrics.adapter_loaded(base, 0.0, ok=False)
    metrics.answered(base, b'{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7}}')
    metrics.answered(base, b"not json")
    meter = metrics.StreamMeter(base, started=0.0)
    meter.chunk(b'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}\n\n')
    meter.chunk(b'data: {"choices":[{"delta":{"content":"Hi"}}]}\n\n'
                b'data: {"choices":[{"delta":{"content":" there"}}]}\n\n')
    meter.chunk(b'data: {"choices":[{"text":"!","index":0}]}\n\ndata: [DONE]\n\n')
    samples = parse(generate_latest(REGISTRY).decode())
    assert value(samples, "tuneforge_adapter_loads_total", base_model=base,
                 outcome="loaded") == 1
    assert value(samples, "tuneforge_adapter_loads_total", base_model=base,
                 outcome="failed") == 1
    assert value(samples, "tuneforge_adapter_load_seconds_count", base_model=base) == 1
    assert value(samples, "tuneforge_proxy_completion_tokens_total", base_model=base,
                 stream="false") == 7
    assert value(samples, "tuneforge_proxy_completion_tokens_total", base_model=base,
                 stream="true") == 3
    assert value(samples, "tuneforge_proxy_requests_total", base_model=base,
                 stream="false") == 2
    assert value(samples, "tuneforge_proxy_time_to_first_token_seconds_count",
                 base_model=base) == 1
