"""The bearer key of the vLLM servers TuneForge talks to.

A server TuneForge starts gets `VLLM_API_KEY` (in its environment, not on its command line,
where every user of the host could read it) and the `serving.vllm_guard` middleware: nothing
but `/health` answers without the key. The key is `VllmServerSettings.api_key` when set, else
one generated once per data directory into `data_dir/serving/vllm-api-key` (mode 0600), which
the worker on the same machine reads too. An attached server's key is its `api_key` setting.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from tuneforge.settings import Settings, VllmServerSettings

KEY_FILE = "vllm-api-key"


def key_file(settings: Settings) -> Path:
    return settings.data_dir / "serving" / KEY_FILE


def data_dir_key(settings: Settings) -> str:
    """The generated key of this data directory (created, 0600, on first use)."""
    path = key_file(settings)
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = "vllm-" + secrets.token_urlsafe(32)
    tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(key + "\n")
    try:
        os.link(tmp, path)  # atomic; fails if another process made it first
    except FileExistsError:
        key = path.read_text().strip()
    finally:
        tmp.unlink()
    return key


def server_key(settings: Settings, server: VllmServerSettings) -> str:
    """The key to send to `server` ("" for an attached server configured without one)."""
    configured = server.api_key.get_secret_value()
    if configured or server.url:
        return configured
    return data_dir_key(settings)


def auth_headers(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}
