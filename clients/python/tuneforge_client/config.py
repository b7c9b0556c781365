"""Where the client connects and with which key: arguments, then environment variables, then
the config file, then defaults.

| setting      | environment variable       | config file key | default                         |
|--------------|----------------------------|-----------------|---------------------------------|
| base_url     | TUNEFORGE_BASE_URL         | base_url        | http://127.0.0.1:8000/v1        |
| api_key      | TUNEFORGE_API_KEY          | api_key         | (none)                          |
| grpc_target  | TUNEFORGE_GRPC_TARGET      | grpc_target     | base_url's host, port 50051     |
| transport    | TUNEFORGE_TRANSPORT        | transport       | grpc                            |
| timeout      | TUNEFORGE_TIMEOUT          | timeout         | 60 (seconds, per unary call)    |

The config file is `$TUNEFORGE_CLIENT_CONFIG` if set, else
`$XDG_CONFIG_HOME/tuneforge/config.toml` (`~/.config/tuneforge/config.toml`), a TOML file of
top-level keys, e.g.::

    base_url = "http://127.0.0.1:8000/v1"
    api_key = "tf-..."
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
DEFAULT_GRPC_PORT = 50051
DEFAULT_TIMEOUT = 60.0

Transport = Literal["grpc", "rest"]


@dataclass(frozen=True)
class ClientConfig:
    base_url: str
    api_key: str | None
    grpc_target: str
    grpc_secure: bool
    transport: Transport
    timeout: float | None


def config_path() -> Path:
    explicit = os.environ.get("TUNEFORGE_CLIENT_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "tuneforge" / "config.toml"


def read_config_file(path: Path | None = None) -> dict[str, Any]:
    path = path or config_path()
    if not path.is_file():
        return {}
    with path.open("rb") as f:
        return tomllib.load(f)


def normalize_base_url(url: str) -> str:
    """`http://host:port` or `http://host:port/v1` (with or without a trailing slash) →
    `http://host:port/v1`."""
    url = url.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


def derive_grpc_target(base_url: str) -> str:
    host = urlsplit(base_url).hostname or "127.0.0.1"
    if ":" in host:  # IPv6
        host = f"[{host}]"
    return f"{host}:{DEFAULT_GRPC_PORT}"


def resolve(*, base_url: str | None = None, api_key: str | None = None,
            grpc_target: str | None = None, transport: str | None = None,
            timeout: float | None = None, config_file: Path | None = None) -> ClientConfig:
    file = read_config_file(config_file)
    env = os.environ

    def pick(value: Any, env_name: str, key: str) -> Any:
        if value is not None:
            return value
        if env.get(env_name):
            return env[env_name]
        return file.get(key)

    url = normalize_base_url(pick(base_url, "TUNEFORGE_BASE_URL", "base_url") or DEFAULT_BASE_URL)
    chosen = (pick(transport, "TUNEFORGE_TRANSPORT", "transport") or "grpc").lower()
    if chosen not in ("grpc", "rest"):
        raise ValueError(f"transport must be 'grpc' or 'rest', not {chosen!r}")
    raw_timeout = pick(timeout, "TUNEFORGE_TIMEOUT", "timeout")
    target = pick(grpc_target, "TUNEFORGE_GRPC_TARGET", "grpc_target") or derive_grpc_target(url)
    secure = url.startswith("https://")
    for scheme, is_secure in (("https://", True), ("http://", False), ("grpcs://", True),
                              ("grpc://", False)):
        if target.startswith(scheme):
            target, secure = target[len(scheme):], is_secure
    return ClientConfig(
        base_url=url, api_key=pick(api_key, "TUNEFORGE_API_KEY", "api_key"),
        grpc_target=target.rstrip("/"), grpc_secure=secure,
        transport=chosen,  # type: ignore[arg-type]
        timeout=float(raw_timeout) if raw_timeout is not None else DEFAULT_TIMEOUT,
    )
