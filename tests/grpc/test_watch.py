"""WatchEvents: replays a job's events after a cursor, oldest first, then tails new ones live
until the job ends. Events and transitions are made from the test process, as a worker would."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from tuneforge_client import AsyncTuneForge, FineTuningJob, FineTuningJobEvent

from tests.api.data import chat_jsonl
from tests.conftest import until_validated
from tests.grpc.conftest import MODEL
from tuneforge.domain import EventType, JobStatus, fine_tuned_model_name


@pytest.fixture
async def atf(api_server, grpc_target: str, tenant_a) -> AsyncIterator[AsyncTuneForge]:  # type: ignore[no-untyped-def]
    client = AsyncTuneForge(base_url=api_server.base_url, api_key=tenant_a.api_key,
                            grpc_target=grpc_target)
    yield client
    await client.close()


async def eventually(check: Callable[[], bool], within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.02)


class Watcher:
    """Consumes `jobs.watch` in a task, recording every update."""

    def __init__(self, client: AsyncTuneForge, job_id: str, after: str | None = None) -> None:
        self.updates: list[Any] = []
        self.task = asyncio.create_task(self._run(client, job_id, after))

    async def _run(self, client: AsyncTuneForge, job_id: str, after: str | None) -> None:
        async for update in client.jobs.watch(job_id, after=after):
            self.updates.append(update)

    @property
    def events(self) -> list[FineTuningJobEvent]:
        return [u for u in self.updates if isinstance(u, FineTuningJobEvent)]

    @property
    def jobs(self) -> list[FineTuningJob]:
        return [u for u in self.updates if isinstance(u, FineTuningJob)]

    def messages(self) -> list[str]:
        return [e.message for e in self.events]


async def new_job(client: AsyncTuneForge, suffix: str | None = None) -> FineTuningJob:
    """A new job, once the API has validated its files and queued it."""
    file = await client.files.upload(chat_jsonl(), filename="train.jsonl")
    job = await client.jobs.create(model=MODEL, training_file=file.id, suffix=suffix)
    assert await until_validated(client, job.id) == "queued"
    return await client.jobs.get(job.id)


async def test_replays_then_tails_live_until_succeeded(atf: AsyncTuneForge, services,  # type: ignore[no-untyped-def]
                                                       arest: httpx.AsyncClient) -> None:
    job = await new_job(atf, suffix="watch")
    await services.protocol.add_event(job.id, "before the watch")

    watcher = Watcher(atf, job.id)
    await eventually(lambda: len(watcher.events) == 5)
    assert watcher.updates[0] == job  # the stream opens with the job itself
    assert watcher.messages()[0] == f"Created fine-tuning job: {job.id}"
    assert watcher.messages()[4] == "before the watch"

    # Live: a transition, metrics, a message; each arrives while the stream stays open.
    await services.protocol.advance(job.id, [JobStatus.QUEUED], JobStatus.RUNNING,
                                    message="Fine-tuning job started")
    await eventually(lambda: watcher.jobs[-1].status == "running")
    for step in (1, 2):
        await services.protocol.add_event(job.id, f"Step {step}/2", type=EventType.METRICS,
                                          data={"step": step, "total_steps": 2,
                                            "train_loss": 2.0 / step})
        await eventually(lambda s=step: watcher.messages()[-1] == f"Step {s}/2")
    assert watcher.events[-1].data == {"step": 2, "total_steps": 2, "train_loss": 1.0}
    assert not watcher.task.done()

    name = fine_tuned_model_name(MODEL, job.organization_id, "watch", job.id)
    await services.protocol.succeed(job.id, fine_tuned_model=name, result_files=[],
                                    trained_tokens=42)
    await asyncio.wait_for(watcher.task, 10)  # the stream ends by itself
    assert watcher.jobs[-1].status == "succeeded"
    assert watcher.jobs[-1].fine_tuned_model == name
    assert watcher.messages()[-1] == "The job has successfully completed"

    # Exactly the job's events, each once, oldest first: the REST list reversed.
    listed = (await arest.get(f"/fine_tuning/jobs/{job.id}/events",
                              params={"limit": 100})).json()
    assert [e.to_dict() for e in watcher.events] == listed["data"][::-1]


async def test_cursor_replays_only_later_events_and_ends_at_once(atf: AsyncTuneForge,
                                                                 services) -> None:  # type: ignore[no-untyped-def]
    job = await new_job(atf)
    await services.protocol.fail(job.id, code="invalid_training_file",
                                 message="line 3: not a chat example")
    events = (await atf.jobs.events(job.id, limit=100)).data[::-1]
    assert len(events) == 5

    replay = Watcher(atf, job.id, after=events[0].id)
    await asyncio.wait_for(replay.task, 10)
    assert [e.id for e in replay.events] == [e.id for e in events[1:]]
    assert [j.status for j in replay.jobs] == ["failed"]
    assert replay.events[-1].level == "error"

    final = await atf.jobs.wait(job.id, timeout=10)
    assert final.status == "failed" and final.error is not None
    assert final.error.code == "invalid_training_file"


async def test_follow_and_wait_end_with_the_job(atf: AsyncTuneForge, services) -> None:  # type: ignore[no-untyped-def]
    job = await new_job(atf)
    waiter = asyncio.create_task(atf.jobs.wait(job.id, timeout=20))
    seen: list[str] = []

    async def follow() -> None:
        async for event in atf.jobs.follow(job.id):
            seen.append(event.message)

    follower = asyncio.create_task(follow())
    await eventually(lambda: len(seen) == 4)
    await asyncio.sleep(0.3)
    assert not waiter.done() and not follower.done()
    await atf.jobs.cancel(job.id)
    await asyncio.wait_for(follower, 10)
    assert (await waiter).status == "cancelled"
    assert seen[-1] == "Fine-tuning job cancelled"
