"""Replicas: build them from settings, start the ones TuneForge runs, health-check all of them,
restart a started one that crashed, and publish their state.

The health check is `GET /v1/models`: it also tells which adapters each server has loaded, which
the registry adopts (so a restarted or new server shows up empty, and the reconciler refills it).
The state is also written to `{data_dir}/serving/replicas.json`, for people and tools on the
machine (the benchmarks, the tests) to find a started server's port and PID; nothing that
decides what is loaded reads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from serving.keys import server_key
from serving.process import VllmProcess, start_vllm
from serving.registry import Registry, Replica, ReplicaState
from serving.vllm import ReplicaUnreachable, VllmClient
from tuneforge.base_models import check_startable
from tuneforge.settings import Settings, VllmServerSettings

log = logging.getLogger(__name__)

_FAILURES_BEFORE_UNHEALTHY = 2
_MAX_BACKOFF = 60.0
_HUNG_AFTER = 90.0  # a started server unhealthy this long is restarted


def state_file(settings: Settings) -> Path:
    return settings.data_dir / "serving" / "replicas.json"


def read_state(settings: Settings) -> list[dict[str, object]]:
    try:
        return list(json.loads(state_file(settings).read_text()).get("replicas", []))
    except (OSError, ValueError):
        return []


class Supervisor:
    def __init__(self, settings: Settings, registry: Registry, http: httpx.AsyncClient, *,
                 on_ready: Callable[[Replica], None] | None = None) -> None:
        self.settings = settings
        self.registry = registry
        self.http = http
        self.on_ready = on_ready
        self.processes: dict[str, VllmProcess] = {}
        self._servers: dict[str, VllmServerSettings] = {}
        self._next_start: dict[str, float] = {}
        self._unhealthy_since: dict[str, float] = {}
        counts: dict[str, int] = {}
        for server in settings.inference_servers():
            if not server.url:  # what a started server could never serve: refused now
                check_startable(settings, server.base_model)
            index = counts[server.base_model] = counts.get(server.base_model, 0) + 1
            replica_id = f"{server.base_model}#{index}"
            key = server_key(settings, server)
            replica = Replica(
                id=replica_id, base_model=server.base_model, url=server.url.rstrip("/"),
                capacity=server.capacity, client=VllmClient(server.url, http, api_key=key),
                managed=not server.url, adapter_dir=server.adapter_dir, api_key=key,
                state=ReplicaState.STARTING)
            self._servers[replica_id] = server
            registry.replicas.append(replica)

    # ---- started servers ---------------------------------------------------------------

    def _model_path(self, base_model: str) -> str:
        entry = self.settings.base_model(base_model)
        return entry.path if entry is not None else ""

    def _start(self, replica: Replica) -> None:
        server = self._servers[replica.id]
        previous = self.processes.get(replica.id)
        port = previous.port if previous is not None else None
        name = replica.id.replace("#", "-")
        process = start_vllm(
            server, model_path=self._model_path(server.base_model),
            model_cache_dir=self.settings.effective_model_cache_dir,
            log=self.settings.data_dir / "logs" / f"vllm-{name}.log", port=port,
            api_key=replica.api_key,
            # A base model in S3 is fetched by the launcher with TuneForge's credentials.
            env={"TUNEFORGE_S3": self.settings.to_env()["TUNEFORGE_S3"]})
        self.processes[replica.id] = process
        replica.url = process.url
        replica.client = VllmClient(process.url, self.http, api_key=replica.api_key)
        replica.pid = process.pid
        replica.state = ReplicaState.STARTING
        replica.ready_since = None
        replica.forget_all()
        log.info("started vLLM for %s: pid %s, %s (log %s)", replica.base_model, process.pid,
                 process.url, process.log)

    def start(self) -> None:
        for replica in self.registry.replicas:
            if replica.managed:
                self._start(replica)
        self.write_state()

    async def stop(self) -> None:
        processes, self.processes = list(self.processes.values()), {}
        await asyncio.gather(*(asyncio.to_thread(p.stop) for p in processes))
        with contextlib.suppress(OSError):
            state_file(self.settings).unlink()

    def kill(self, replica_id: str) -> None:
        """Stop a started server now (the next check restarts it): for tests and operators."""
        self.processes[replica_id].stop(timeout=0)

    # ---- health ------------------------------------------------------------------------

    async def check(self, replica: Replica) -> None:
        process = self.processes.get(replica.id)
        now = time.monotonic()
        if process is not None and (code := process.exited()) is not None:
            if replica.state != ReplicaState.DOWN:
                log.warning("vLLM for %s (pid %s) exited with %s; restarting (see %s)",
                            replica.base_model, process.pid, code, process.log)
                replica.state = ReplicaState.DOWN
                replica.forget_all()
                backoff = min(_MAX_BACKOFF, 2.0 ** min(replica.restarts, 6))
                self._next_start[replica.id] = now + (backoff if replica.restarts else 0)
            if now >= self._next_start.get(replica.id, 0):
                await asyncio.to_thread(process.stop, 0)
                replica.restarts += 1
                self._start(replica)
            return
        asked_at = time.monotonic()
        try:
            listed = await replica.client.list(seconds=5.0)
        except ReplicaUnreachable:
            replica.failures += 1
            if replica.state == ReplicaState.STARTING:
                if process is not None and now - process.started_at > \
                        self.settings.serving.startup_timeout_seconds:
                    log.warning("vLLM for %s not ready after %.0fs; restarting",
                                replica.base_model, now - process.started_at)
                    await asyncio.to_thread(process.stop)
                    replica.restarts += 1
                    self._start(replica)
                return
            if replica.failures >= _FAILURES_BEFORE_UNHEALTHY and \
                    replica.state != ReplicaState.UNHEALTHY:
                log.warning("replica %s (%s) stopped answering", replica.id, replica.url)
                replica.state = ReplicaState.UNHEALTHY
                replica.ready_since = None
                self._unhealthy_since[replica.id] = now
            elif process is not None and replica.state == ReplicaState.UNHEALTHY and \
                    now - self._unhealthy_since.setdefault(replica.id, now) > _HUNG_AFTER:
                log.warning("vLLM for %s (pid %s) hung for %.0fs; restarting",
                            replica.base_model, process.pid, _HUNG_AFTER)
                await asyncio.to_thread(process.stop)
                replica.restarts += 1
                self._start(replica)
            return
        replica.failures = 0
        self._unhealthy_since.pop(replica.id, None)
        replica.sync(listed, asked_at)
        self.registry.learn_from(replica)
        if replica.state != ReplicaState.READY:
            log.info("replica %s (%s) is ready", replica.id, replica.url)
            replica.state = ReplicaState.READY
            replica.ready_since = now
            if self.on_ready is not None:
                self.on_ready(replica)

    async def check_all(self) -> None:
        before = [(r.state, r.url, r.pid) for r in self.registry.replicas]
        await asyncio.gather(*(self.check(r) for r in self.registry.replicas))
        if before != [(r.state, r.url, r.pid) for r in self.registry.replicas]:
            self.write_state()

    async def run_forever(self) -> None:
        interval = self.settings.serving.health_interval_seconds
        while True:
            try:
                await self.check_all()
            except Exception:
                log.warning("health check pass failed", exc_info=True)
            await asyncio.sleep(interval)

    def write_state(self) -> None:
        path = state_file(self.settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({
            "supervisor_pid": os.getpid(), "updated_at": time.time(),
            "replicas": [r.snapshot() for r in self.registry.replicas]}, indent=2))
        tmp.replace(path)
