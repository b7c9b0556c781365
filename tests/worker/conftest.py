"""A real `trainer.worker` process (arq) against the test stack."""

from __future__ import annotations

import io
import json
import sys
import time
from collections.abc import Callable, Iterator

import openai
import pytest

from tests.conftest import REPO
from tuneforge.processes import ManagedProcess, spawn

MODEL = "SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def start_worker(settings, api_server, no_leftover_jobs) -> Iterator[Callable[..., ManagedProcess]]:  # type: ignore[no-untyped-def]
    """Starts workers on demand (`env` overrides their settings); every one still running is
    stopped at the end. `start_worker.started` lists them."""
    started: list[ManagedProcess] = []

    def start(**env: str) -> ManagedProcess:
        process = spawn(f"worker-{len(started)}", [sys.executable, "-m", "trainer.worker"],
                        settings.data_dir / f"worker-{len(started)}.log",
                        env={**settings.to_env(), **env}, cwd=REPO)
        started.append(process)
        return process

    start.started = started  # type: ignore[attr-defined]
    yield start
    for process in started:
        process.stop()


@pytest.fixture(scope="module")
def worker(start_worker) -> ManagedProcess:  # type: ignore[no-untyped-def]
    return start_worker()


def sft_file(client: openai.OpenAI, n: int = 12, seed: int = 0) -> str:
    from trainer.samples import arithmetic_chat

    lines = "\n".join(json.dumps(row) for row in arithmetic_chat(n, seed=seed)) + "\n"
    return client.files.create(file=("arith.jsonl", io.BytesIO(lines.encode())),
                               purpose="fine-tune").id


def wait_status(client: openai.OpenAI, job_id: str, statuses: set[str],
                timeout: float = 600) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not reach {statuses}; last status {job.status}")


def all_events(client: openai.OpenAI, job_id: str) -> list:  # type: ignore[type-arg]
    """Oldest first."""
    return list(client.fine_tuning.jobs.list_events(job_id, limit=100))[::-1]


def wait_event(client: openai.OpenAI, job_id: str, predicate: Callable[[object], bool],
               timeout: float = 600) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in all_events(client, job_id):
            if predicate(event):
                return event
        time.sleep(0.5)
    raise AssertionError(f"no matching event for {job_id}")


def assert_no_internals(client: openai.OpenAI, job_id: str, settings: object) -> None:
    """Nothing the API shows of a job (the job, its events, its checkpoints) carries a server
    path, an internal host, a credential or a stack trace."""
    s3 = settings.s3  # type: ignore[attr-defined]
    shown = json.dumps([
        client.fine_tuning.jobs.retrieve(job_id).model_dump(),
        [e.model_dump() for e in all_events(client, job_id)],
        [c.model_dump() for c in client.fine_tuning.jobs.checkpoints.list(job_id).data],
    ])
    forbidden = [str(settings.data_dir), "/tmp/", "/root/", "checkpoint-",  # type: ignore[attr-defined]
                 s3.endpoint, s3.access_key, s3.secret_key.get_secret_value(), "Traceback"]
    for secret in forbidden:
        assert secret not in shown, f"the API shows {secret!r} for {job_id}"
