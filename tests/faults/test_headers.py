"""Request headers are bounded before authentication: a huge header is refused without the
server buffering it, and normal requests keep working."""

from __future__ import annotations

import socket

import httpx
import psutil

from server.main import MAX_HEADER_BYTES

MIB = 1024 * 1024


def _send_huge_header(port: int, size: int) -> bytes:
    """Sends a request whose Authorization header is `size` bytes; returns what the server
    answered (b"" if it closed the connection first)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        head = b"GET /v1/models HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer "
        try:
            sock.sendall(head)
            chunk = b"a" * (64 * 1024)
            for _ in range(size // len(chunk)):
                sock.sendall(chunk)
            sock.sendall(b"\r\n\r\n")
        except OSError:  # reset: the server stopped reading and closed
            pass
        answer = b""
        try:
            while data := sock.recv(65536):
                answer += data
        except OSError:
            pass
        return answer


def _status(answer: bytes) -> int | None:
    if not answer.startswith(b"HTTP/1.1 "):
        return None
    return int(answer[9:12])


def test_huge_header_is_refused_without_growing_memory(api_server, tenant_a) -> None:  # type: ignore[no-untyped-def]
    port = int(api_server.base_url.rsplit(":", 1)[1].split("/")[0])
    process = psutil.Process(api_server.pid)
    models = f"{api_server.base_url}/models"
    auth = {"Authorization": f"Bearer {tenant_a.api_key}"}
    assert httpx.get(models, headers=auth).status_code == 200
    before = process.memory_info().rss
    for size in (MIB, 32 * MIB):
        status = _status(_send_huge_header(port, size))
        assert status is None or 400 <= status < 500, status
    growth = (process.memory_info().rss - before) / MIB
    assert growth < 8, f"API RSS grew by {growth:.1f} MiB on oversized headers"
    # Just under the limit still works, and so does an ordinary request.
    big = "x" * (MAX_HEADER_BYTES - 2048)
    assert httpx.get(models, headers={**auth, "X-Padding": big}).status_code == 200
    assert httpx.get(models, headers=auth).status_code == 200
