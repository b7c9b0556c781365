"""A worker killed with SIGKILL mid-training: the job resumes from its last checkpoint on
another worker and ends with exactly one model."""

from __future__ import annotations

import os
import signal

import openai
import pytest

from tests.worker.conftest import MODEL, all_events, sft_file, wait_event, wait_status

pytestmark = pytest.mark.train


@pytest.fixture(autouse=True)
def _sqlite_only(request: pytest.FixtureRequest) -> None:
    if "postgresql" in request.node.callspec.id:
        pytest.skip("worker runs are database-independent; trained once, on SQLite")


def test_sigkill_mid_training_resumes_from_the_checkpoint(
    client: openai.OpenAI, start_worker  # type: ignore[no-untyped-def]
) -> None:
    first = start_worker()
    job = client.fine_tuning.jobs.create(
        model=MODEL, training_file=sft_file(client, 16), seed=5,
        method={"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": 3, "batch_size": 4}}})
    wait_event(client, job.id, lambda e: e.type == "metrics" and e.data["step"] >= 5)
    os.kill(first.pid, signal.SIGKILL)
    first.popen.wait()
    start_worker()
    done = wait_status(client, job.id, {"succeeded", "failed", "cancelled"})
    assert done.status == "succeeded", done.error
    messages = [e.message for e in all_events(client, job.id)]
    assert any("stopped responding" in m for m in messages)
    assert "Resuming from checkpoint step-4" in messages
    steps = [e.data["step"] for e in all_events(client, job.id) if e.type == "metrics"]
    # After the restart, training continues after step 4 rather than from step 1.
    restart = messages.index("Resuming from checkpoint step-4")
    later = [e.data["step"] for e in all_events(client, job.id)[restart:] if e.type == "metrics"]
    assert later and min(later) == 5 and max(steps) == 12
    assert [m.id for m in client.models.list()].count(done.fine_tuned_model) == 1
