"""Makes each replica's loaded set equal the wanted set.

Wanted on a replica, up to its capacity: the servable fine-tuned models of its base model and
the checkpoints served on demand lately, most recently used first (a model's creation counts as
a use). So a restarted or new server gets its adapters back without anyone asking; with more
models than a server holds, the least recently used ones make way (and come back on demand at
their next request). A model a worker asked to serve (`serving.requests`) counts from the
request on, before its job reports succeeded, until the job ends cancelled or failed.
Unloaded: deleted models, models of jobs that ended unpublished, models outside the wanted set,
and older versions of a model whose newer version is loaded. An adapter the database knows
nothing of (not TuneForge's) is left alone for a grace period. Full-weight models are not
adapters: they have servers of their own (`serving.full_models`), started on demand.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from serving.adapters import AdapterCache
from serving.catalog import ADAPTER, Catalog, Servable, kind_of
from serving.registry import Registry, Replica
from serving.router import Router
from serving.vllm import ReplicaUnreachable
from tuneforge.errors import ApiError

log = logging.getLogger(__name__)

_COLLECT_EVERY = 60.0


class Reconciler:
    def __init__(self, registry: Registry, router: Router, catalog: Catalog,
                 cache: AdapterCache, *, orphan_grace: float = 600.0,
                 on_deleted: Callable[[str], None] | None = None) -> None:
        self.registry = registry
        self.router = router
        self.catalog = catalog
        self.cache = cache
        self.orphan_grace = orphan_grace
        self.on_deleted = on_deleted
        self.wake = asyncio.Event()
        self._first_seen: dict[str, float] = {}
        self._failed: dict[str, float] = {}  # model -> when loading it last failed
        # Models served on demand (checkpoints) that were loaded recently: they stay
        # candidates, so a restarted server gets them back too while they rank high enough.
        self._remembered: dict[str, Servable] = {}
        self._collected_at = time.monotonic()

    def _rank(self, model: Servable) -> tuple[float, str]:
        return self.registry.priority(model.id, float(model.created_at))

    async def reconcile_once(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        now = time.monotonic()
        replicas = [r for r in self.registry.replicas if r.healthy]
        loaded_models = {e.model for r in replicas for e in r.loaded.values()}
        asked = loaded_models | set(self._remembered)
        states = await self.catalog.servable_states(asked) if asked else {}
        for name in [n for n in self._remembered if states.get(n) is None]:
            del self._remembered[name]  # deleted, or gone (an old checkpoint removed)
        wanted_by_base: dict[str, list[Servable]] = {}
        for base in {r.base_model for r in replicas}:
            capacity = max(r.capacity for r in replicas if r.base_model == base)
            wanted_by_base[base] = list(await self.catalog.servable_models(
                base, limit=capacity * 4 + 64))
        for name in list(self._first_seen):
            if name not in loaded_models:
                del self._first_seen[name]
        for replica in replicas:
            await self._reconcile(replica, wanted_by_base[replica.base_model], states, now,
                                  counts)
        if now - self._collected_at > _COLLECT_EVERY:
            self._collected_at = now
            collected = await asyncio.to_thread(
                self.cache.collect, self.registry.loaded_versions(), self.orphan_grace)
            if collected:
                counts["collected"] += collected
        return counts

    async def _reconcile(self, replica: Replica, servable: list[Servable],
                         states: dict[str, Any], now: float, counts: Counter[str]) -> None:
        # Models on the replica: servable (known), deleted (None) or unknown (missing).
        orphans: set[str] = set()
        # Full-weight models have servers of their own (`serving.full_models`).
        candidates: dict[str, Servable] = {m.id: m for m in servable
                                           if kind_of(m) == ADAPTER
                                           and m.id not in self.registry.deleted}
        for name, model in self._remembered.items():
            if model.base_model == replica.base_model:
                candidates.setdefault(name, model)
        for entry in list(replica.loaded.values()):
            if entry.model not in states:
                first = self._first_seen.setdefault(entry.model, now)
                if now - first < self.orphan_grace:
                    orphans.add(entry.model)
                    continue
                log.info("unloading %s: no such model in the database", entry.alias)
            elif states[entry.model] is None:
                log.info("unloading %s: the model was deleted", entry.alias)
                if self.on_deleted is not None:
                    self.on_deleted(entry.model)
            else:
                entry.created_at = float(states[entry.model].created_at)
                if entry.model not in candidates:
                    self._remembered[entry.model] = states[entry.model]
                candidates.setdefault(entry.model, states[entry.model])
                continue
            await self.router.unload(replica, entry)
            counts["unloaded"] += 1
        room = max(0, replica.capacity - len(orphans))
        ranked = sorted(candidates.values(), key=self._rank, reverse=True)
        wanted = {m.id: m for m in ranked[:room]}
        for model in ranked[replica.capacity * 2:]:
            self._remembered.pop(model.id, None)
        for model in {e.model for e in replica.loaded.values()}:
            versions = replica.versions(model)
            newest = self.registry.versions.get(model, versions[0].version)
            for entry in versions:
                stale = entry.version < newest or entry is not versions[0]
                unwanted = model not in wanted and model not in orphans
                if (stale or unwanted) and entry.inflight == 0:
                    await self.router.unload(replica, entry)
                    counts["unloaded"] += 1
        for model in wanted.values():
            newest = self.registry.versions.get(model.id)
            if any(newest is None or e.version >= newest for e in replica.versions(model.id)):
                continue
            if now - self._failed.get(model.id, -1e9) < 30.0 or model.adapter_prefix is None:
                continue
            try:
                await self.router.ensure_loaded(replica, model.id, model.adapter_prefix,
                                                created_at=float(model.created_at))
                counts["loaded"] += 1
            except ReplicaUnreachable:
                return
            except ApiError as exc:
                self._failed[model.id] = now
                log.warning("could not load %s on %s: %s", model.id, replica.id, exc.message)

    async def run_forever(self, interval: float) -> None:
        while True:
            try:
                counts = await self.reconcile_once()
                if counts:
                    log.info("serving reconciled: %s", dict(counts))
            except Exception:
                log.warning("serving reconcile pass failed; retrying", exc_info=True)
            try:
                await asyncio.wait_for(self.wake.wait(), interval)
            except TimeoutError:
                pass
            self.wake.clear()
