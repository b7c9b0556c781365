"""Full-weight fine-tuned models (full and Spectrum jobs): each served by a vLLM server of its
own, which this process starts on demand.

A full or Spectrum job leaves full weights (safetensors + tokenizer) under `jobs/{id}/merged/`.
They cannot be an adapter of the base model's replicas, so the plane downloads them into
`data_dir/serving/full-models/{model}/{version}/` (atomically, like adapters; pickle formats
are never fetched) and starts `vllm --model <that dir> --served-model-name <ft name>` with the
base model's server settings, no LoRA, `--enforce-eager` (`serving.full_model_enforce_eager`),
on loopback, with TuneForge's vLLM key and key guard. Nothing else restarts: the base model's
replicas and their adapters keep serving.

At most `serving.max_full_model_servers` run at once. To serve another, the least recently
used one with nothing in flight or waiting makes room: when its model has the same
architecture and tokenizer (every file but the safetensors identical) and
`serving.full_model_swap_weights` is on, the new weights are swapped into it with vLLM's
`reload_weights` (about a second, instead of a new server); otherwise it is stopped and a new
server starts. A server is therefore served under a name of its own (`tf-full-…`), which the
proxy writes back as the model's name, like an adapter's alias.
A request for a model whose server is not running starts it and waits up to
`serving.full_model_start_wait_seconds`, then gets 503 with Retry-After. A deleted model's
server is stopped and its files removed. The servers die with this process; after a restart
the next request (or serving request) starts them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import re
import secrets
import shutil
import time
from collections import defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx

from serving.adapters import AdapterCache, AdapterVersion, list_files, safe_name, versioned
from serving.errors import AdapterRejected, ModelStartFailed, ModelStarting, WeightsMissing
from serving.keys import server_key
from serving.process import VllmProcess, start_vllm
from serving.registry import Replica, ReplicaState
from serving.vllm import ReplicaUnreachable, VllmClient
from tuneforge.settings import Settings, VllmServerSettings

log = logging.getLogger(__name__)

# Top-level files vLLM needs: config, safetensors (and their index), tokenizer, template.
# Never `*.bin` / `*.pt`: vLLM would unpickle them.
WEIGHT_FILE = re.compile(r"^[A-Za-z0-9_.-]+\.(safetensors|json|jinja|txt|model|tiktoken)$")
_FAILURES_BEFORE_UNHEALTHY = 2
_RETRY_AFTER = 5  # seconds, in the 503 of a request that waited for a server to start
_COLLECT_EVERY = 60.0


class States(Protocol):
    async def servable_states(self, ids: Collection[str]) -> Mapping[str, Any]: ...


async def weights_version(store: Any, prefix: str) -> AdapterVersion:
    """The full weights under `prefix` in S3 and their version; `WeightsMissing` unless a
    `config.json` and a `*.safetensors` file are there."""
    objects, newest = await list_files(store, prefix, WEIGHT_FILE)
    names = {o.name for o in objects}
    if "config.json" not in names or not any(n.endswith(".safetensors") for n in names):
        raise WeightsMissing(prefix)
    return versioned(prefix, objects, newest)


def signature(weights: AdapterVersion) -> tuple[tuple[str, int, str], ...]:
    """What must be identical for weights to be swapped into a server started for others:
    every file but the weights (config, generation config, tokenizer, chat template)."""
    return tuple((o.name, o.size, o.etag) for o in weights.objects
                 if not o.name.endswith(".safetensors"))


@dataclass
class FullServer:
    """One started server, serving one full-weight model at a time."""

    model: str
    version: str
    replica: Replica  # url, key, client, state, in-flight count: what the router's lease uses
    process: VllmProcess
    served: str  # the name vLLM serves it as (kept when other weights are swapped in)
    base_model: str
    signature: tuple[tuple[str, int, str], ...]
    started: asyncio.Task[None] | None = None  # done when it answered its first token
    last_used: float = field(default_factory=time.time)
    waiting: int = 0  # requests waiting for it to start: it is not evicted meanwhile

    def alive(self) -> bool:
        failed = (self.started is not None and self.started.done()
                  and (self.started.cancelled() or self.started.exception() is not None))
        return not failed and self.process.exited() is None

    def idle(self) -> bool:
        return self.replica.inflight == 0 and self.waiting == 0


class FullModels:
    def __init__(self, settings: Settings, store: Any, http: httpx.AsyncClient) -> None:
        self.settings = settings
        self.store = store
        self.http = http
        serving = settings.serving
        self.limit = serving.max_full_model_servers
        self.start_wait = serving.full_model_start_wait_seconds
        self.cache = AdapterCache(settings.data_dir / "serving" / "full-models")
        self.servers: dict[str, FullServer] = {}
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._placement = asyncio.Lock()
        self._numbers = itertools.count(1)
        self.swap = serving.full_model_swap_weights
        self._no_swap: set[tuple[tuple[str, int, str], ...]] = set()  # a swap of these failed
        self._collected_at = time.monotonic()
        self._placing: set[tuple[str, str]] = set()

    def serves(self, base_model: str) -> bool:
        """Whether this process serves full-weight models trained from `base_model`: it serves
        that base model, and `max_full_model_servers` is not 0."""
        return self.limit > 0 and self._template(base_model) is not None

    def _template(self, base_model: str) -> VllmServerSettings | None:
        """The base model's server settings (dtype, context, KV cache, threads, extra flags
        plus `full_model_extra_args`), as a server this process starts on a free port."""
        server = next((s for s in self.settings.inference_servers()
                       if s.base_model == base_model), None)
        if server is None:
            return None
        extra = [*server.extra_args, *self.settings.serving.full_model_extra_args]
        return server.model_copy(update={"url": "", "port": 0, "adapter_dir": "",
                                         "extra_args": extra})

    # ---- for the router and the serving desk -------------------------------------------

    async def acquire(self, model: str, base_model: str, prefix: str) -> tuple[Replica, str]:
        """The ready server of `model` and the name it serves it as, started now if it is not
        running (waiting at most `full_model_start_wait_seconds`); counted in flight until
        the lease is released."""
        server = self.servers.get(model)
        if server is None or not server.alive() or server.replica.state != ReplicaState.READY:
            server = await self.ensure(model, base_model, prefix,
                                       deadline=time.monotonic() + self.start_wait)
        server.replica.inflight += 1
        server.last_used = time.time()
        return server.replica, server.served

    async def serve(self, model: str, base_model: str, prefix: str) -> None:
        """A worker's serving request: the newest weights under `prefix` answer a first token
        (a server running an older version is replaced)."""
        deadline = time.monotonic() + self.settings.serving.startup_timeout_seconds
        weights = await weights_version(self.store, prefix)
        server = await self.ensure(model, base_model, prefix, weights=weights,
                                   deadline=deadline)
        await server.replica.client.first_token(server.served)
        server.last_used = time.time()

    async def ensure(self, model: str, base_model: str, prefix: str, *, deadline: float,
                     weights: AdapterVersion | None = None) -> FullServer:
        if not self.serves(base_model):
            raise ModelStarting(model, "full-weight models are not served here", _RETRY_AFTER)
        try:
            return await self._ensure(model, base_model, prefix, deadline, weights)
        except ModelStartFailed as exc:
            if exc.swapped is None:
                raise
            # vLLM could not swap these weights in: never again, start a server of its own.
            log.warning("swapping %s into a running server failed; starting one", model)
            self._no_swap.add(exc.swapped)
            return await self._ensure(model, base_model, prefix, deadline, weights)

    async def _ensure(self, model: str, base_model: str, prefix: str, deadline: float,
                      weights: AdapterVersion | None) -> FullServer:
        async with self._locks[model]:
            server = self.servers.get(model)
            placed = None
            if server is None or not server.alive() or (
                    weights is not None and server.version != weights.version):
                if weights is None:
                    weights = await weights_version(self.store, prefix)
                if server is not None:  # dead, or an older version
                    await self._stop(server)
                placing = (model, weights.version)
                self._placing.add(placing)  # its files are not collected meanwhile
                try:
                    local = await self.cache.fetch(self.store, model, weights)
                    server = await self._place(model, base_model, weights, local, deadline)
                finally:
                    self._placing.discard(placing)
                placed = weights.version
            server.waiting += 1  # (before any await: not a victim from here on)
        try:
            if placed is not None:
                await asyncio.to_thread(self._drop_files, model, placed)
            await self._ready(server, deadline)
        finally:
            server.waiting -= 1
        return server

    async def _ready(self, server: FullServer, deadline: float) -> None:
        assert server.started is not None
        try:
            await asyncio.wait_for(asyncio.shield(server.started),
                                   max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            raise ModelStarting(server.model, "its inference server is starting",
                                _RETRY_AFTER) from None
        if server.replica.state != ReplicaState.READY:
            if await self._probe(server):
                return
            raise ModelStarting(server.model, "its inference server stopped answering",
                                _RETRY_AFTER)

    async def _place(self, model: str, base_model: str, weights: AdapterVersion, local: Path,
                     deadline: float) -> FullServer:
        """A server for `model`: a new one if one more fits; else the least recently used idle
        one of the same architecture and tokenizer gets these weights swapped in; else the
        least recently used idle one is stopped first. Waits (until `deadline`) while every
        server is busy."""
        wanted = signature(weights)
        async with self._placement:
            while True:
                others = [s for s in self.servers.values() if s.model != model]
                if len(others) < self.limit:
                    return self._start(model, base_model, weights, local)
                idle = [s for s in others if s.idle()]
                alike = [s for s in idle if self.swap and wanted not in self._no_swap
                         and s.signature == wanted and s.base_model == base_model
                         and s.alive() and s.replica.state == ReplicaState.READY]
                if alike:
                    return self._swap(min(alike, key=lambda s: s.last_used), model, weights,
                                      local)
                if idle:
                    victim = min(idle, key=lambda s: s.last_used)
                    log.info("stopping the server of %s to make room (least recently used)",
                             victim.model)
                    await self._stop(victim)
                    continue
                if time.monotonic() >= deadline:
                    raise ModelStarting(model, f"all {self.limit} full-model servers are busy",
                                        _RETRY_AFTER)
                await asyncio.sleep(0.2)

    def _swap(self, server: FullServer, model: str, weights: AdapterVersion,
              local: Path) -> FullServer:
        log.info("swapping %s into the server of %s (least recently used)", model,
                 server.model)
        del self.servers[server.model]
        server.model, server.version, server.last_used = model, weights.version, time.time()
        server.replica.state = ReplicaState.STARTING
        server.started = asyncio.create_task(self._reload(server, local),
                                             name=f"swap-{server.replica.id}")
        server.started.add_done_callback(_retrieve)
        self.servers[model] = server
        self.write_state()
        return server

    async def _reload(self, server: FullServer, local: Path) -> None:
        started = time.monotonic()
        try:
            await server.replica.client.reload_weights(
                str(local), self.settings.serving.startup_timeout_seconds)
            await server.replica.client.first_token(server.served)
        except BaseException as exc:
            server.replica.state = ReplicaState.DOWN
            await asyncio.to_thread(server.process.stop)
            if isinstance(exc, AdapterRejected | ReplicaUnreachable):
                failed = ModelStartFailed(server.model, "its weights could not be swapped in")
                failed.swapped = server.signature
                raise failed from exc
            raise
        server.replica.state = ReplicaState.READY
        log.info("%s is served (pid %s): weights swapped in %.1fs", server.model,
                 server.process.pid, time.monotonic() - started)
        self.write_state()

    # ---- processes ---------------------------------------------------------------------

    def _start(self, model: str, base_model: str, weights: AdapterVersion,
               local: Path) -> FullServer:
        template = self._template(base_model)
        assert template is not None
        key = server_key(self.settings, template)
        number = next(self._numbers)
        # A name of its own (random: the proxy rewrites it in answers, so it must never be
        # text a model writes), kept across swaps.
        served = f"tf-full-{secrets.token_hex(8)}"
        process = start_vllm(
            template, model_path="", model_cache_dir=self.settings.effective_model_cache_dir,
            log=self.settings.data_dir / "logs" / f"vllm-full-{number}.log", api_key=key,
            model_dir=local, served_name=served,
            eager=self.settings.serving.full_model_enforce_eager,
            # `POST /collective_rpc` (reload_weights) and `/reset_prefix_cache`; like every
            # path but /health they need TuneForge's key (serving.vllm_guard).
            env={"VLLM_SERVER_DEV_MODE": "1"} if self.swap else None)
        replica = Replica(id=f"full#{number}", base_model=base_model, url=process.url,
                          capacity=0, client=VllmClient(process.url, self.http, api_key=key),
                          managed=True, api_key=key, state=ReplicaState.STARTING,
                          pid=process.pid)
        server = FullServer(model, weights.version, replica, process, served, base_model,
                            signature(weights))
        server.started = asyncio.create_task(self._come_up(server), name=f"full-{number}")
        server.started.add_done_callback(_retrieve)
        self.servers[model] = server
        log.info("started vLLM for full-weight model %s: pid %s, %s (log %s)", model,
                 process.pid, process.url, process.log)
        self.write_state()
        return server

    async def _come_up(self, server: FullServer) -> None:
        """Wait until the server lists the model, then ask it for one token."""
        timeout = self.settings.serving.startup_timeout_seconds
        started = time.monotonic()
        try:
            while True:
                code = server.process.exited()
                if code is not None:
                    raise ModelStartFailed(server.model,
                                           f"the server exited with code {code} while starting")
                try:
                    listed = await server.replica.client.list(seconds=5.0)
                    if server.served in listed.base_models:
                        break
                except ReplicaUnreachable:
                    pass
                if time.monotonic() - started > timeout:
                    raise ModelStartFailed(server.model, f"not ready after {timeout:.0f}s")
                await asyncio.sleep(0.5)
            try:
                await server.replica.client.first_token(server.served)
            except AdapterRejected as exc:
                raise ModelStartFailed(server.model, "it did not generate a token") from exc
        except BaseException:
            server.replica.state = ReplicaState.DOWN
            log.warning("the server of %s did not come up (see %s)", server.model,
                        server.process.log)
            await asyncio.to_thread(server.process.stop)
            raise
        server.replica.state = ReplicaState.READY
        server.replica.ready_since = time.monotonic()
        log.info("%s is served (pid %s), %.1fs after its server started", server.model,
                 server.process.pid, time.monotonic() - started)
        self.write_state()

    async def _stop(self, server: FullServer) -> None:
        if self.servers.get(server.model) is server:
            del self.servers[server.model]
        server.replica.state = ReplicaState.DOWN
        if server.started is not None and not server.started.done():
            server.started.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await server.started
        await asyncio.to_thread(server.process.stop)
        log.info("stopped the server of %s (pid %s)", server.model, server.process.pid)
        self.write_state()

    def _drop_files(self, model: str, keep_version: str | None = None) -> None:
        """Remove the cached weights of `model` (all but `keep_version`)."""
        model_dir = self.cache.root / safe_name(model)
        if not model_dir.is_dir():
            return
        for version_dir in model_dir.iterdir():
            if version_dir.name != keep_version:
                shutil.rmtree(version_dir, ignore_errors=True)
        if keep_version is None:
            shutil.rmtree(model_dir, ignore_errors=True)

    async def stop_model(self, model: str) -> bool:
        """A deleted model (or one whose job ended unpublished): stop its server, drop its
        files. False if it had no server here."""
        async with self._locks[model]:
            server = self.servers.get(model)
            if server is not None:
                await self._stop(server)
            await asyncio.to_thread(self._drop_files, model)
        return server is not None

    async def stop_all(self) -> None:
        servers, self.servers = list(self.servers.values()), {}
        for server in servers:
            if server.started is not None:
                server.started.cancel()
        await asyncio.gather(*(asyncio.to_thread(s.process.stop) for s in servers))
        with contextlib.suppress(OSError):
            self.state_file().unlink()

    # ---- health and deletes ------------------------------------------------------------

    async def _probe(self, server: FullServer) -> bool:
        try:
            await server.replica.client.list(seconds=5.0)
        except ReplicaUnreachable:
            server.replica.failures += 1
            if server.replica.failures >= _FAILURES_BEFORE_UNHEALTHY:
                server.replica.state = ReplicaState.UNHEALTHY
            return False
        server.replica.failures = 0
        server.replica.state = ReplicaState.READY
        return True

    async def check(self, catalog: States | None = None) -> None:
        """Health of the running servers (one that exited is forgotten: the next request
        starts it again), stop the servers of models deleted meanwhile (e.g. through another
        API process), and remove cached weights no server runs, downloaded longer than
        `orphan_grace_seconds` ago (a later start downloads them again)."""
        if time.monotonic() - self._collected_at > _COLLECT_EVERY:
            self._collected_at = time.monotonic()
            running = {(s.model, s.version) for s in self.servers.values()} | self._placing
            await asyncio.to_thread(self.cache.collect, running,
                                    self.settings.serving.orphan_grace_seconds)
        for server in list(self.servers.values()):
            if server.started is None or not server.started.done():
                continue
            if not server.alive():
                log.warning("the server of %s (pid %s) exited; it starts again on demand",
                            server.model, server.process.pid)
                await self._stop(server)
            else:
                await self._probe(server)
        if catalog is not None and self.servers:
            states = await catalog.servable_states(list(self.servers))
            for model in [m for m in self.servers if states.get(m) is None]:
                log.info("stopping the server of %s: the model was deleted", model)
                await self.stop_model(model)

    async def run_forever(self, interval: float, catalog: States | None = None) -> None:
        while True:
            try:
                await self.check(catalog)
            except Exception:
                log.warning("full-model health pass failed", exc_info=True)
            await asyncio.sleep(interval)

    def state_file(self) -> Path:
        return self.settings.data_dir / "serving" / "full-servers.json"

    def write_state(self) -> None:
        """For people and tools on this machine (tests, benchmarks): which full-model servers
        run, with their URL and PID. Nothing that decides reads it."""
        path = self.state_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"supervisor_pid": os.getpid(), "updated_at": time.time(),
                                   "servers": [
            {"model": s.model, "version": s.version, "url": s.replica.url,
             "pid": s.process.pid, "state": str(s.replica.state), "id": s.replica.id,
             "served": s.served}
            for s in self.servers.values()]}, indent=2))
        tmp.replace(path)


def _retrieve(task: asyncio.Task[None]) -> None:
    """Nobody may be waiting for a start that failed: mark its error retrieved."""
    if not task.cancelled():
        task.exception()
