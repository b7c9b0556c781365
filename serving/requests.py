"""Workers' serving requests, answered by the plane: the only writer of every replica's adapter
set.

When a job's training ends the worker uploads the adapter and writes a serving request to the
database (the only thing worker and API share, so they may run on different machines). The
plane polls for requests of the base models its replicas serve, loads each request's adapter
on every healthy replica of that base model (through the router, so the registry stays the
record of what is loaded), asks each for one token with it, unloads older versions of the same
model (requests already running on them finish on the old weights; new ones get the new
version) and answers with the time it was ready; an adapter vLLM refuses is answered with the
error. A request of kind "full" (full weights of a full or Spectrum job) starts that model's
own server instead (`serving.full_models`) and is answered once it generated a token. A
request of a job that ended cancelled or failed is unloaded and forgotten; one whose
job succeeded is forgotten a minute after it was answered (the model is then an ordinary
servable model). Requests of a base model no replica here serves are left for an API process
that serves it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from serving.adapters import AdapterVersion, adapter_version
from serving.catalog import FULL, Catalog, ServingAsk, kind_of
from serving.errors import (
    AdapterMissing,
    AdapterRejected,
    ModelStartFailed,
    NoReplica,
    WeightsMissing,
)
from serving.full_models import FullModels
from serving.registry import Loaded, Registry, Replica
from serving.router import Router
from serving.vllm import ReplicaUnreachable
from tuneforge.domain import UNPUBLISHED_STATUSES, JobStatus
from tuneforge.errors import ApiError

log = logging.getLogger(__name__)

# An answered request of a succeeded job is kept this long (its worker has read the answer
# long before), then dropped: the table holds only the requests of jobs still running.
_KEEP_ANSWERED = 60.0
_RETRY_AFTER = 1.0  # a load that failed for a passing reason (a replica stopped answering)
_propagator = TraceContextTextMapPropagator()  # the job's stored W3C traceparent


class RequestDesk:
    def __init__(self, registry: Registry, router: Router, catalog: Catalog, store: Any, *,
                 missing_timeout: float,
                 on_unpublished: Callable[[str], Awaitable[None]] | None = None,
                 full: FullModels | None = None) -> None:
        self.registry = registry
        self.full = full
        self.router = router
        self.catalog = catalog
        self.store = store
        # An adapter still missing from S3 this long after the request is an error.
        self.missing_timeout = missing_timeout
        self.on_unpublished = on_unpublished
        self._working: dict[str, asyncio.Task[None]] = {}
        self._retry_at: dict[str, float] = {}
        self._failing = False

    async def poll_once(self) -> None:
        bases = self.registry.base_models()
        if not bases:
            return
        asks = await self.catalog.serving_asks(bases)
        now = time.time()
        done: list[str] = []
        for ask in asks:
            if ask.job_status in UNPUBLISHED_STATUSES:
                await self._unpublish(ask)
                done.append(ask.id)
            elif ask.ready_at is None and ask.error is None:
                self._start(ask)
            elif (ask.job_status == JobStatus.SUCCEEDED
                  and now - (ask.ready_at or ask.requested_at) > _KEEP_ANSWERED):
                done.append(ask.id)
        await self.catalog.drop_serving(done)
        present = {ask.id for ask in asks}
        for request_id in [r for r in self._retry_at if r not in present]:
            del self._retry_at[request_id]

    def _start(self, ask: ServingAsk) -> None:
        if ask.id in self._working or time.monotonic() < self._retry_at.get(ask.id, 0.0):
            return
        if kind_of(ask) == FULL:
            if self.full is None or not self.full.serves(ask.base_model):
                return  # not served here: the worker's wait runs out, the job succeeds
        elif not self.registry.healthy(ask.base_model):
            return  # asked again at the next poll: a server may be starting
        task = asyncio.create_task(self._serve(ask), name=f"serve-{ask.id}")
        self._working[ask.id] = task
        task.add_done_callback(lambda _: self._working.pop(ask.id, None))

    async def _unpublish(self, ask: ServingAsk) -> None:
        task = self._working.get(ask.id)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        log.info("unloading %s: its job is %s", ask.model, ask.job_status)
        if self.on_unpublished is not None:
            await self.on_unpublished(ask.model)
        else:
            await self.router.unload_model(ask.model)

    async def _serve(self, ask: ServingAsk) -> None:
        # The hot-load's log lines carry the job and the request that created it; its span
        # continues that request's trace (a no-op span while tracing is off).
        parent = (_propagator.extract({"traceparent": ask.traceparent})
                  if ask.traceparent else None)
        with structlog.contextvars.bound_contextvars(request_id=ask.request_id,
                                                     job_id=ask.job_id), \
                trace.get_tracer("tuneforge.serving").start_as_current_span(
                    "serving.hot_load", context=parent,
                    attributes={"tuneforge.model": ask.model,
                                "tuneforge.job_id": ask.job_id or ""}):
            try:
                if kind_of(ask) == FULL:
                    await self._serve_full(ask)
                else:
                    await self._load_everywhere(ask)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("could not serve %s yet; retrying", ask.model, exc_info=True)
                self._retry_at[ask.id] = time.monotonic() + _RETRY_AFTER

    async def _load_everywhere(self, ask: ServingAsk) -> None:
        replicas = self.registry.healthy(ask.base_model)
        if not replicas:
            return
        try:
            adapter = await adapter_version(self.store, ask.adapter_prefix)
        except AdapterMissing as exc:
            if time.time() - ask.requested_at > self.missing_timeout:
                await self.catalog.refuse_serving(ask.id, exc.message)
            else:  # the object store may show a fresh upload a moment late
                self._retry_at[ask.id] = time.monotonic() + _RETRY_AFTER
            return
        results = await asyncio.gather(*(self._load(r, ask, adapter) for r in replicas))
        ready_at = time.time()
        loaded = [(r, e) for r, e in zip(replicas, results, strict=True)
                  if isinstance(e, Loaded)]
        if not loaded:
            refused = next((e for e in results if isinstance(e, AdapterRejected)), None)
            if refused is not None:
                await self.catalog.refuse_serving(ask.id, refused.message)
            else:
                self._retry_at[ask.id] = time.monotonic() + _RETRY_AFTER
            return
        for replica, entry in loaded:
            await self._unload_older(replica, entry)
        await self.catalog.answer_serving(ask.id, ready_at=ready_at, replicas=len(loaded))
        log.info("%s servable on %d replica(s), %.3fs after it was requested", ask.model,
                 len(loaded), ready_at - ask.requested_at)

    async def _serve_full(self, ask: ServingAsk) -> None:
        """Full weights: start (or replace) the model's own server, one token, answer."""
        assert self.full is not None
        try:
            await self.full.serve(ask.model, ask.base_model, ask.adapter_prefix)
        except WeightsMissing as exc:
            if time.time() - ask.requested_at > self.missing_timeout:
                await self.catalog.refuse_serving(ask.id, exc.message)
            else:  # the object store may show a fresh upload a moment late
                self._retry_at[ask.id] = time.monotonic() + _RETRY_AFTER
            return
        except ModelStartFailed as exc:
            log.warning("could not serve %s: %s", ask.model, exc.message)
            await self.catalog.refuse_serving(ask.id, exc.message)
            return
        ready_at = time.time()
        await self.catalog.answer_serving(ask.id, ready_at=ready_at, replicas=1)
        log.info("%s servable on its own server, %.3fs after it was requested", ask.model,
                 ready_at - ask.requested_at)

    async def _load(self, replica: Replica, ask: ServingAsk,
                    adapter: AdapterVersion) -> Loaded | AdapterRejected | None:
        try:
            entry = await self.router.ensure_loaded(replica, ask.model, ask.adapter_prefix,
                                                    adapter, created_at=ask.requested_at)
            await replica.client.first_token(entry.alias)
        except AdapterRejected as exc:
            log.warning("%s refused %s: %s", replica.id, ask.model, exc.message)
            # The job's error shows the message: without this machine's paths.
            for path in (str(self.router.cache.root), replica.adapter_dir):
                if path:
                    exc.message = exc.message.replace(path, "<adapter cache>")
            return exc
        except (ReplicaUnreachable, NoReplica):
            log.warning("%s stopped answering while loading %s", replica.id, ask.model)
            return None
        except ApiError as exc:  # e.g. S3 unavailable while fetching: retried
            log.warning("could not load %s on %s: %s", ask.model, replica.id, exc.message)
            return None
        return entry

    async def _unload_older(self, replica: Replica, entry: Loaded) -> None:
        """Older versions go at once, even while requests run on them: vLLM finishes those on
        the old weights, and new requests get the new version."""
        for old in replica.versions(entry.model):
            if old.version < entry.version:
                await self.router.unload(replica, old)

    async def run_forever(self, interval: float) -> None:
        while True:
            try:
                await self.poll_once()
                self._failing = False
            except Exception:
                if not self._failing:  # once per outage, not five times a second
                    log.warning("reading serving requests failed; retrying", exc_info=True)
                self._failing = True
            await asyncio.sleep(interval)

    async def stop(self) -> None:
        tasks = list(self._working.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
