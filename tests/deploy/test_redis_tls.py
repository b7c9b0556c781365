"""The documented TLS option for Redis (deploy/compose/.env.example): REDIS_SCHEME=rediss
gives TuneForge a `rediss://` URL with the password, and its queue client then speaks TLS
with certificate verification."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from redis.asyncio.connection import SSLConnection

from server.queue import redis_pool
from tests.deploy.conftest import COMPOSE_DIR, run
from tests.deploy.test_compose import COMPOSE, interpolate_values, read_env


def test_rediss_scheme_reaches_the_queue_client_with_tls(tmp_path: Path) -> None:
    result = run(["sh", str(COMPOSE_DIR / "init-env.sh"), str(tmp_path / ".env")])
    assert result.returncode == 0, result.stderr
    env = read_env(tmp_path / ".env")
    tls_env = {**env, "REDIS_SCHEME": "rediss", "REDIS_HOST": "cache.example.internal",
               "REDIS_PORT": "6380"}
    compose: dict[str, Any] = interpolate_values(yaml.safe_load(COMPOSE.read_text()), tls_env)
    for service in ("api", "worker"):
        url = compose["services"][service]["environment"]["TUNEFORGE_REDIS_URL"]
        parts = urlsplit(url)
        assert (parts.scheme, parts.hostname, parts.port) == (
            "rediss", "cache.example.internal", 6380)
        assert parts.password == env["REDIS_PASSWORD"]
        pool = redis_pool(url, "q").connection_pool
        assert pool.connection_class is SSLConnection
        assert pool.connection_kwargs["password"] == env["REDIS_PASSWORD"]
        assert pool.connection_kwargs["socket_timeout"] > 0
        connection = pool.make_connection()  # not connected: nothing is dialled
        assert connection.ssl_context.cert_reqs == ssl.CERT_REQUIRED
        assert connection.ssl_context.check_hostname
