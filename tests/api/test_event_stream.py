"""`GET /v1/fine_tuning/jobs/{id}/events?stream=true`: Server-Sent Events over REST.

Replays a job's events oldest first, tails live ones until the job ends, resumes after
`Last-Event-ID`, sends `: keep-alive` comments while quiet, and is a 404 for another
organization's job. Events and transitions are made from the test process, as a worker would.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.api.data import chat_jsonl
from tests.conftest import REPO, ApiServer, Tenant, settings_env, until_validated
from tests.openapi_spec import check_error
from tuneforge.domain import JobStatus
from tuneforge.processes import free_port, spawn, wait_until
from tuneforge.settings import Settings

MODEL = "SmolLM2-135M-Instruct"


@dataclass
class Message:
    event: str = "message"
    id: str | None = None
    data: str = ""

    def json(self) -> Any:
        return json.loads(self.data)


@dataclass
class SseReader:
    """Reads one SSE answer: its messages and its comments, in order."""

    messages: list[Message] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)

    async def read(self, response: httpx.Response) -> AsyncIterator[Message | str]:
        current = Message()
        async for line in response.aiter_lines():
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                yield line[1:].strip()
            elif line == "":
                if current.data or current.id or current.event != "message":
                    self.messages.append(current)
                    yield current
                current = Message()
            else:
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "data":
                    current.data = f"{current.data}\n{value}" if current.data else value
                elif name in ("id", "event"):
                    setattr(current, name, value)

    def events(self) -> list[dict[str, Any]]:
        return [m.json() for m in self.messages if m.event == "message"]


@pytest.fixture
async def ahttp(api_server: ApiServer, tenant_a: Tenant) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api_server.base_url, timeout=30, headers={
            "Authorization": f"Bearer {tenant_a.api_key}"}) as client:
        yield client


async def new_job(http: httpx.AsyncClient) -> dict[str, Any]:
    upload = await http.post("/files", data={"purpose": "fine-tune"},
                             files={"file": ("train.jsonl", chat_jsonl())})
    job = await http.post("/fine_tuning/jobs", json={"model": MODEL,
                                                     "training_file": upload.json()["id"]})
    assert job.status_code == 200, job.text
    return job.json()  # type: ignore[no-any-return]


def stream(http: httpx.AsyncClient, job_id: str, **headers: str) -> Any:
    return http.stream("GET", f"/fine_tuning/jobs/{job_id}/events", params={"stream": "true"},
                       headers=headers, timeout=httpx.Timeout(30, read=30))


async def test_replays_then_tails_live_until_the_job_ends(ahttp: httpx.AsyncClient,
                                                          services) -> None:  # type: ignore[no-untyped-def]
    job = await new_job(ahttp)
    await until_validated(ahttp, job["id"])
    await services.protocol.add_event(job["id"], "before the stream")
    reader = SseReader()
    async with stream(ahttp, job["id"]) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        seen = aiter(reader.read(response))
        first = await anext(seen)
        assert isinstance(first, Message) and first.event == "job" and first.id is None
        assert first.json()["id"] == job["id"]
        while not (reader.events() and reader.events()[-1]["message"] == "before the stream"):
            await anext(seen)
        replayed = reader.events()
        assert replayed[0]["message"] == f"Created fine-tuning job: {job['id']}"
        assert all(m.id == e["id"] for m, e in zip(
            [m for m in reader.messages if m.event == "message"], replayed, strict=True))

        # Live: an event and a transition arrive while the stream stays open.
        await services.protocol.add_event(job["id"], "live one")
        while reader.events()[-1]["message"] != "live one":
            await anext(seen)
        assert (await ahttp.post(f"/fine_tuning/jobs/{job['id']}/cancel")).status_code == 200
        async for _ in seen:
            pass  # the server ends the stream once the job has ended
    assert reader.messages[-1].event == "end"
    last_job = [m.json() for m in reader.messages if m.event == "job"][-1]
    assert last_job["status"] == "cancelled"
    assert reader.events()[-1]["message"] == "Fine-tuning job cancelled"
    ids = [e["id"] for e in reader.events()]
    assert len(ids) == len(set(ids))  # every event once, oldest first
    listed = (await ahttp.get(f"/fine_tuning/jobs/{job['id']}/events",
                              params={"limit": 100})).json()["data"]
    assert ids == [e["id"] for e in reversed(listed)]


async def test_last_event_id_resumes_after_that_event(ahttp: httpx.AsyncClient,
                                                      services) -> None:  # type: ignore[no-untyped-def]
    job = await new_job(ahttp)
    await until_validated(ahttp, job["id"])
    for n in range(3):
        await services.protocol.add_event(job["id"], f"event {n}")
    await ahttp.post(f"/fine_tuning/jobs/{job['id']}/cancel")
    everything = SseReader()
    async with stream(ahttp, job["id"]) as response:
        async for _ in everything.read(response):
            pass
    ids = [e["id"] for e in everything.events()]
    resumed = SseReader()
    async with stream(ahttp, job["id"], **{"Last-Event-ID": ids[1]}) as response:
        async for _ in resumed.read(response):
            pass
    assert [e["id"] for e in resumed.events()] == ids[2:]
    assert resumed.messages[-1].event == "end"
    # A cursor the job does not have is a 400 before the stream starts.
    async with stream(ahttp, job["id"], **{"Last-Event-ID": "ftevent-nope"}) as response:
        await response.aread()
        assert check_error(response, 400)["error"]["param"] == "after"


async def test_another_organizations_job_is_404(ahttp: httpx.AsyncClient, api_server: ApiServer,
                                               tenant_b: Tenant) -> None:
    job = await new_job(ahttp)
    async with httpx.AsyncClient(base_url=api_server.base_url, timeout=30, headers={
            "Authorization": f"Bearer {tenant_b.api_key}"}) as other:
        async with stream(other, job["id"]) as response:
            await response.aread()
            body = check_error(response, 404)
    assert body["error"]["param"] == "fine_tuning_job_id"
    await ahttp.post(f"/fine_tuning/jobs/{job['id']}/cancel")


async def test_limit_and_last_event_id_are_refused_where_they_do_not_apply(
        ahttp: httpx.AsyncClient) -> None:
    job = await new_job(ahttp)
    response = await ahttp.get(f"/fine_tuning/jobs/{job['id']}/events",
                               params={"stream": "true", "limit": 5})
    assert check_error(response, 400)["error"]["param"] == "limit"
    response = await ahttp.get(f"/fine_tuning/jobs/{job['id']}/events",
                               headers={"Last-Event-ID": "ftevent-x"})
    assert check_error(response, 400)["error"]["param"] == "Last-Event-ID"
    await ahttp.post(f"/fine_tuning/jobs/{job['id']}/cancel")


@pytest.fixture(scope="module")
def quick_heartbeat_server(settings: Settings) -> Iterator[str]:
    """A second API process on the same state whose streams send a keep-alive every 0.2 s."""
    quick = settings.model_copy(update={"port": free_port(), "grpc_port": free_port(),
                                        "events_heartbeat_seconds": 0.2})
    process = spawn("api-heartbeat", [sys.executable, "-m", "stack.cli", "server"],
                    settings.data_dir / "api-heartbeat.log", env=settings_env(quick), cwd=REPO)
    base = f"http://127.0.0.1:{quick.port}"
    try:
        wait_until(lambda: httpx.get(f"{base}/v1/models").status_code == 401, 60,
                   "API server", process)
        yield f"{base}/v1"
    finally:
        process.stop()


async def test_keep_alive_comments_while_quiet(ahttp: httpx.AsyncClient,
                                               quick_heartbeat_server: str,
                                               tenant_a: Tenant) -> None:
    job = await new_job(ahttp)
    reader = SseReader()
    async with httpx.AsyncClient(base_url=quick_heartbeat_server, headers={
            "Authorization": f"Bearer {tenant_a.api_key}"}) as quick:
        async with stream(quick, job["id"]) as response:
            async for item in reader.read(response):
                if item == "keep-alive":
                    break
    assert reader.messages[0].event == "job"
    await ahttp.post(f"/fine_tuning/jobs/{job['id']}/cancel")


async def test_the_job_snapshot_follows_transitions(ahttp: httpx.AsyncClient,
                                                    services) -> None:  # type: ignore[no-untyped-def]
    job = await new_job(ahttp)
    await until_validated(ahttp, job["id"])
    reader = SseReader()
    async with stream(ahttp, job["id"]) as response:
        async for item in reader.read(response):
            if isinstance(item, Message) and item.event == "job":
                status = item.json()["status"]
                if status == "queued":
                    assert await services.protocol.advance(
                        job["id"], [JobStatus.QUEUED], JobStatus.RUNNING,
                        message="Fine-tuning job started")
                elif status == "running":
                    assert await services.protocol.fail(job["id"], code="x", message="boom")
    statuses = [m.json()["status"] for m in reader.messages if m.event == "job"]
    assert statuses == ["queued", "running", "failed"]
    assert reader.messages[-1].event == "end"


def test_the_stream_is_documented(api_server: ApiServer) -> None:
    root = api_server.base_url.removesuffix("/v1")
    document = httpx.get(f"{root}/schema/openapi.json", timeout=10).json()
    operation = document["paths"]["/v1/fine_tuning/jobs/{job_id}/events"]["get"]
    assert set(operation["responses"]["200"]["content"]) == {"application/json",
                                                            "text/event-stream"}
    parameters = {(p["in"], p["name"]) for p in operation["parameters"]}
    assert {("query", "stream"), ("header", "Last-Event-ID")} <= parameters
