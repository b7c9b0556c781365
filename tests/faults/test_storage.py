"""Object storage under load and failure, through a real API server on its own `weed mini`:
50 concurrent uploads, uploads cut off or killed mid-way, an S3 outage.

The module's API server and S3 are its own (the outage stops that S3); SQLite and the
session's Redis. The tests run in file order: the outage comes last.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from server.storage import ObjectStore, StorageUnavailable, retry_budget
from tests.conftest import REPO
from tuneforge.processes import (
    ManagedProcess,
    WeedPorts,
    free_port,
    spawn,
    start_s3,
    wait_until,
)
from tuneforge.settings import S3Settings, Settings, StorageSettings

pytestmark = pytest.mark.faults

MIB = 1024 * 1024


@dataclass
class Stack:
    root: Path
    s3: S3Settings
    s3_ports: WeedPorts
    settings: Settings
    key: str = ""
    s3_process: ManagedProcess | None = None
    api: ManagedProcess | None = None
    processes: list[ManagedProcess] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.port}/v1"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def start_s3(self) -> None:
        port = int(self.s3.endpoint.rsplit(":", 1)[1])
        self.s3_process = start_s3(self.root / "s3", self.s3.access_key,
                                   self.s3.secret_key.get_secret_value(), port, self.s3_ports)
        self.processes.append(self.s3_process)

    def kill_s3(self) -> None:
        assert self.s3_process is not None
        self.s3_process.popen.kill()
        self.s3_process.popen.wait()

    def start_api(self, storage: StorageSettings | None = None) -> None:
        if storage is not None:
            self.settings = self.settings.model_copy(update={"storage": storage})
        self.api = spawn("api", [sys.executable, "-m", "stack.cli", "server"],
                         self.root / "api.log", env=self.settings.to_env(), cwd=REPO)
        self.processes.append(self.api)
        wait_until(lambda: httpx.get(f"{self.base_url}/models").status_code == 401, 90,
                   "API server", self.api)


@contextlib.contextmanager
def own_stack(tmp_root: Path, redis_url: str, name: str, **overrides: Any) -> Iterator[Stack]:
    """A weed mini and an API server of their own (SQLite, the session's Redis), with
    `overrides` applied to the settings; every process started is stopped at the end."""
    from server.admin import create_api_key

    root = tmp_root / f"{name}-{uuid.uuid4().hex[:6]}"
    s3 = S3Settings(endpoint=f"127.0.0.1:{free_port()}", access_key="tf" + secrets.token_hex(8),
                    secret_key=secrets.token_urlsafe(24), bucket=f"tuneforge-{name}")
    settings = Settings(**{
        "data_dir": root / "data", "database_url": f"sqlite+aiosqlite:///{root / 'state.db'}",
        "redis_url": redis_url, "s3": s3, "port": free_port(), "grpc_port": free_port(),
        "queue_name": f"tf-{name}-{uuid.uuid4().hex[:6]}", "reconcile_interval_seconds": 1.0,
        **overrides,
    })
    result = Stack(root, s3, WeedPorts.free(), settings)
    try:
        result.start_s3()
        result.key = create_api_key(settings, name)[1]
        result.start_api()
        yield result
    finally:
        for process in reversed(result.processes):
            process.stop()


@pytest.fixture(scope="module")
def stack(tmp_root: Path, redis_url: str) -> Iterator[Stack]:
    with own_stack(tmp_root, redis_url, "faults", max_upload_bytes=64 * MIB) as result:
        yield result


@pytest.fixture(scope="module")
async def store(stack: Stack) -> AsyncIterator[ObjectStore]:
    """The module's bucket, seen from the test process (retries ride out 60 s)."""
    result = ObjectStore(stack.s3, StorageSettings(retry_seconds=60))
    await result.ensure_bucket()
    yield result
    result.close()


def body(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def multipart(content: bytes, boundary: str, name: str = "data.bin") -> list[bytes]:
    return [
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nuser_data"
        f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
        f"filename=\"{name}\"\r\n\r\n".encode(),
        content,
        f"\r\n--{boundary}--\r\n".encode(),
    ]


async def upload(http: httpx.AsyncClient, content: bytes) -> httpx.Response:
    return await http.post("/files", files={"file": ("data.bin", content)},
                           data={"purpose": "user_data"})


async def test_fifty_concurrent_uploads_succeed_with_flat_memory(stack: Stack) -> None:
    # Mixed sizes: mostly small, some over one 5 MiB part (multipart, several parts).
    sizes = [random.Random(i).randint(1, 256 * 1024) for i in range(40)]
    sizes += [1 * MIB, 2 * MIB, 3 * MIB, 5 * MIB, 5 * MIB + 1]
    sizes += [6 * MIB, 7 * MIB + 3, 11 * MIB, 12 * MIB, 16 * MIB + 5]
    contents = [body(size, seed) for seed, size in enumerate(sizes)]
    assert stack.api is not None
    api = psutil.Process(stack.api.pid)
    before = api.memory_info().rss

    # No keep-alive: the server closes idle connections after 5 s, which races with reuse.
    limits = httpx.Limits(max_connections=len(contents), max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=stack.base_url, headers=stack.headers, timeout=600,
                                 limits=limits) as http:
        responses = await asyncio.gather(*(upload(http, c) for c in contents))
        growth = api.memory_info().rss - before
        assert [r.status_code for r in responses] == [200] * len(contents), \
            [r.text for r in responses if r.status_code != 200][:3]
        assert [r.json()["bytes"] for r in responses] == sizes
        assert growth < 300 * MIB, f"API RSS grew by {growth / MIB:.0f} MiB"

        async def download(file_id: str) -> bytes:
            response = await http.get(f"/files/{file_id}/content")
            assert response.status_code == 200
            return response.content

        downloaded = await asyncio.gather(*(download(r.json()["id"]) for r in responses))
        assert [len(d) for d in downloaded] == sizes
        assert downloaded == contents


async def _send_half(stack: Stack, size: int) -> asyncio.StreamWriter:
    """Send the headers and the first half of a `POST /v1/files` of `size` bytes; the rest
    never comes."""
    boundary = uuid.uuid4().hex
    head, content, tail = multipart(body(size, 7), boundary)
    _, writer = await asyncio.open_connection("127.0.0.1", stack.settings.port)
    writer.write((f"POST /v1/files HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  f"Authorization: Bearer {stack.key}\r\n"
                  f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                  f"Content-Length: {len(head) + len(content) + len(tail)}\r\n\r\n").encode())
    writer.write(head + content[: size // 2])
    await writer.drain()
    return writer


async def _wait_for(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll `condition` for up to a minute (a bound against hanging, not a timing goal)."""
    try:
        async with asyncio.timeout(60):
            while True:
                if await condition():
                    return
                await asyncio.sleep(0.2)
    except TimeoutError:
        raise AssertionError(f"{what}: not within a minute") from None


async def test_upload_cut_off_mid_way_leaves_no_multipart_upload(stack: Stack,
                                                                 store: ObjectStore) -> None:
    async def started() -> bool:
        return bool(await store.list_multipart_uploads("files/"))

    async def gone() -> bool:
        return not await store.list_multipart_uploads("files/")

    assert await gone()
    writer = await _send_half(stack, 12 * MIB)
    await _wait_for(started, "the API starts a multipart upload")
    writer.close()  # the client goes away
    await _wait_for(gone, "the API aborts the multipart upload of a disconnected client")


async def test_multipart_upload_of_a_killed_api_is_swept(stack: Stack,
                                                         store: ObjectStore) -> None:
    async def started() -> bool:
        return bool(await store.list_multipart_uploads("files/"))

    async def gone() -> bool:
        return not await store.list_multipart_uploads("files/")

    writer = await _send_half(stack, 12 * MIB)
    await _wait_for(started, "the API starts a multipart upload")
    assert stack.api is not None
    stack.api.popen.kill()  # no chance to abort
    stack.api.popen.wait()
    writer.close()
    assert len(await store.list_multipart_uploads("files/")) == 1

    # The restarted API's reconciler sweeps multipart uploads older than 1 s.
    stack.start_api(StorageSettings(multipart_max_age_seconds=1,
                                    multipart_sweep_interval_seconds=1))
    await _wait_for(gone, "the reconciler aborts the stale upload")


def _assert_unavailable(response: httpx.Response, stack: Stack) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) > 0
    error = response.json()["error"]
    assert error["type"] == "server_error"
    assert error["code"] == "service_unavailable"
    port = stack.s3.endpoint.rsplit(":", 1)[1]
    for secret in (port, stack.s3.bucket, "files/", "127.0.0.1", "file-"):
        assert secret not in response.text


async def test_s3_outage_answers_503_and_a_short_one_is_ridden_out(
        stack: Stack, store: ObjectStore) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, headers=stack.headers,
                                 timeout=120) as http:
        kept = (await upload(http, b"survives the outage")).json()["id"]
        stack.kill_s3()

        _assert_unavailable(await upload(http, b"during the outage"), stack)
        _assert_unavailable(await upload(http, body(6 * MIB, 3)), stack)  # multipart
        _assert_unavailable(await http.get(f"/files/{kept}/content"), stack)
        _assert_unavailable(await http.delete(f"/files/{kept}"), stack)
        assert (await http.get(f"/files/{kept}")).status_code == 200  # the row stayed

        # Past its retry budget the store gives up with a message that names nothing.
        with retry_budget(0.5), pytest.raises(StorageUnavailable) as error:
            await store.stat(f"files/{kept}")
        assert "files/" not in str(error.value) and stack.s3.endpoint not in str(error.value)

        # Within the budget (60 s here), an S3 restart is ridden out.
        put = asyncio.create_task(store.put_bytes("ride-out", b"written after the restart"))
        await asyncio.sleep(1)
        assert not put.done()
        await asyncio.to_thread(stack.start_s3)
        await put
        assert await store.get_bytes("ride-out") == b"written after the restart"

        content = await http.get(f"/files/{kept}/content")
        assert content.status_code == 200 and content.content == b"survives the outage"
        assert (await http.delete(f"/files/{kept}")).status_code == 200
        assert await store.stat(f"files/{kept}") is None
        assert (await upload(http, b"after the outage")).status_code == 200
