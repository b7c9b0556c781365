"""A job trained through the API by a real `trainer.worker` becomes chat-able through the proxy
the moment it succeeds. The hot-load contract holds across machines: the worker and the API
share only the database, Redis and S3 (here: different data directories), and the model
answers before, or at the moment, its job reports succeeded. Two steps are enough for that:
what a job through the worker learns is shown by tests/worker/test_worker_jobs.py and the
main job's test."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.conftest import REPO
from tests.serving.conftest import BASE, loaded_models
from tests.worker.conftest import all_events, sft_file, wait_status
from tuneforge.domain import fine_tuned_model_name
from tuneforge.processes import ManagedProcess, spawn
from tuneforge.settings import Settings

pytestmark = [pytest.mark.vllm, pytest.mark.train]

_ENDED = {"succeeded", "failed", "cancelled"}


@pytest.fixture(scope="module")
def worker_data_dir(serving_settings: Settings) -> Path:
    path = serving_settings.data_dir.parent / f"{serving_settings.data_dir.name}-worker"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def distant_worker(serving_settings: Settings, worker_data_dir: Path, api_server,  # type: ignore[no-untyped-def]
                   no_leftover_jobs) -> Iterator[ManagedProcess]:
    """A real `trainer.worker` on a data directory of its own: it cannot see the API's files
    (the vLLM state file, the adapter cache, vLLM's key)."""
    settings = serving_settings.model_copy(update={"data_dir": worker_data_dir})
    process = spawn("worker", [sys.executable, "-m", "trainer.worker"],
                    worker_data_dir / "worker.log", env=settings.to_env(), cwd=REPO,
                    stop_timeout=30)
    yield process
    process.stop()


def test_model_answers_before_its_job_succeeds_with_separate_data_dirs(
        client: openai.OpenAI, distant_worker: ManagedProcess, serving_settings: Settings,
        worker_data_dir: Path, vllm_url: str) -> None:
    assert worker_data_dir != serving_settings.data_dir
    job = client.fine_tuning.jobs.create(
        model=BASE, training_file=sft_file(client, n=10), suffix="apart", seed=3,
        method={"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": 1, "batch_size": 5}}})
    name = fine_tuned_model_name(BASE, job.organization_id, "apart", job.id)
    question = [{"role": "user", "content": "Hi"}]
    # Alternate: the job's status, then one chat with the model it will publish. The first
    # answer shows which status the job had just before it.
    deadline = time.monotonic() + 1500
    status = ""
    loaded_when_succeeded = False
    while time.monotonic() < deadline:
        current = client.fine_tuning.jobs.retrieve(job.id)
        status = current.status
        assert status not in ("failed", "cancelled"), current.error
        if status == "succeeded":
            # Loaded by the serving plane, not on demand by a chat (none answered yet).
            loaded_when_succeeded = name in loaded_models(vllm_url)
        try:
            answer = client.chat.completions.create(model=name, messages=question, max_tokens=1,
                                                    temperature=0)
        except openai.NotFoundError:
            assert status != "succeeded", "a succeeded job's model is unknown to the proxy"
            time.sleep(0.1)
            continue
        assert answer.model == name
        break
    else:
        raise AssertionError(f"{name} never answered; the job is {status}")
    assert status == "running" or loaded_when_succeeded, status

    done = wait_status(client, job.id, _ENDED, timeout=120)
    assert done.status == "succeeded", done.error
    ready = [e for e in all_events(client, job.id) if " is ready" in e.message]
    assert done.fine_tuned_model == name
    assert ready and ready[0].data["ready_seconds"] > 0  # the plane's answer, as the worker saw it
    # Nothing of the API's data directory was there for the worker to read.
    assert not (worker_data_dir / "serving" / "replicas.json").exists()

