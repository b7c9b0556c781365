"""Uploads stream: a 1 GB body does not grow the server's memory; an oversize one leaves
nothing behind."""

from __future__ import annotations

import sys
import threading
import uuid
from collections.abc import Iterator

import httpx
import psutil
import pytest

from tests.conftest import REPO, settings_env
from tuneforge.processes import free_port, spawn, wait_until

MIB = 1024 * 1024


def multipart_body(size: int, boundary: str, purpose: str,
                   filename: str = "blob.bin") -> Iterator[bytes]:
    yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n"
           f"{purpose}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
           f"filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
    block = bytes(range(256)) * (4 * MIB // 256)
    sent = 0
    while sent < size:
        piece = block[: min(len(block), size - sent)]
        sent += len(piece)
        yield piece
    yield f"\r\n--{boundary}--\r\n".encode()


def post_streamed(base_url: str, api_key: str, size: int, purpose: str = "user_data",
                  filename: str = "blob.bin") -> httpx.Response:
    boundary = uuid.uuid4().hex
    return httpx.post(
        f"{base_url}/files", content=multipart_body(size, boundary, purpose, filename),
        headers={"Authorization": f"Bearer {api_key}",
                 "Content-Type": f"multipart/form-data; boundary={boundary}"},
        timeout=300,
    )


class PeakRss:
    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.baseline = self.process.memory_info().rss
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_one_gigabyte_upload_holds_memory_flat(
    request: pytest.FixtureRequest, api_server, tenant_a, services  # type: ignore[no-untyped-def]
) -> None:
    if "postgresql" in request.node.callspec.id:
        pytest.skip("memory does not depend on the database; measured once, on SQLite")
    size = 1024 * MIB
    # Warm the path so one-off allocations (imports, pools) are not counted as growth.
    post_streamed(api_server.base_url, tenant_a.api_key, 8 * MIB).raise_for_status()
    with PeakRss(api_server.pid) as rss:
        response = post_streamed(api_server.base_url, tenant_a.api_key, size)
    assert response.status_code == 200, response.text
    assert response.json()["bytes"] == size
    growth = (rss.peak - rss.baseline) / MIB
    assert growth <= 64, f"server RSS grew by {growth:.0f} MiB during a 1 GiB upload"


@pytest.fixture(scope="module")
def small_limit_server(settings):  # type: ignore[no-untyped-def]
    """A second API server on the same state, with a 1 MiB upload limit."""
    port = free_port()
    env = {**settings_env(settings), "TUNEFORGE_PORT": str(port),
           "TUNEFORGE_GRPC_PORT": str(free_port()), "TUNEFORGE_MAX_UPLOAD_BYTES": str(MIB)}
    process = spawn("api-small", [sys.executable, "-m", "stack.cli", "server"],
                    settings.data_dir / "api-small.log", env=env, cwd=REPO)
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: httpx.get(f"{base}/v1/models").status_code == 401, 60, "API", process)
    yield f"{base}/v1"
    process.stop()


async def test_oversize_upload_is_413_and_leaves_no_trace(
    small_limit_server: str, tenant_a, services  # type: ignore[no-untyped-def]
) -> None:
    from sqlalchemy import func, select

    from server.db.models import File

    async def state() -> tuple[int, set[str]]:
        async with services.ctx.sessions() as session:
            rows = (await session.execute(select(func.count()).select_from(File))).scalar_one()
        return rows, {o.key for o in await services.ctx.store.list_keys("files/")}

    before = await state()
    response = post_streamed(small_limit_server, tenant_a.api_key, 3 * MIB)
    assert response.status_code == 413
    assert response.json()["error"] == {
        "message": f"The file exceeds the maximum size of {MIB} bytes.",
        "type": "invalid_request_error", "param": "file", "code": "file_too_large"}
    assert await state() == before
    # Just under the limit is fine.
    ok = post_streamed(small_limit_server, tenant_a.api_key, MIB - 1024)
    assert ok.status_code == 200, ok.text
