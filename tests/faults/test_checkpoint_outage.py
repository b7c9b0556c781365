"""Object storage down when a training run saves its checkpoint: the worker rides out what
its retries can, then pauses the job with a clean message (no S3 host, port or key), and the
job resumes and succeeds once storage is back. Real worker, real training, its own `weed mini`.
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.conftest import MODEL_CACHE, REPO
from tests.faults.test_storage import Stack, own_stack
from tests.worker.conftest import MODEL, all_events, wait_event, wait_status
from tuneforge.processes import spawn
from tuneforge.settings import StorageSettings

pytestmark = [pytest.mark.faults, pytest.mark.train]

PAUSED_BY_OUTAGE = ("Object storage was unreachable for too long; the job is paused. Resume "
                    "it once storage is back: it continues from its last checkpoint.")


@pytest.fixture(scope="module")
def stack(tmp_root: Path, redis_url: str) -> Iterator[Stack]:
    with own_stack(
        tmp_root, redis_url, "outage",
        worker_lease_seconds=9, resume_wait_seconds=5.0, model_cache_dir=MODEL_CACHE,
        # The worker gives storage 4 s before it pauses the job (60 s by default).
        storage=StorageSettings(retry_seconds=4),
    ) as result:
        result.processes.append(spawn(
            "worker", [sys.executable, "-m", "trainer.worker"], result.root / "worker.log",
            env=result.settings.to_env(), cwd=REPO))
        yield result


def test_storage_outage_at_a_checkpoint_pauses_cleanly_and_the_job_resumes(
    stack: Stack,
) -> None:
    from trainer.samples import arithmetic_chat

    client = openai.OpenAI(base_url=stack.base_url, api_key=stack.key, max_retries=0)
    lines = "\n".join(json.dumps(row) for row in arithmetic_chat(12, seed=3)) + "\n"
    training_file = client.files.create(file=("arith.jsonl", io.BytesIO(lines.encode())),
                                        purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(
        model=MODEL, training_file=training_file, seed=3,
        method={"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": 3, "batch_size": 4, "learning_rate_multiplier": 5}}})
    # Storage goes away before the first checkpoint (end of the first epoch, step 3).
    wait_event(client, job.id, lambda e: e.type == "metrics" and e.data["step"] >= 1)
    stack.kill_s3()

    paused = wait_status(client, job.id, {"paused", "failed", "succeeded", "cancelled"})
    assert paused.status == "paused" and paused.error is None
    messages = [e.message for e in all_events(client, job.id)]
    assert PAUSED_BY_OUTAGE in messages
    shown = json.dumps([paused.model_dump(), messages])
    for internal in (stack.s3.endpoint, stack.s3.endpoint.split(":")[1], stack.s3.bucket,
                     "jobs/", str(stack.root)):
        assert internal not in shown, f"the API shows {internal!r}"

    stack.start_s3()
    asyncio.run(_wait_for_writes(stack))
    while True:  # the paused run lets go of the job right after it paused
        try:
            assert client.fine_tuning.jobs.resume(job.id).status == "queued"
            break
        except openai.ConflictError as exc:
            assert exc.body["code"] == "job_still_stopping"
    done = wait_status(client, job.id, {"succeeded", "failed", "cancelled"})
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model and len(done.result_files) == 1
    steps = [e.data["step"] for e in all_events(client, job.id)
             if e.type == "metrics" and "train_loss" in e.data]
    assert steps[-1] == 9
    client.close()


async def _wait_for_writes(stack: Stack) -> None:
    """A restarted weed accepts writes a few seconds after it answers."""
    from server.storage import ObjectStore

    store = ObjectStore(stack.s3, StorageSettings(retry_seconds=60))
    try:
        await store.put_bytes("probe-after-restart", b"ok")
    finally:
        store.close()
