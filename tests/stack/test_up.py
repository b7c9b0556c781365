"""`tuneforge up` as a person runs it: every child stops with it, and a second start on the
same data directory keeps what the first one stored."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import psutil
import pytest

from tests.conftest import MODEL_CACHE, REPO
from tuneforge.processes import free_port, port_is_free
from tuneforge.stack import EMBEDDED_REDIS_PORT, EMBEDDED_S3_PORT

pytestmark = pytest.mark.vllm


def start_up(data_dir: Path, port: int, grpc_port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TUNEFORGE_DATA_DIR": str(data_dir), "TUNEFORGE_PORT": str(port),
           "TUNEFORGE_GRPC_PORT": str(grpc_port), "TUNEFORGE_MODEL_CACHE_DIR": str(MODEL_CACHE)}
    return subprocess.Popen([sys.executable, "-m", "tuneforge.cli", "up"], cwd=REPO, env=env,
                            stdout=(data_dir / "up.out").open("ab"), stderr=subprocess.STDOUT)


def wait_ready(process: subprocess.Popen[bytes], base: str, data_dir: Path) -> str:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert process.poll() is None, (data_dir / "up.out").read_text()
        try:
            if httpx.get(f"{base}/models", timeout=2).status_code == 401:
                return json.loads((data_dir / "credentials.json").read_text())["api_key"]
        except (httpx.HTTPError, FileNotFoundError, KeyError):
            pass
        time.sleep(0.5)
    raise AssertionError("tuneforge up did not come up")


def stop_and_check_nothing_left(process: subprocess.Popen[bytes]) -> None:
    family = psutil.Process(process.pid).children(recursive=True)
    assert {p.name() for p in family} >= {"weed", "valkey-server"}
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 0
    _, alive = psutil.wait_procs(family, timeout=30)
    assert not alive, f"left behind: {[(p.pid, p.name()) for p in alive]}"


def test_up_stops_every_child_and_keeps_data(tmp_path: Path) -> None:
    if not (port_is_free(EMBEDDED_REDIS_PORT) and port_is_free(EMBEDDED_S3_PORT)):
        pytest.skip("another embedded stack holds the Redis/S3 ports")
    port, grpc_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}/v1"

    first = start_up(tmp_path, port, grpc_port)
    try:
        key = wait_ready(first, base, tmp_path)
        client = openai.OpenAI(base_url=base, api_key=key, max_retries=0)
        stored = client.files.create(file=("keep.jsonl", io.BytesIO(b'{"a": 1}\n')),
                                     purpose="fine-tune")
        # A second stack on the same ports is refused with a clear message.
        clash = subprocess.run([sys.executable, "-m", "tuneforge.cli", "up"], cwd=REPO,
                               env={**os.environ, "TUNEFORGE_DATA_DIR": str(tmp_path / "other"),
                                    "TUNEFORGE_PORT": str(port)},
                               capture_output=True, text=True, timeout=120)
        assert clash.returncode == 2 and "already in use" in clash.stderr
        stop_and_check_nothing_left(first)
    finally:
        if first.poll() is None:
            first.kill()

    second = start_up(tmp_path, port, grpc_port)
    try:
        assert wait_ready(second, base, tmp_path) == key
        client = openai.OpenAI(base_url=base, api_key=key, max_retries=0)
        assert client.files.retrieve(stored.id).filename == "keep.jsonl"
        assert client.files.content(stored.id).read() == b'{"a": 1}\n'
        stop_and_check_nothing_left(second)
    finally:
        if second.poll() is None:
            second.kill()
