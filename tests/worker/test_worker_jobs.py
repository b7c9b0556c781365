"""Jobs trained end to end by a real worker: the real model, real training, through the API.

Runs on one database (SQLite): the store suite covers PostgreSQL and training time is the
cost here.
"""

from __future__ import annotations

import asyncio
import io
import time

import openai
import pytest

from tests.dashboard.browser import chromium, open_tab, sign_in
from tests.worker.conftest import (
    MODEL,
    all_events,
    assert_no_internals,
    sft_file,
    wait_event,
    wait_status,
)

pytestmark = pytest.mark.train


@pytest.fixture(autouse=True)
def _sqlite_only(request: pytest.FixtureRequest) -> None:
    if "postgresql" in request.node.callspec.id:
        pytest.skip("worker runs are database-independent; trained once, on SQLite")


def metric_events(client: openai.OpenAI, job_id: str) -> list:  # type: ignore[type-arg]
    return [e for e in all_events(client, job_id) if e.type == "metrics"]


async def test_sft_job_trains_and_publishes(client: openai.OpenAI, worker,  # type: ignore[no-untyped-def]
                                            services, settings, api_server,
                                            tenant_a, tmp_path) -> None:
    training_file = sft_file(client, n=16)
    job = client.fine_tuning.jobs.create(
        model=MODEL, training_file=training_file, validation_file=sft_file(client, 10, seed=1),
        suffix="arith", seed=7,
        method={"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": 3, "batch_size": 4, "learning_rate_multiplier": 5}}})
    async with chromium() as browser:
        # The dashboard's job page, open while the worker trains: its loss curve grows live.
        tab = await open_tab(browser, api_server.base_url.removesuffix("/v1"))
        await sign_in(tab, tenant_a.api_key, f"#/jobs/{job.id}")
        await tab.page.wait_for_selector("#loss-chart .uplot", timeout=600_000)
        seen = int(await tab.page.get_attribute("#loss-chart", "data-points") or 0)
        assert seen < 12, "the job trained to its end before the page showed it"
        await tab.page.wait_for_function(
            "n => Number(document.querySelector('#loss-chart').dataset.points) > n",
            arg=seen, timeout=600_000)
        done = await asyncio.to_thread(wait_status, client, job.id,
                                       {"succeeded", "failed", "cancelled"})
        await tab.page.wait_for_selector("#loss-chart[data-points='12'] .uplot")
        await tab.shot(tmp_path, "job-trained", share=True)
        assert tab.outside == [] and tab.errors == []
        await tab.close()
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model == (
        f"ft:{MODEL}:{done.organization_id}:arith:{job.id.removeprefix('ftjob-')}")
    assert done.hyperparameters.n_epochs == 3 and done.hyperparameters.batch_size == 4
    assert done.trained_tokens and done.trained_tokens > 0

    messages = [e.message for e in all_events(client, job.id)]
    assert any(m.startswith("Training file: 16 examples") for m in messages)
    assert "Files validated, moving job to queued state" in messages
    assert messages[-1] == "The job has successfully completed"

    metrics = [e.data for e in metric_events(client, job.id)]
    assert metrics[-1]["step"] == metrics[-1]["total_steps"] == 12
    losses = [m["train_loss"] for m in metrics if m.get("train_loss") is not None]
    assert losses[-1] < losses[0] * 0.7, f"loss did not fall: {losses}"
    assert any(m.get("valid_loss") is not None for m in metrics)

    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.step_number for c in checkpoints] == [12, 8, 4]
    assert checkpoints[0].fine_tuned_model_checkpoint == f"{done.fine_tuned_model}:ckpt-step-12"
    assert done.fine_tuned_model in [m.id for m in client.models.list()]

    results = client.files.retrieve(done.result_files[0])
    assert results.purpose == "fine-tune-results"
    csv = client.files.content(results.id).read().decode()
    assert csv.splitlines()[0].startswith("step,train_loss")
    keys = {o.key for o in await services.ctx.store.list_keys(f"jobs/{job.id}/")}
    assert f"jobs/{job.id}/adapter/adapter_config.json" in keys
    assert not any(k.startswith(f"jobs/{job.id}/merged/") for k in keys)  # made on demand
    assert f"jobs/{job.id}/results.csv" in keys
    assert_no_internals(client, job.id, settings)


def test_invalid_training_data_fails_with_the_line(client: openai.OpenAI, worker) -> None:  # type: ignore[no-untyped-def]
    rows = [b'{"messages": [{"role": "user", "content": "hi"}, '
            b'{"role": "assistant", "content": "hello"}]}'] * 11
    rows.insert(6, b'{"messages": [{"role": "user", "content": "no reply"}]}')
    bad = client.files.create(file=("bad.jsonl", io.BytesIO(b"\n".join(rows))),
                              purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=bad)
    failed = wait_status(client, job.id, {"failed", "succeeded"}, timeout=300)
    assert failed.status == "failed"
    assert failed.error.code == "invalid_training_file"
    assert failed.error.param == "training_file"
    assert failed.error.message.startswith("line 7:")

    few = client.files.create(file=("few.jsonl", io.BytesIO(b"\n".join(rows[:3]))),
                              purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=few)
    failed = wait_status(client, job.id, {"failed", "succeeded"}, timeout=300)
    assert failed.error.code == "invalid_n_examples"


def test_cancel_stops_training_and_frees_the_worker(client: openai.OpenAI, worker) -> None:  # type: ignore[no-untyped-def]
    job = client.fine_tuning.jobs.create(
        model=MODEL, training_file=sft_file(client, 40),
        method={"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": 10, "batch_size": 2}}})
    wait_event(client, job.id, lambda e: e.type == "metrics")
    assert client.fine_tuning.jobs.cancel(job.id).status == "cancelled"
    # The worker stops between steps and is free for the next job.
    quick = client.fine_tuning.jobs.create(
        model=MODEL, training_file=sft_file(client, 10),
        method={"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": 1, "batch_size": 10}}})
    assert wait_status(client, quick.id, {"succeeded", "failed"}).status == "succeeded"
    steps = [e.data["step"] for e in metric_events(client, job.id)]
    assert steps and max(steps) < 200
    assert client.fine_tuning.jobs.retrieve(job.id).status == "cancelled"


def test_pause_then_resume_reaches_the_same_end(client: openai.OpenAI, worker,  # type: ignore[no-untyped-def]
                                               settings) -> None:  # type: ignore[no-untyped-def]
    hyper = {"n_epochs": 4, "batch_size": 4, "learning_rate_multiplier": 5}
    job = client.fine_tuning.jobs.create(
        model=MODEL, training_file=sft_file(client, 16), seed=3,
        method={"type": "supervised", "supervised": {"hyperparameters": hyper}})
    wait_event(client, job.id, lambda e: e.type == "metrics" and e.data["step"] >= 5)
    assert client.fine_tuning.jobs.pause(job.id).status == "paused"
    # The worker stops at the next step and saves a checkpoint to resume from.
    deadline = time.monotonic() + 300
    while not any(c.step_number >= 5 for c in
                  client.fine_tuning.jobs.checkpoints.list(job.id).data):
        assert time.monotonic() < deadline, "pausing saves a checkpoint"
        time.sleep(0.5)
    assert client.fine_tuning.jobs.retrieve(job.id).status == "paused"
    assert client.fine_tuning.jobs.resume(job.id).status == "queued"
    done = wait_status(client, job.id, {"succeeded", "failed", "cancelled"})
    assert done.status == "succeeded", done.error
    metrics = [e.data for e in metric_events(client, job.id)]
    assert metrics[-1]["step"] == metrics[-1]["total_steps"] == 16
    assert any(e.message.startswith("Resuming from checkpoint") for e in all_events(client, job.id))
    assert_no_internals(client, job.id, settings)
