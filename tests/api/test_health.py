"""`/healthz` and `/readyz` on the real API process, and `/metrics` for loopback clients only
when no `metrics_token` is set.

The failure case runs a second API process on the session's database and S3 but a Redis of
its own, which the test stops: `/readyz` then answers 503 naming `redis`, and nothing else
about it (no host, port or password)."""

from __future__ import annotations

import secrets
import socket
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, ApiServer
from tuneforge.processes import ManagedProcess, free_port, spawn, start_redis, wait_until
from tuneforge.settings import Settings


def _root(api_server: ApiServer) -> str:
    return api_server.base_url.removesuffix("/v1")


def test_healthz_and_readyz_answer_without_a_key(api_server: ApiServer) -> None:
    root = _root(api_server)
    alive = httpx.get(f"{root}/healthz", timeout=10)
    assert alive.status_code == 200 and alive.json() == {"status": "ok"}
    ready = httpx.get(f"{root}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"status": "ok",
                            "checks": {"database": True, "redis": True, "storage": True}}


def test_operating_endpoints_are_not_in_the_openapi_document(api_server: ApiServer) -> None:
    paths = httpx.get(f"{_root(api_server)}/schema/openapi.json", timeout=10).json()["paths"]
    assert not {"/healthz", "/readyz", "/metrics"} & set(paths)


def _non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))  # sends nothing: picks the outgoing address
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


@dataclass
class OwnRedisApi:
    settings: Settings
    redis: ManagedProcess
    api: ManagedProcess

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.settings.port}"


@pytest.fixture(scope="module")
def own_redis_api(settings: Settings, tmp_root: Path) -> Iterator[OwnRedisApi]:
    """An API process (no metrics token, listening on every interface) whose Redis is its
    own."""
    if "postgresql" in settings.effective_database_url:
        pytest.skip("Redis faults do not depend on the database; checked once, on SQLite")
    work = tmp_root / f"health-{uuid.uuid4().hex[:6]}"
    data_dir = work / "data"
    data_dir.mkdir(parents=True)
    port, password = free_port(), secrets.token_hex(16)
    redis = start_redis(work / "redis", port, password)
    private = settings.model_copy(update={
        "redis_url": f"redis://:{password}@127.0.0.1:{port}/0", "data_dir": data_dir,
        "queue_name": f"tf-health-{uuid.uuid4().hex[:6]}", "host": "0.0.0.0",
        "port": free_port(), "grpc_port": free_port()})
    api = spawn("api-own-redis", [sys.executable, "-m", "stack.cli", "server"],
                data_dir / "api.log", env=private.to_env(), cwd=REPO)
    try:
        base = f"http://127.0.0.1:{private.port}"
        wait_until(lambda: httpx.get(f"{base}/healthz").status_code == 200, 120, "API", api)
        yield OwnRedisApi(private, redis, api)
    finally:
        api.stop()
        redis.stop()


def test_metrics_without_a_token_answer_loopback_clients_only(
        own_redis_api: OwnRedisApi) -> None:
    local = httpx.get(f"{own_redis_api.root}/metrics", timeout=10)
    assert local.status_code == 200
    assert "tuneforge_jobs" in local.text
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address to connect from")
    remote = httpx.get(f"http://{address}:{own_redis_api.settings.port}/metrics", timeout=10)
    assert remote.status_code == 404
    assert "tuneforge_" not in remote.text


def test_readyz_names_the_dependency_that_is_down(own_redis_api: OwnRedisApi) -> None:
    root = own_redis_api.root
    assert httpx.get(f"{root}/readyz", timeout=10).status_code == 200
    own_redis_api.redis.stop()
    answer = httpx.get(f"{root}/readyz", timeout=30)
    assert answer.status_code == 503
    body = answer.json()
    assert body["failed"] == ["redis"]
    assert body["checks"] == {"database": True, "redis": False, "storage": True}
    redis_url = own_redis_api.settings.redis_url
    password = redis_url.split(":")[2].split("@")[0]
    port = redis_url.rsplit(":", 1)[1].split("/")[0]
    for secret in (password, port, "127.0.0.1", own_redis_api.settings.s3.endpoint):
        assert secret not in answer.text
    # Alive all the same: liveness needs no dependency.
    assert httpx.get(f"{root}/healthz", timeout=10).status_code == 200
