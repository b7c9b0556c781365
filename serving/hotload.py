"""Hot-load: make a just-trained adapter servable on every replica of its base model.

The worker calls `make_servable` when a job's training ends, before it marks the job
succeeded, and reports the time it returns as "model ... is ready". It runs in the worker's
process: it finds the replicas from the settings (attached servers) and from the state file of
the API process that started the embedded ones, fetches the adapter from S3 into the shared
adapter cache, loads it on every replica that answers, asks each for one token with it, and
then unloads older versions of the same model (requests already running on them finish on the
old weights; new ones get the new version).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from serving.adapters import AdapterCache, adapter_version
from serving.errors import AdapterRejected
from serving.keys import data_dir_key, server_key
from serving.registry import make_alias, split_alias
from serving.supervisor import read_state
from serving.vllm import ReplicaUnreachable, VllmClient
from tuneforge.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Endpoint:
    url: str
    adapter_dir: str
    api_key: str = field(default="", repr=False)


def cache_root(settings: Settings) -> Path:
    return settings.serving.adapter_cache_dir or settings.data_dir / "adapters"


def endpoints(settings: Settings, base_model: str) -> tuple[list[Endpoint], bool]:
    """The servers of `base_model` known right now, and whether any is configured at all
    (a started one may not have published its address yet)."""
    servers = [s for s in settings.inference_servers() if s.base_model == base_model]
    found = [Endpoint(s.url.rstrip("/"), s.adapter_dir, server_key(settings, s))
             for s in servers if s.url]
    if any(not s.url for s in servers):
        # Started by the API process: the configured key, else the data directory's.
        started = next((s for s in servers if not s.url), None)
        key = server_key(settings, started) if started is not None else data_dir_key(settings)
        found += [Endpoint(str(r["url"]), str(r.get("adapter_dir") or ""), key)
                  for r in read_state(settings)
                  if r.get("base_model") == base_model and r.get("managed") and r.get("url")]
    return found, bool(servers)


async def _reachable(http: httpx.AsyncClient, candidates: list[Endpoint]) -> list[Endpoint]:
    async def answers(endpoint: Endpoint) -> bool:
        try:
            await VllmClient(endpoint.url, http, api_key=endpoint.api_key).list(seconds=2.0)
            return True
        except ReplicaUnreachable:
            return False

    results = await asyncio.gather(*(answers(e) for e in candidates))
    return [e for e, ok in zip(candidates, results, strict=True) if ok]


async def make_servable(settings: Settings, store: Any, *, model_name: str, base_model: str,
                        adapter_prefix: str, wait_seconds: float | None = None) -> float | None:
    """Load the adapter under S3 `adapter_prefix` as `model_name` on every replica of
    `base_model` and return the seconds from this call until each of them answered a first
    token with it.

    Returns None when no server is configured for `base_model`, or none answered within
    `wait_seconds` (default `serving.hot_load_timeout_seconds`): the model then becomes servable
    when a server comes up (the API's reconciler loads it) or at its first request. Raises
    `serving.errors.AdapterMissing` if S3 holds no adapter there and
    `serving.errors.AdapterRejected` if vLLM refuses it (e.g. a rank above `max_lora_rank`).
    """
    started = time.monotonic()
    timeout = (settings.serving.hot_load_timeout_seconds if wait_seconds is None
               else wait_seconds)
    adapter_task = asyncio.ensure_future(adapter_version(store, adapter_prefix))
    async with httpx.AsyncClient(timeout=30.0) as http:
        while True:
            candidates, configured = endpoints(settings, base_model)
            if not configured:
                adapter_task.cancel()
                return None
            live = await _reachable(http, candidates) if candidates else []
            if live:
                break
            if time.monotonic() - started > timeout:
                adapter_task.cancel()
                log.warning("no inference server for %s answered within %.0fs; %s will load "
                            "when one does", base_model, timeout, model_name)
                return None
            await asyncio.sleep(0.5)
        adapter = await adapter_task
        cache = AdapterCache(cache_root(settings))
        local = await cache.fetch(store, model_name, adapter)
        alias = make_alias(model_name, adapter.version)

        async def load(endpoint: Endpoint) -> bool:
            client = VllmClient(endpoint.url, http, api_key=endpoint.api_key)
            path = (str(Path(endpoint.adapter_dir) / local.relative_to(cache.root))
                    if endpoint.adapter_dir else str(local))
            try:
                await client.load(alias, path)
                await client.first_token(alias)
            except ReplicaUnreachable:
                log.warning("%s stopped answering while loading %s", endpoint.url, alias)
                return False
            return True

        loaded = await asyncio.gather(*(load(e) for e in live))
        if not any(loaded):
            return None
        elapsed = time.monotonic() - started
        await asyncio.gather(*(_unload_older(http, e, model_name, adapter.version)
                               for e, ok in zip(live, loaded, strict=True) if ok))
    log.info("%s servable on %d replica(s) in %.3fs", model_name, sum(loaded), elapsed)
    return elapsed


async def _unload_older(http: httpx.AsyncClient, endpoint: Endpoint, model: str,
                        version: str) -> None:
    client = VllmClient(endpoint.url, http, api_key=endpoint.api_key)
    try:
        listed = await client.list()
        for name in listed.adapters:
            parsed = split_alias(name)
            if parsed is not None and parsed[0] == model and parsed[1] < version:
                await client.unload(name)
    except (ReplicaUnreachable, AdapterRejected):
        log.warning("could not unload older versions of %s from %s", model, endpoint.url)


__all__ = ["make_servable"]
