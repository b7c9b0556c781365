"""The training thread never waits on a write, and the run asks the serving plane through
the DB: a run driven in this process (the real model, real S3, real DB) whose store holds
checkpoint uploads at a gate, and whose serving request is answered here as the API's
serving plane would answer it.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import openai
import pytest
from sqlalchemy import select, update

from server.db.models import ServingRequest
from server.storage import ObjectStore
from tests.conftest import until_validated
from tests.store.test_reconciler import wait_for
from tests.worker.conftest import MODEL, all_events, sft_file
from tuneforge.domain import JobStatus, fine_tuned_model_name
from tuneforge.settings import ServingSettings, Settings, VllmServerSettings

# An attached server that nobody answers on: the run only writes a serving request for it.
UNANSWERED_SERVER = VllmServerSettings(base_model=MODEL, url="http://127.0.0.1:9")


@pytest.fixture(autouse=True)
def _sqlite_only(request: pytest.FixtureRequest) -> None:
    if "postgresql" in request.node.callspec.id:
        pytest.skip("worker runs are database-independent; trained once, on SQLite")


class GatedStore(ObjectStore):
    """A real object store whose checkpoint uploads wait until the gate opens."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings.s3, settings.storage)
        self.gate = asyncio.Event()
        self.checkpoint_started = asyncio.Event()
        self.checkpoints_uploaded: list[str] = []

    async def upload_dir(self, local: Path, prefix: str) -> int:
        if "/checkpoints/" not in prefix:
            return await super().upload_dir(local, prefix)
        self.checkpoint_started.set()
        await self.gate.wait()
        count = await super().upload_dir(local, prefix)
        self.checkpoints_uploaded.append(prefix)
        return count


def with_unanswered_server(settings: Settings) -> Settings:
    return settings.model_copy(update={"serving": ServingSettings(
        servers=[UNANSWERED_SERVER], hot_load_timeout_seconds=600)})


async def metrics_steps(client: openai.OpenAI, job_id: str) -> list[int]:
    events = await asyncio.to_thread(all_events, client, job_id)
    return [e.data["step"] for e in events if e.type == "metrics"]


async def answer_serving_request(services, job_id: str, *, ready_after: float | None = None,  # type: ignore[no-untyped-def]
                                 error: str | None = None) -> None:
    """What the API's serving plane does once it has loaded (or failed to load) the model."""
    async def requested() -> bool:
        async with services.ctx.sessions() as session:
            return (await session.execute(select(ServingRequest.id).where(
                ServingRequest.job_id == job_id))).first() is not None

    await wait_for(requested, within_s=900)
    async with services.ctx.sessions() as session, session.begin():
        values = ({"error": error} if error is not None else
                  {"ready_at": ServingRequest.requested_at + ready_after, "replicas": 1})
        await session.execute(update(ServingRequest).where(ServingRequest.job_id == job_id)
                              .values(**values))


async def test_training_goes_on_while_a_checkpoint_uploads(
    client: openai.OpenAI, services, settings  # type: ignore[no-untyped-def]
) -> None:
    from trainer.job_runner import JobRunner

    job = client.fine_tuning.jobs.create(
        model=MODEL, training_file=sft_file(client, 12, seed=4), seed=4, suffix="gated",
        method={"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 5}}})
    # The API validates it first (holding its lease); a worker takes it once it is queued.
    assert await until_validated(client, job.id) == "queued"
    store = GatedStore(settings)
    runner = JobRunner(services.protocol, store, with_unanswered_server(settings), job.id,
                       "worker-in-process")
    run = asyncio.create_task(runner.run())
    try:
        # Epoch 1 ends at step 3 with a checkpoint; its upload is held at the gate.
        started = asyncio.ensure_future(store.checkpoint_started.wait())
        await asyncio.wait({run, started}, timeout=600, return_when=asyncio.FIRST_COMPLETED)
        assert started.done(), f"no checkpoint upload began; the run: {run.done() and run.result()}"

        async def trained_past_the_checkpoint() -> bool:
            return max(await metrics_steps(client, job.id), default=0) >= 4

        await wait_for(trained_past_the_checkpoint, within_s=300)
        assert store.checkpoints_uploaded == [], "the upload was held, training went on"
        assert client.fine_tuning.jobs.checkpoints.list(job.id).data == []
        store.gate.set()
        await answer_serving_request(services, job.id, ready_after=0.25)
        outcome = await asyncio.wait_for(run, timeout=900)
    finally:
        store.gate.set()
        if not run.done():
            run.cancel()
        store.close()

    assert outcome == "succeeded"
    done = client.fine_tuning.jobs.retrieve(job.id)
    name = fine_tuned_model_name(MODEL, done.organization_id, "gated", job.id)
    assert done.status == "succeeded" and done.fine_tuned_model == name
    # Both checkpoints were uploaded, in order, and recorded before the job succeeded.
    assert store.checkpoints_uploaded == [f"jobs/{job.id}/checkpoints/step-3",
                                          f"jobs/{job.id}/checkpoints/step-6"]
    assert [c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job.id).data] \
        == [6, 3]
    events = all_events(client, job.id)
    assert [e.data["step"] for e in events if e.type == "metrics"][-1] == 6
    ready = [e for e in events if e.message.startswith(f"Model {name} is ready: first token")]
    assert len(ready) == 1 and ready[0].data["ready_seconds"] == pytest.approx(0.25)
    messages = [e.message for e in events]
    assert messages.index(ready[0].message) < messages.index(
        "The job has successfully completed")


async def test_an_adapter_the_serving_plane_refuses_ends_the_wait_with_its_error(
    client: openai.OpenAI, services, settings  # type: ignore[no-untyped-def]
) -> None:
    from trainer.job_runner import JobRunner

    job = client.fine_tuning.jobs.create(model=MODEL, training_file=sft_file(client, 12))
    worker = "worker-refused"
    assert await until_validated(client, job.id) == "queued"
    assert await services.protocol.claim(job.id, worker, 60)
    assert await services.protocol.advance(job.id, [JobStatus.QUEUED],
                                           JobStatus.RUNNING, worker_id=worker)
    spec = await services.protocol.spec(job.id)
    runner = JobRunner(services.protocol, services.ctx.store, with_unanswered_server(settings),
                       job.id, worker)
    started = time.monotonic()
    refused, _ = await asyncio.gather(
        runner._make_servable(spec, "ft:refused"),
        answer_serving_request(services, job.id, error="rank 64 is above max_lora_rank 16"))
    assert refused == "rank 64 is above max_lora_rank 16"
    assert time.monotonic() - started < 60
    await services.protocol.fail(job.id, code="adapter_load_failed", message=refused,
                                 worker_id=worker)
