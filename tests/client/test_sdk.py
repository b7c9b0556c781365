"""The high-level SDK against the live server: uploads with progress, downloads, waiting,
retries, timeouts, configuration."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import time
from pathlib import Path

import httpx
import pytest
from tuneforge_client import (
    APIConnectionError,
    APITimeoutError,
    AsyncTuneForge,
    NotFoundError,
    ServiceUnavailableError,
    TuneForge,
)
from tuneforge_client.config import DEFAULT_BASE_URL, resolve

from tests.conftest import until_validated
from tests.grpc.conftest import MODEL, sdk
from tuneforge.domain import JobStatus, fine_tuned_model_name
from tuneforge.processes import free_port


def big_jsonl(min_bytes: int) -> bytes:
    line = json.dumps({"messages": [{"role": "user", "content": "x" * 200},
                                    {"role": "assistant", "content": "y" * 200}]}).encode()
    return b"\n".join([line] * (min_bytes // len(line) + 1)) + b"\n"


@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_upload_streams_with_progress_and_downloads(api_server, grpc_target: str, tenant_a,  # type: ignore[no-untyped-def]
                                                    tmp_path: Path, transport: str) -> None:
    content = big_jsonl(3 * 1024 * 1024 + 17)
    path = tmp_path / "big.jsonl"
    path.write_bytes(content)
    seen: list[tuple[int, int]] = []
    with sdk(api_server, grpc_target, tenant_a.api_key, transport) as client:
        created = client.files.upload(path, progress=lambda sent, total: seen.append((sent,
                                                                                     total)))
        assert created.filename == "big.jsonl" and created.bytes == len(content)
        assert seen[0] == (0, len(content)) and seen[-1] == (len(content), len(content))
        assert len(seen) >= 5 and all(a[0] <= b[0] for a, b in itertools.pairwise(seen))

        assert client.files.content(created.id) == content
        out = tmp_path / "copy.jsonl"
        assert client.files.download(created.id, out) == len(content)
        assert out.read_bytes() == content
        assert b"".join(client.files.iter_content(created.id)) == content

        stream = io.BytesIO(b'{"a": 1}\n')
        from_stream = client.files.upload(stream, filename="s.jsonl")
        assert client.files.content(from_stream.id) == b'{"a": 1}\n'
        empty = client.files.upload(b"", filename="empty.txt", purpose="user_data")
        assert client.files.content(empty.id) == b""
        for file_id in (created.id, from_stream.id, empty.id):
            client.files.delete(file_id)
        with pytest.raises(NotFoundError):
            client.files.content(created.id)


async def test_blocking_wait_returns_the_finished_job(tf: TuneForge, training_file: str,
                                                      services) -> None:  # type: ignore[no-untyped-def]
    job = tf.jobs.create(model=MODEL, training_file=training_file, suffix="wait")
    waiting = asyncio.ensure_future(asyncio.to_thread(tf.jobs.wait, job.id, timeout=30))
    await asyncio.sleep(0.5)
    assert not waiting.done()
    assert await until_validated(services, job.id) == "queued"
    await services.protocol.advance(job.id, [JobStatus.QUEUED], JobStatus.RUNNING)
    name = fine_tuned_model_name(MODEL, job.organization_id, "wait", job.id)
    await services.protocol.succeed(job.id, fine_tuned_model=name, result_files=[],
                                    trained_tokens=5)
    finished = await asyncio.wait_for(waiting, 15)
    assert finished.status == "succeeded" and finished.fine_tuned_model == name
    assert [e.message for e in tf.jobs.follow(job.id)][-1] == \
        "The job has successfully completed"


async def test_async_client_over_both_transports(api_server, grpc_target: str,  # type: ignore[no-untyped-def]
                                                 tenant_a) -> None:
    for transport in ("grpc", "rest"):
        async with AsyncTuneForge(base_url=api_server.base_url, api_key=tenant_a.api_key,
                                  grpc_target=grpc_target,
                                  transport=transport) as client:  # type: ignore[arg-type]
            assert client.transport == transport
            models = await client.models.list()
            assert MODEL in [m.id for m in models]
            with pytest.raises(NotFoundError):
                await client.jobs.get("ftjob-nope")


@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_unreachable_server_is_retried_with_backoff(transport: str) -> None:
    dead = free_port()
    with TuneForge(base_url=f"http://127.0.0.1:{dead}/v1", api_key="tf-x",
                   grpc_target=f"127.0.0.1:{dead}", transport=transport,  # type: ignore[arg-type]
                   max_retries=2, timeout=5) as client:
        start = time.monotonic()
        with pytest.raises(APIConnectionError):
            client.models.list()
        # Two retries: waits of at least 0.5 s and 1 s between the three attempts.
        assert time.monotonic() - start >= 1.4


def test_deadline_is_a_timeout_error(api_server, grpc_target: str, tenant_a) -> None:  # type: ignore[no-untyped-def]
    with sdk(api_server, grpc_target, tenant_a.api_key, timeout=1e-6, max_retries=0) as client:
        with pytest.raises(APITimeoutError):
            client.jobs.list()


def test_chat_when_the_endpoint_exists(api_server, tf: TuneForge, tenant_a) -> None:  # type: ignore[no-untyped-def]
    probe = httpx.post(f"{api_server.base_url}/chat/completions", json={},
                       headers={"Authorization": f"Bearer {tenant_a.api_key}"})
    if probe.status_code == 404:
        pytest.skip("POST /v1/chat/completions is not served by this build")
    messages = [{"role": "user", "content": "Say hi"}]
    try:
        completion = tf.chat(MODEL, messages, max_tokens=8)
    except ServiceUnavailableError as exc:
        pytest.skip(f"no inference server behind /v1/chat/completions here: {exc}")
    assert completion.choices and isinstance(completion.content, str)
    chunks = list(tf.chat(MODEL, messages, stream=True, max_tokens=8))
    assert chunks and "".join(c.text for c in chunks) is not None


def test_configuration_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TUNEFORGE_BASE_URL", "TUNEFORGE_API_KEY", "TUNEFORGE_GRPC_TARGET",
                 "TUNEFORGE_TRANSPORT", "TUNEFORGE_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TUNEFORGE_CLIENT_CONFIG", str(tmp_path / "missing.toml"))
    defaults = resolve()
    assert defaults.base_url == DEFAULT_BASE_URL and defaults.api_key is None
    assert defaults.grpc_target == "127.0.0.1:50051" and defaults.transport == "grpc"

    config = tmp_path / "config.toml"
    config.write_text('base_url = "http://files.example:9000"\napi_key = "tf-file"\n'
                      'transport = "rest"\ntimeout = 5\n')
    monkeypatch.setenv("TUNEFORGE_CLIENT_CONFIG", str(config))
    from_file = resolve()
    assert from_file.base_url == "http://files.example:9000/v1"
    assert from_file.grpc_target == "files.example:50051"
    assert (from_file.api_key, from_file.transport, from_file.timeout) == ("tf-file", "rest", 5)

    monkeypatch.setenv("TUNEFORGE_API_KEY", "tf-env")
    monkeypatch.setenv("TUNEFORGE_GRPC_TARGET", "grpcs://grpc.example:443")
    from_env = resolve()
    assert from_env.api_key == "tf-env" and from_env.grpc_target == "grpc.example:443"
    assert from_env.grpc_secure is True
    assert resolve(api_key="tf-arg", transport="grpc").api_key == "tf-arg"

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("TUNEFORGE_CLIENT_CONFIG")
    (tmp_path / "xdg" / "tuneforge").mkdir(parents=True)
    (tmp_path / "xdg" / "tuneforge" / "config.toml").write_text('api_key = "tf-xdg"\n')
    monkeypatch.delenv("TUNEFORGE_API_KEY")
    assert resolve().api_key == "tf-xdg"
