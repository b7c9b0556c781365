"""Redis faults: a hostile queue payload is not executed, and a hung Redis does not hang the
API (the job is created, and queued once Redis answers again)."""

from __future__ import annotations

import io
import json
import os
import pickle
import secrets
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import redis as redis_sync

from tests.conftest import REPO
from tuneforge.processes import ManagedProcess, free_port, spawn, start_redis, wait_until
from tuneforge.settings import Settings


class _CreatesFile:
    """Unpickling this opens (creates) `path`: what an attacker's payload would do."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.path), "w"))


def _start_api(settings: Settings, name: str) -> ManagedProcess:
    process = spawn(name, [sys.executable, "-m", "stack.cli", "server"],
                    settings.data_dir / f"{name}.log", env=settings.to_env(), cwd=REPO)
    base = f"http://127.0.0.1:{settings.port}"
    wait_until(lambda: httpx.get(f"{base}/v1/models").status_code == 401, 120, name, process)
    return process


@pytest.fixture
def private_settings(settings: Settings, tmp_path: Path) -> Settings:
    """The session's database and S3, with a queue (and data directory) of this test's own."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    return settings.model_copy(update={
        "queue_name": f"tf-faults-{uuid.uuid4().hex[:8]}", "data_dir": data_dir,
        "port": free_port(), "grpc_port": free_port()})


def test_pickled_queue_payload_is_not_executed(private_settings: Settings,
                                               tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"t": 1, "f": "run_fine_tuning_job", "a": [_CreatesFile(marker)],
                            "k": {}, "et": int(time.time() * 1000)})
    queue_job_id = f"evil-{uuid.uuid4().hex}"
    redis = redis_sync.Redis.from_url(private_settings.redis_url)
    worker = spawn("worker", [sys.executable, "-m", "trainer.worker"],
                   private_settings.data_dir / "worker.log", env=private_settings.to_env(),
                   cwd=REPO)
    try:
        wait_until(lambda: "ready on queue" in worker.log.read_text(), 120, "worker", worker)
        # What anyone who can write to Redis could do: a job entry and its payload.
        redis.set(f"arq:job:{queue_job_id}", payload, ex=600)
        redis.zadd(private_settings.queue_name, {queue_job_id: int(time.time() * 1000)})
        wait_until(lambda: f"deserializing job {queue_job_id} failed" in worker.log.read_text(),
                   60, "the worker refusing the payload", worker)
        assert not marker.exists(), "the worker unpickled the payload and ran its code"
        # The failure is recorded as JSON (arq's results are no pickles either).
        result = json.loads(redis.get(f"arq:result:{queue_job_id}") or b"null")
        assert result["s"] is False and result["r"]["error"] == "DeserializationError"
        assert worker.popen.poll() is None, "a bad payload must not stop the worker"
    finally:
        worker.stop()
        redis.delete(private_settings.queue_name, f"arq:job:{queue_job_id}",
                     f"arq:result:{queue_job_id}")
        redis.close()
    assert not marker.exists()


@pytest.fixture
def hung_redis(private_settings: Settings, tmp_path: Path) -> Iterator[tuple[ManagedProcess, str]]:
    port, password = free_port(), secrets.token_hex(16)
    process = start_redis(tmp_path / "valkey", port, password)
    yield process, f"redis://:{password}@127.0.0.1:{port}/0"
    os.kill(process.pid, signal.SIGCONT)
    process.stop()


def test_hung_redis_does_not_block_job_creation(
    private_settings: Settings, hung_redis: tuple[ManagedProcess, str], tenant_a: object
) -> None:
    from trainer.samples import arithmetic_chat

    valkey, redis_url = hung_redis
    settings = private_settings.model_copy(update={"redis_url": redis_url})
    api = _start_api(settings, "api-hung-redis")
    redis = redis_sync.Redis.from_url(redis_url)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{settings.port}/v1",
                               api_key=tenant_a.api_key,  # type: ignore[attr-defined]
                               max_retries=0, timeout=15)
        lines = "\n".join(json.dumps(r) for r in arithmetic_chat(12)) + "\n"
        file_id = client.files.create(file=("a.jsonl", io.BytesIO(lines.encode())),
                                      purpose="fine-tune").id
        os.kill(valkey.pid, signal.SIGSTOP)  # Redis accepts connections, answers nothing
        try:
            job = client.fine_tuning.jobs.create(model="SmolLM2-135M-Instruct",
                                                 training_file=file_id)
            assert job.status == "validating_files"
            # The API stays responsive while Redis hangs.
            assert client.fine_tuning.jobs.retrieve(job.id).status in ("validating_files",
                                                                       "queued")
        finally:
            os.kill(valkey.pid, signal.SIGCONT)

        def queued() -> bool:
            return redis.zcard(settings.queue_name) >= 1
        wait_until(queued, 120, "a queue entry for the job (the reconciler enqueues it)", api)
        assert api.popen.poll() is None
    finally:
        api.stop()
        redis.close()
