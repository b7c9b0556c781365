"""Webhooks against a real HTTP receiver: OpenAI's SDK manages the endpoints and verifies the
deliveries (`client.webhooks.unwrap`), a receiver that fails three times gets the event on the
fourth try, an API process killed mid-delivery delivers after its restart, the backoff doubles
up to its cap until the retry period ends, private targets are refused at creation and before
each attempt, and another organization sees none of it.

The delivery tests run their own API process (fast backoff, private targets allowed for the
receiver on 127.0.0.1) on a database of their own, once (SQLite); the refusal test uses the
shared API with the default settings, on every database.
"""

from __future__ import annotations

import asyncio
import io
import json
import signal
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.api.data import chat_jsonl
from tests.conftest import REPO, Tenant, make_tenant, until_validated
from tuneforge.domain import JobStatus, fine_tuned_model_name
from tuneforge.processes import ManagedProcess, free_port, spawn, wait_until
from tuneforge.settings import Settings, WebhookSettings

MODEL = "SmolLM2-135M-Instruct"
FINE_TUNING_EVENTS = ["fine_tuning.job.succeeded", "fine_tuning.job.failed",
                      "fine_tuning.job.cancelled"]


# ---- the receiver --------------------------------------------------------------------------


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Records every POST by path. `fail[path]` answers that many 500s first; a path in
    `hang` holds its first request until `release` is set."""

    port: int
    requests: dict[str, list[Received]] = field(default_factory=dict)
    fail: dict[str, int] = field(default_factory=dict)
    hang: set[str] = field(default_factory=set)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def got(self, path: str) -> list[Received]:
        with self.lock:
            return list(self.requests.get(path, []))

    def wait_for(self, path: str, count: int, within: float = 30.0) -> list[Received]:
        deadline = time.monotonic() + within
        while len(got := self.got(path)) < count:
            assert time.monotonic() < deadline, f"{path}: {len(got)} of {count} requests"
            time.sleep(0.05)
        return got


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            with receiver.lock:
                seen = receiver.requests.setdefault(self.path, [])
                seen.append(Received({k.lower(): v for k, v in self.headers.items()}, body))
                attempt = len(seen)
            if self.path in receiver.hang and attempt == 1:
                receiver.release.wait(30)
            status = 500 if attempt <= receiver.fail.get(self.path, 0) else 200
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(Receiver(0)))
    server.daemon_threads = True
    receiver = Receiver(server.server_address[1])
    server.RequestHandlerClass = _handler(receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    receiver.release.set()
    server.shutdown()
    server.server_close()


# ---- an API process of this module's own ---------------------------------------------------


class Api:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.base_url = f"http://127.0.0.1:{settings.port}/v1"
        self.process: ManagedProcess | None = None

    def start(self) -> None:
        self.process = spawn("api", [sys.executable, "-m", "stack.cli", "server"],
                             self.settings.data_dir / "api.log", env=self.settings.to_env(),
                             cwd=REPO)
        wait_until(lambda: httpx.get(f"{self.base_url}/models").status_code == 401, 120,
                   "API server", self.process)

    def kill(self) -> None:
        assert self.process is not None
        self.process.popen.send_signal(signal.SIGKILL)
        self.process.popen.wait(30)
        self.process.stop()  # reaped: nothing left to stop

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


@pytest.fixture(scope="module")
def own_settings(request: pytest.FixtureRequest, settings: Settings,
                 tmp_root: Path) -> Settings:
    if not settings.effective_database_url.startswith("sqlite"):
        pytest.skip("deliveries do not depend on the database; checked once, on SQLite")
    from server.db.migrate import upgrade

    data_dir = tmp_root / f"webhooks-{uuid.uuid4().hex[:6]}"
    data_dir.mkdir()
    database_url = f"sqlite+aiosqlite:///{data_dir / 'state.db'}"
    upgrade(database_url)
    own = settings.model_copy(update={
        "data_dir": data_dir, "database_url": database_url, "port": free_port(),
        "grpc_port": free_port(), "queue_name": f"tf-webhooks-{uuid.uuid4().hex[:6]}",
        "webhooks": WebhookSettings(base_delay_seconds=0.2, max_delay_seconds=0.5,
                                    timeout_seconds=3.0, poll_interval_seconds=0.1,
                                    retry_period_seconds=120.0, allow_private_targets=True),
    })
    own.__dict__.pop("effective_database_url", None)  # a cached_property model_copy copied
    assert own.effective_database_url == database_url
    return own


@pytest.fixture(scope="module")
def own_api(own_settings: Settings) -> Iterator[Api]:
    api = Api(own_settings)
    api.start()
    yield api
    api.stop()


@pytest.fixture(scope="module")
async def own_services(own_settings: Settings) -> AsyncIterator[Any]:
    from server.service import Services
    from server.service.context import Context

    services = Services(Context.from_settings(own_settings))
    yield services
    await services.ctx.close()


@pytest.fixture(scope="module")
async def own_tenants(own_services: Any) -> tuple[Tenant, Tenant]:
    return await make_tenant(own_services, "hooks"), await make_tenant(own_services, "other")


@pytest.fixture
def own_client(own_api: Api, own_tenants: tuple[Tenant, Tenant]) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=own_api.base_url, api_key=own_tenants[0].api_key,
                       max_retries=0) as client:
        yield client


async def queued_job(client: openai.OpenAI) -> str:
    file_id = client.files.create(file=("t.jsonl", io.BytesIO(chat_jsonl())),
                                  purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=file_id)
    assert await until_validated(client, job.id) == "queued"
    return job.id


async def succeed(services: Any, client: openai.OpenAI) -> str:
    """Drive a job to `succeeded` through the service layer, as a worker would."""
    job_id = await queued_job(client)
    assert await services.protocol.advance(job_id, [JobStatus.QUEUED], JobStatus.RUNNING)
    organization_id = client.fine_tuning.jobs.retrieve(job_id).organization_id
    name = fine_tuned_model_name(MODEL, organization_id, "hooks", job_id)
    assert await services.protocol.succeed(job_id, fine_tuned_model=name, result_files=[],
                                           trained_tokens=10)
    return job_id


def deliveries(base_url: str, api_key: str, endpoint_id: str, **params: Any) -> httpx.Response:
    return httpx.get(f"{base_url}/webhook_endpoints/{endpoint_id}/deliveries", params=params,
                     headers={"Authorization": f"Bearer {api_key}"}, timeout=10)


def verified(client: openai.OpenAI, request: Received, secret: str) -> Any:
    return client.webhooks.unwrap(request.body, request.headers, secret=secret)


# ---- the tests -----------------------------------------------------------------------------


async def test_sdk_manages_endpoints_and_verifies_each_event(
        own_client: openai.OpenAI, own_api: Api, own_services: Any,
        own_tenants: tuple[Tenant, Tenant], receiver: Receiver) -> None:
    created = own_client.webhooks.create(url=receiver.url("/all"), name="ci",
                                         event_types=FINE_TUNING_EVENTS)  # type: ignore[arg-type]
    secret = created.signing_secret
    assert secret.startswith("whsec_") and created.signing_secret_hint.endswith(secret[-4:])
    assert own_client.webhooks.retrieve(created.id).url == receiver.url("/all")
    assert "signing_secret" not in own_client.webhooks.retrieve(created.id).model_extra
    assert created.id in [e.id for e in own_client.webhooks.list()]

    other = openai.OpenAI(base_url=own_api.base_url, api_key=own_tenants[1].api_key,
                          max_retries=0)
    with other:
        assert created.id not in [e.id for e in other.webhooks.list()]
        with pytest.raises(openai.NotFoundError):
            other.webhooks.retrieve(created.id)
        with pytest.raises(openai.NotFoundError):
            other.webhooks.delete(created.id)
        assert deliveries(own_api.base_url, own_tenants[1].api_key,
                          created.id).status_code == 404

    succeeded = await succeed(own_services, own_client)
    failed = await queued_job(own_client)
    assert await own_services.protocol.fail(failed, code="test", message="made to fail")
    cancelled = await queued_job(own_client)
    own_client.fine_tuning.jobs.cancel(cancelled)  # through the API: jobs.py's transition

    events = {}
    for request in receiver.wait_for("/all", 3):
        event = verified(own_client, request, secret)
        assert request.headers["webhook-id"] == event.id and event.id.startswith("evt_")
        assert json.loads(request.body) == {"id": event.id, "object": "event",
                                            "created_at": event.created_at,
                                            "type": event.type, "data": {"id": event.data.id}}
        events[event.type] = event.data.id
    assert events == {"fine_tuning.job.succeeded": succeeded,
                      "fine_tuning.job.failed": failed,
                      "fine_tuning.job.cancelled": cancelled}
    with pytest.raises(openai.InvalidWebhookSignatureError):
        verified(own_client, receiver.got("/all")[0], "whsec_" + "A" * 44)

    # The delivery log, newest first, paged with after/limit.
    first = deliveries(own_api.base_url, own_tenants[0].api_key, created.id, limit=2).json()
    assert first["object"] == "list" and first["has_more"] is True
    rest = deliveries(own_api.base_url, own_tenants[0].api_key, created.id,
                      after=first["last_id"]).json()
    log = first["data"] + rest["data"]
    assert [d["event"]["data"]["id"] for d in log] == [cancelled, failed, succeeded]
    assert all(d["status"] == "delivered" and d["attempts"] == 1 and d["last_status_code"] == 200
               for d in log)

    # A deleted endpoint gets nothing more and is gone for its owner too.
    assert own_client.webhooks.delete(created.id).deleted is True
    await succeed(own_services, own_client)
    with pytest.raises(openai.NotFoundError):
        own_client.webhooks.retrieve(created.id)
    await asyncio.sleep(0.5)  # several delivery passes
    assert len(receiver.got("/all")) == 3


async def test_receiver_failing_three_times_gets_the_event_on_the_fourth_try(
        own_client: openai.OpenAI, own_api: Api, own_services: Any,
        own_tenants: tuple[Tenant, Tenant], receiver: Receiver) -> None:
    receiver.fail["/flaky"] = 3
    endpoint = own_client.webhooks.create(url=receiver.url("/flaky"), name="flaky",
                                          event_types=["fine_tuning.job.failed"])
    job_id = await queued_job(own_client)
    assert await own_services.protocol.fail(job_id, code="test", message="made to fail")

    tries = receiver.wait_for("/flaky", 4)
    assert len({t.headers["webhook-id"] for t in tries}) == 1  # one event, retried
    event = verified(own_client, tries[3], endpoint.signing_secret)
    assert event.type == "fine_tuning.job.failed" and event.data.id == job_id

    def delivered() -> dict[str, Any]:
        return deliveries(own_api.base_url, own_tenants[0].api_key,
                          endpoint.id).json()["data"][0]

    wait_until(lambda: delivered()["status"] == "delivered", 10, "the delivery log")
    entry = delivered()
    assert entry["attempts"] == 4 and entry["last_status_code"] == 200
    assert "last_error" not in entry and "next_attempt_at" not in entry


async def test_api_killed_mid_delivery_delivers_after_restart(
        own_client: openai.OpenAI, own_api: Api, own_services: Any,
        own_tenants: tuple[Tenant, Tenant], receiver: Receiver) -> None:
    receiver.hang.add("/restart")
    endpoint = own_client.webhooks.create(url=receiver.url("/restart"), name="restart",
                                          event_types=["fine_tuning.job.succeeded"])
    job_id = await succeed(own_services, own_client)
    receiver.wait_for("/restart", 1)  # the first attempt is in flight, unanswered
    own_api.kill()
    receiver.release.set()
    own_api.start()

    second = receiver.wait_for("/restart", 2)[1]
    event = verified(own_client, second, endpoint.signing_secret)
    assert event.type == "fine_tuning.job.succeeded" and event.data.id == job_id
    assert second.headers["webhook-id"] == receiver.got("/restart")[0].headers["webhook-id"]


async def test_private_targets_are_refused_at_creation_and_at_delivery(
        client: openai.OpenAI, services: Any, receiver: Receiver) -> None:
    """The shared API runs the default settings: private targets are not allowed."""
    for url in (receiver.url("/private"), "http://10.1.2.3/hook", "http://localhost:9/hook",
                "http://169.254.169.254/latest", "http://0.0.0.0/", "http://[::1]/hook",
                "ftp://example.com/hook", "http://user:pw@example.com/hook"):
        with pytest.raises(openai.BadRequestError) as refused:
            client.webhooks.create(url=url, name="x", event_types=FINE_TUNING_EVENTS)
        error = refused.value.body
        assert isinstance(error, dict) and error["param"] == "url", (url, error)
    with pytest.raises(openai.BadRequestError) as unknown:
        client.webhooks.create(url="https://example.com/hook", name="x",
                               event_types=["batch.completed"])
    assert "event_types" in str(unknown.value.body)

    # A target that became private after it was saved (say, its DNS changed) gets no request:
    # the sender checks the addresses before every attempt (default settings, as above).
    from server.service.webhook_delivery import Claimed, WebhookSender
    from server.service.webhooks import new_secret

    sender = WebhookSender(services.ctx)
    async with httpx.AsyncClient() as http:
        outcome = await sender.attempt(http, Claimed(
            id="whdel_x", event_id="evt_x", body="{}", attempts=0, created_at=time.time(),
            url=receiver.url("/private"), secret=new_secret()))
    assert not outcome.delivered and outcome.status_code is None
    assert outcome.error is not None and "non-public" in outcome.error
    assert receiver.got("/private") == []


async def test_backoff_doubles_and_a_delivery_fails_after_the_retry_period(
        own_services: Any, own_client: openai.OpenAI) -> None:
    """The sender's bookkeeping on rows that are not due (the API's sender leaves them be)."""
    from sqlalchemy import select

    from server.db.models import WebhookDelivery
    from server.service.webhook_delivery import Claimed, Outcome, WebhookSender

    endpoint = own_client.webhooks.create(url="https://hooks.example.com/x", name="backoff",
                                          event_types=["fine_tuning.job.failed"])
    sender = WebhookSender(own_services.ctx)
    sender.settings = WebhookSettings(base_delay_seconds=10, max_delay_seconds=30,
                                      retry_period_seconds=100)
    later, at = time.time() + 3600, time.time()
    rows = {"a": (0, at), "b": (1, at), "c": (2, at), "old": (0, at - 95)}
    async with own_services.ctx.sessions() as session, session.begin():
        for key, (attempts, created) in rows.items():
            session.add(WebhookDelivery(
                id=f"whdel_{key}{uuid.uuid4().hex[:8]}", organization_id="org-x",
                endpoint_id=endpoint.id, event_id="evt_x", event_type="fine_tuning.job.failed",
                body="{}", status="pending", attempts=attempts, next_attempt_at=later,
                created_at=created, lease_owner=sender.owner, lease_expires_at=later))

    async def current() -> dict[str, WebhookDelivery]:
        async with own_services.ctx.sessions() as session:
            found = (await session.execute(select(WebhookDelivery).where(
                WebhookDelivery.endpoint_id == endpoint.id))).scalars().all()
        return {r.id[len("whdel_"):-8]: r for r in found}

    for row in (await current()).values():
        await sender.record(Claimed(id=row.id, event_id=row.event_id, body=row.body,
                                    attempts=row.attempts, created_at=row.created_at,
                                    url=endpoint.url, secret="whsec_x"),
                            Outcome(False, status_code=503, error="HTTP 503"))
    after = await current()
    waits = {k: after[k].next_attempt_at - after[k].last_attempt_at for k in "abc"}
    assert waits == pytest.approx({"a": 10, "b": 20, "c": 30})  # 10·2^(n-1), at most 30
    assert all(after[k].status == "pending" and after[k].lease_owner is None for k in "abc")
    # The 95 s old event's next try would fall past its 100 s retry period: failed.
    old = after["old"]
    assert old.status == "failed" and old.attempts == 1 and old.lease_owner is None
    assert old.last_status_code == 503 and old.last_error == "HTTP 503"
    own_client.webhooks.delete(endpoint.id)  # its pending deliveries end with it
