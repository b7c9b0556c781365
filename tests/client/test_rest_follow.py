"""`jobs.watch/follow/wait` and the CLI's `jobs follow` with `transport="rest"`: Server-Sent
Events, no gRPC at all (the gRPC target given is a closed port). A dropped connection is
resumed with `Last-Event-ID`. The job progresses through writes from the test process, as a
worker's would."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
from tuneforge_client import AsyncTuneForge, FineTuningJob, FineTuningJobEvent

from tests.api.data import chat_jsonl
from tests.client.test_cli import tuneforge
from tests.conftest import until_validated
from tests.grpc.conftest import MODEL
from tuneforge.domain import EventType, JobStatus, fine_tuned_model_name
from tuneforge.processes import free_port


@pytest.fixture
async def rest_only(api_server, tenant_a) -> AsyncIterator[AsyncTuneForge]:  # type: ignore[no-untyped-def]
    async with AsyncTuneForge(base_url=api_server.base_url, api_key=tenant_a.api_key,
                              grpc_target=f"127.0.0.1:{free_port()}",  # nothing listens
                              transport="rest") as client:
        yield client


async def until(check, within: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + within
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.02)


async def collect(client: AsyncTuneForge, job_id: str, into: list[object]) -> None:
    async for update in client.jobs.watch(job_id):
        into.append(update)


async def test_follow_and_wait_over_rest(rest_only: AsyncTuneForge,
                                         services) -> None:  # type: ignore[no-untyped-def]
    file = await rest_only.files.upload(chat_jsonl(), filename="train.jsonl")
    job = await rest_only.jobs.create(model=MODEL, training_file=file.id, suffix="sse")
    assert await until_validated(rest_only, job.id) == "queued"
    updates: list[object] = []
    watching = asyncio.create_task(collect(rest_only, job.id, updates))
    waiting = asyncio.create_task(rest_only.jobs.wait(job.id, timeout=60))

    def events() -> list[str]:
        return [u.message for u in updates if isinstance(u, FineTuningJobEvent)]

    await until(lambda: "Files validated, moving job to queued state" in events())
    assert isinstance(updates[0], FineTuningJob) and updates[0].status == "queued"
    assert await services.protocol.advance(job.id, [JobStatus.QUEUED], JobStatus.RUNNING,
                                           message="Fine-tuning job started")
    await services.protocol.add_event(job.id, "Step 1/2: training loss=1.5",
                                      type=EventType.METRICS,
                                      data={"step": 1, "total_steps": 2, "train_loss": 1.5})
    await until(lambda: "Step 1/2: training loss=1.5" in events())
    assert not waiting.done()
    name = fine_tuned_model_name(MODEL, job.organization_id, "sse", job.id)
    assert await services.protocol.succeed(job.id, fine_tuned_model=name, result_files=[],
                                           trained_tokens=3)
    await asyncio.wait_for(watching, 15)
    finished = await asyncio.wait_for(waiting, 15)
    assert finished.status == "succeeded" and finished.fine_tuned_model == name
    assert events()[-1] == "The job has successfully completed"
    assert [u.status for u in updates if isinstance(u, FineTuningJob)] == \
        ["queued", "running", "succeeded"]
    metrics = next(u for u in updates if isinstance(u, FineTuningJobEvent)
                   and u.type == "metrics")
    assert metrics.data == {"step": 1, "total_steps": 2, "train_loss": 1.5}
    # follow: the events alone, replayed from the start once the job has ended.
    replayed = [e.message async for e in rest_only.jobs.follow(job.id)]
    assert replayed == events()


class DroppingProxy:
    """A TCP proxy to the API that can cut every open connection, as a flaky network would;
    it keeps the head of each request it forwarded."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.requests: list[bytes] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                       record: bool) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    if record:
                        self.requests.append(data)
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(Exception):
                dst.close()

        await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))

    def drop_all(self) -> None:
        for writer in self.writers:
            with contextlib.suppress(Exception):
                writer.transport.abort()
        self.writers.clear()

    async def stop(self) -> None:
        self.drop_all()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def test_a_dropped_stream_resumes_after_the_last_event(api_server, tenant_a,  # type: ignore[no-untyped-def]
                                                             rest_only: AsyncTuneForge,
                                                             services) -> None:
    file = await rest_only.files.upload(chat_jsonl(), filename="train.jsonl")
    job = await rest_only.jobs.create(model=MODEL, training_file=file.id)
    assert await until_validated(rest_only, job.id) == "queued"
    proxy = DroppingProxy(urlsplit(api_server.base_url).port or 80)
    await proxy.start()
    try:
        async with AsyncTuneForge(base_url=f"http://127.0.0.1:{proxy.port}/v1",
                                  api_key=tenant_a.api_key,
                                  grpc_target=f"127.0.0.1:{free_port()}", transport="rest",
                                  max_retries=5) as flaky:
            events: list[FineTuningJobEvent] = []

            async def follow() -> None:
                async for event in flaky.jobs.follow(job.id):
                    events.append(event)

            following = asyncio.create_task(follow())
            await until(lambda: any(e.message.startswith("Queued: position") for e in events))
            seen = len(events)
            proxy.drop_all()
            await services.protocol.add_event(job.id, "while the connection was down")
            await until(lambda: len(events) > seen)
            await rest_only.jobs.cancel(job.id)
            await asyncio.wait_for(following, 15)
    finally:
        await proxy.stop()
    messages = [e.message for e in events]
    assert messages[seen] == "while the connection was down"
    assert messages[-1] == "Fine-tuning job cancelled"
    assert len({e.id for e in events}) == len(events)  # nothing twice
    resumed = [r for r in proxy.requests if b"last-event-id: " in r.lower()]
    assert resumed and f"last-event-id: {events[seen - 1].id}".lower().encode() in \
        resumed[0].lower()


async def test_cli_follow_over_rest(api_server, tenant_a, services, settings,  # type: ignore[no-untyped-def]
                                    rest_only: AsyncTuneForge, tmp_path) -> None:
    if not settings.effective_database_url.startswith("sqlite"):
        pytest.skip("CLI tests run against the SQLite-backed server only")
    file = await rest_only.files.upload(chat_jsonl(), filename="train.jsonl")
    job = await rest_only.jobs.create(model=MODEL, training_file=file.id)
    assert await until_validated(rest_only, job.id) == "queued"
    await rest_only.jobs.cancel(job.id)
    env = {"TUNEFORGE_BASE_URL": api_server.base_url, "TUNEFORGE_API_KEY": tenant_a.api_key,
           "TUNEFORGE_GRPC_TARGET": f"127.0.0.1:{free_port()}", "TUNEFORGE_TRANSPORT": "rest",
           "TUNEFORGE_CLIENT_CONFIG": str(tmp_path / "none.toml"), "PATH": "/usr/bin:/bin"}
    result = await asyncio.to_thread(tuneforge, env, "jobs", "follow", job.id, "--json")
    assert result.returncode == 1, result.stderr  # cancelled
    updates = [json.loads(line) for line in result.stdout.splitlines()]
    assert [u["job"]["status"] for u in updates if u["type"] == "job"][-1] == "cancelled"
    assert [u["event"]["message"] for u in updates if u["type"] == "event"][-1] == \
        "Fine-tuning job cancelled"
