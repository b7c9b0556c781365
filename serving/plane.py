"""The inference plane of the API process: replicas (started or attached), their health
checks, the adapter cache, the reconciler, the router, the desk that answers workers'
serving requests and the servers of full-weight models, wired together. It is the only writer
of every replica's adapter set."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

import httpx

from serving.adapters import AdapterCache
from serving.catalog import Catalog
from serving.full_models import FullModels
from serving.reconciler import Reconciler
from serving.registry import Registry, Replica
from serving.requests import RequestDesk
from serving.router import Router, TargetCache
from serving.supervisor import Supervisor
from tuneforge.settings import Settings

log = logging.getLogger(__name__)


def cache_root(settings: Settings) -> Path:
    return settings.serving.adapter_cache_dir or settings.data_dir / "adapters"


class ServingPlane:
    def __init__(self, settings: Settings, store: Any, catalog: Catalog) -> None:
        self.settings = settings
        serving = settings.serving
        self.http = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200,
                                keepalive_expiry=60),
            timeout=httpx.Timeout(30.0, connect=5.0))
        self.registry = Registry()
        self.cache = AdapterCache(cache_root(settings))
        self.catalog = catalog
        self.full = FullModels(settings, store, self.http)
        self.router = Router(self.registry, store, self.cache, self.http,
                             request_timeout=serving.request_timeout_seconds,
                             limits=settings.inference_limits, full=self.full)
        self.targets = TargetCache(serving.lookup_cache_seconds)
        self.reconciler = Reconciler(self.registry, self.router, catalog, self.cache,
                                     orphan_grace=serving.orphan_grace_seconds,
                                     on_deleted=self.targets.drop)
        self.desk = RequestDesk(self.registry, self.router, catalog, store,
                                missing_timeout=serving.hot_load_timeout_seconds,
                                on_unpublished=self.forget, full=self.full)
        self.supervisor = Supervisor(settings, self.registry, self.http,
                                     on_ready=self._replica_ready)
        self._tasks: list[asyncio.Task[None]] = []

    def _replica_ready(self, replica: Replica) -> None:
        self.reconciler.wake.set()  # refill a new or restarted server now

    @property
    def enabled(self) -> bool:
        return bool(self.registry.replicas)

    async def start(self) -> None:
        if not self.enabled:
            return
        self.supervisor.start()
        await self.supervisor.check_all()
        self._tasks = [
            asyncio.create_task(self.supervisor.run_forever(), name="serving-health"),
            asyncio.create_task(self.reconciler.run_forever(
                self.settings.serving.reconcile_interval_seconds), name="serving-reconcile"),
            asyncio.create_task(self.desk.run_forever(
                self.settings.serving.request_poll_seconds), name="serving-requests"),
            asyncio.create_task(self.full.run_forever(
                self.settings.serving.health_interval_seconds, self.catalog),
                name="serving-full-models"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self.desk.stop()
        await self.full.stop_all()
        await self.supervisor.stop()
        self.router.upstream.close()
        await self.http.aclose()

    async def forget(self, model: str) -> None:
        """A model was deleted (or its job ended without publishing it): unload it everywhere
        now (best effort; the reconciler catches anything missed)."""
        self.targets.drop(model)
        try:
            count = await self.router.unload_model(model)
            if count:
                log.info("unloaded deleted model %s (%d adapters)", model, count)
            if await self.full.stop_model(model):
                log.info("stopped the server of deleted model %s", model)
        except Exception:
            log.warning("could not unload deleted model %s", model, exc_info=True)

    def status(self) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.snapshot().items() if k not in ("url", "adapter_dir")}
                for r in self.registry.replicas]
