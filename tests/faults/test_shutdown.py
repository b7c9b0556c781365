"""Bounded shutdown: the API exits on SIGTERM/SIGINT although clients hang, and a stopped
child never leaves a process behind."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from server.main import GRACEFUL_SHUTDOWN_SECONDS
from tests.conftest import REPO
from tuneforge.processes import ManagedProcess, free_port, spawn, wait_until
from tuneforge.settings import Settings

# Generous: the bound is uvicorn's graceful timeout; the rest is startup noise on a busy host.
EXIT_WAIT_SECONDS = GRACEFUL_SHUTDOWN_SECONDS + 25


def _hung_clients(port: int, api_key: str) -> list[socket.socket]:
    """A half-sent request, an upload stalled mid-body (the handler is streaming it), and an
    idle keep-alive connection."""
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    half, upload, idle = clients
    half.sendall(b"GET /v1/models HTTP/1.1\r\nHost: localhost\r\nAuthor")
    boundary = uuid.uuid4().hex
    upload.sendall(
        (f"POST /v1/files HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {api_key}\r\n"
         f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
         f"Content-Length: {100 * 1024 * 1024}\r\n\r\n"
         f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nuser_data\r\n"
         f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.bin\"\r\n"
         f"Content-Type: application/octet-stream\r\n\r\n").encode() + b"x" * 256 * 1024)
    idle.sendall(b"GET /v1/models HTTP/1.1\r\nHost: localhost\r\n\r\n")
    idle.settimeout(30)
    assert idle.recv(12).startswith(b"HTTP/1.1 401")  # answered, then kept open
    return clients


@pytest.fixture
def api(settings: Settings, tmp_path: Path) -> Iterator[ManagedProcess]:
    own = settings.model_copy(update={"port": free_port(), "grpc_port": free_port(),
                                      "data_dir": tmp_path})
    process = spawn("api", [sys.executable, "-m", "stack.cli", "server"],
                    tmp_path / "api.log", env=own.to_env(), cwd=REPO)
    process.extra["port"] = str(own.port)
    wait_until(lambda: httpx.get(f"http://127.0.0.1:{own.port}/v1/models").status_code == 401,
               120, "API server", process)
    yield process
    process.stop()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_api_exits_despite_hung_clients(api: ManagedProcess, tenant_a: object,
                                        signum: int) -> None:
    port = int(api.extra["port"])
    clients = _hung_clients(port, tenant_a.api_key)  # type: ignore[attr-defined]
    try:
        descendants = psutil.Process(api.pid).children(recursive=True)
        api.popen.send_signal(signum)
        try:
            api.popen.wait(EXIT_WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the API was still running {EXIT_WAIT_SECONDS}s after {signum!r}, "
                        f"waiting for its clients:\n{api.log.read_text()[-2000:]}")
        alive = [p for p in descendants if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert not alive, alive
    finally:
        for client in clients:
            client.close()


def test_stop_kills_the_whole_tree_of_a_child_that_ignores_sigterm(tmp_path: Path) -> None:
    # A child that ignores TERM, with two children of its own that inherit that, one of them
    # in a session of its own (outside the process group).
    script = "trap '' TERM; sleep 600 & setsid sleep 601 & wait"
    process = spawn("stubborn", ["sh", "-c", script], tmp_path / "stubborn.log",
                    stop_timeout=1)
    wait_until(lambda: len(psutil.Process(process.pid).children()) == 2, 20, "children")
    tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    assert psutil.Process(process.pid).status() != psutil.STATUS_ZOMBIE
    process.stop()
    _gone, alive = psutil.wait_procs(tree, timeout=10)
    assert not alive, alive
    assert process.popen.returncode == -signal.SIGKILL
