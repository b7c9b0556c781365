"""The request router: pick a healthy replica that has (or can load) the model, forward the
OpenAI request to it, and relay the answer. A full-weight model goes to its own server
(`serving.full_models`), started on demand.

Before forwarding: the request's caps and its organization's limits (`serving.limits`).
Non-streaming answers are passed through whole; streaming answers (Server-Sent Events) are
relayed chunk by chunk as vLLM writes them. The only changes to either are the model name (an
adapter is loaded under an alias, `{model}@{version}`, which is written back as `{model}`)
and the null members OpenAI's spec does not allow (`serving.nulls`). vLLM's errors are mapped
into OpenAI's error envelope.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec
from cachetools import TTLCache

from serving import metrics
from serving.adapters import AdapterCache, AdapterVersion, adapter_version
from serving.catalog import ADAPTER, FULL
from serving.errors import InvalidRequest, NoReplica
from serving.full_models import FullModels
from serving.limits import Admission, Permit, check_request, estimated_tokens
from serving.nulls import drop_nulls
from serving.registry import Loaded, Registry, Replica, ReplicaState, make_alias
from serving.upstream import UpstreamError, UpstreamPool, UpstreamResponse
from serving.vllm import ReplicaUnreachable
from tuneforge.errors import ApiError, not_found
from tuneforge.settings import InferenceLimits

log = logging.getLogger(__name__)

_ATTEMPTS = 3
_JSON = "application/json"


@dataclass(frozen=True)
class Target:
    """A model the caller may use: its name, its base model, and where its adapter (or its
    full weights) live in S3 (None for a base model)."""

    model: str
    base_model: str
    adapter_prefix: str | None = None
    created_at: float = 0.0
    # ADAPTER, or FULL: `adapter_prefix` holds full weights served by their own server.
    kind: str = ADAPTER


class TargetCache:
    """Which models an organization may use, remembered for `ttl` seconds, so a request does
    not need a database lookup; a deleted model is dropped at once (`drop`)."""

    def __init__(self, ttl: float, max_entries: int = 100_000) -> None:
        self._entries: TTLCache[tuple[str, str], Target] | None = (
            TTLCache(maxsize=max_entries, ttl=ttl) if ttl > 0 else None)

    def get(self, organization_id: str, model: str) -> Target | None:
        return self._entries.get((organization_id, model)) if self._entries is not None else None

    def put(self, organization_id: str, target: Target) -> None:
        if self._entries is not None:
            self._entries[(organization_id, target.model)] = target

    def drop(self, model: str) -> None:
        if self._entries is not None:
            for key in [k for k in self._entries if k[1] == model]:
                self._entries.pop(key, None)


@dataclass
class Lease:
    """A request's hold on a replica (and adapter): counted as in flight until released."""

    replica: Replica
    upstream: str  # the name vLLM knows the model by
    entry: Loaded | None
    _released: bool = False

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        self.replica.inflight -= 1
        if self.entry is not None:
            self.entry.inflight -= 1


@dataclass
class Proxied:
    status: int
    media_type: str
    body: bytes | None = None
    stream: AsyncIterator[bytes] | None = None
    headers: dict[str, str] = field(default_factory=dict)


class Renamer:
    """Writes an alias back as the model's name in vLLM's JSON output (and drops the nulls
    the spec does not allow)."""

    def __init__(self, alias: str, model: str) -> None:
        pairs = {(json.dumps(alias)[1:-1], json.dumps(model)[1:-1]),
                 (json.dumps(alias, ensure_ascii=False)[1:-1],
                  json.dumps(model, ensure_ascii=False)[1:-1])}
        self.pairs = [(a.encode(), m.encode()) for a, m in pairs]

    def __call__(self, data: bytes) -> bytes:
        for alias, model in self.pairs:
            data = data.replace(alias, model)
        return drop_nulls(data)


def upstream_error(status: int, body: bytes, rename: Callable[[bytes], bytes]) -> ApiError:
    """vLLM's error (`{"error": {message, type, param, code: <int>}}`) in OpenAI's shape."""
    message, param = "", None
    try:
        error = json.loads(rename(body)).get("error") or {}
        message = str(error.get("message") or "")
        param = error.get("param")
    except (ValueError, AttributeError):
        message = rename(body).decode(errors="replace")[:1000]
    if isinstance(param, str):
        param = param.removeprefix("body.") or None
    else:
        param = None
    if status in (400, 422):
        return ApiError(400, message or "Invalid request.", type="invalid_request_error",
                    param=param, code="invalid_value")
    if status == 404:
        return ApiError(404, message or "Not found.", type="invalid_request_error",
                    param=param, code="not_found")
    if status == 413:
        return ApiError(413, message or "Request too large.", type="invalid_request_error",
                    param=param, code="request_too_large")
    if status == 429:
        return ApiError(429, message or "Too many requests.", type="rate_limit_error",
                    code="rate_limit_exceeded")
    log.warning("inference server answered %s: %s", status, message[:500])
    return ApiError(500, "The inference server had an error while processing your "
                    "request." + (f" ({message[:300]})" if message else ""),
                    type="server_error", code="upstream_error")


class Router:
    def __init__(self, registry: Registry, store: Any, cache: AdapterCache,
                 http: httpx.AsyncClient, *, request_timeout: float = 600.0,
                 limits: InferenceLimits | None = None,
                 full: FullModels | None = None) -> None:
        self.registry = registry
        self.full = full  # full-weight models' own servers
        self.limits = limits or InferenceLimits()
        self.admission = Admission(self.limits)
        self.store = store
        self.cache = cache
        self.http = http
        self.upstream = UpstreamPool(timeout=request_timeout)
        self._turn = itertools.count()
        self._picked: dict[str, int] = {}

    # ---- placement ---------------------------------------------------------------------

    def _pick(self, replicas: list[Replica]) -> Replica:
        """The least busy replica; ties go round-robin."""
        chosen = min(replicas, key=lambda r: (r.inflight, self._picked.get(r.id, -1)))
        self._picked[chosen.id] = next(self._turn)
        return chosen

    async def acquire(self, target: Target) -> Lease:
        if target.kind == FULL and target.adapter_prefix is not None:
            if self.full is None:
                raise NoReplica(target.base_model, "full-weight models are not served here")
            replica, served = await self.full.acquire(target.model, target.base_model,
                                                      target.adapter_prefix)
            self.registry.last_used[target.model] = time.time()
            return Lease(replica, served, None)
        replicas = self.registry.healthy(target.base_model)
        if not replicas:
            states = [str(r.state) for r in self.registry.of_base(target.base_model)]
            raise NoReplica(target.base_model, f"servers {', '.join(states)}" if states
                            else "none is configured")
        if target.adapter_prefix is None:
            replica = self._pick(replicas)
            replica.inflight += 1
            return Lease(replica, target.model, None)
        entry: Loaded | None = None
        version = self.registry.versions.get(target.model)
        if version is not None:
            alias = make_alias(target.model, version)
            holding = [r for r in replicas if alias in r.loaded]
            if holding:
                replica = self._pick(holding)
                entry = replica.loaded[alias]
        if entry is None:  # load it where there is room, else on the least busy replica
            with_room = [r for r in replicas if len(r.loaded) < r.capacity]
            replica = self._pick(with_room or replicas)
            entry = await self.ensure_loaded(replica, target.model, target.adapter_prefix,
                                             created_at=target.created_at)
        replica.inflight += 1
        entry.inflight += 1
        self.registry.last_used[target.model] = time.time()
        return Lease(replica, entry.alias, entry)

    async def ensure_loaded(self, replica: Replica, model: str, prefix: str,
                            adapter: AdapterVersion | None = None,
                            created_at: float = 0.0) -> Loaded:
        """Load the newest version of `model` from S3 `prefix` on `replica` (fetching it into
        the cache and making room first) unless it is loaded already."""
        async with replica.lock(model):
            if model in self.registry.deleted:
                raise not_found("model", model, param="model")
            if adapter is None:
                adapter = await adapter_version(self.store, prefix)
            self.registry.note_version(model, adapter.version)
            alias = make_alias(model, adapter.version)
            entry = replica.loaded.get(alias)
            if entry is not None:
                return entry
            local = await self.cache.fetch(self.store, model, adapter)
            path = replica.server_path(local, self.cache.root)
            async with replica.placement:
                await self.make_room(replica, keep=model)
                started = time.perf_counter()
                try:
                    await replica.client.load(alias, path)
                except ReplicaUnreachable as exc:
                    metrics.adapter_loaded(replica.base_model, 0.0, ok=False)
                    raise NoReplica(replica.base_model, "the server stopped answering") from exc
                except Exception:
                    metrics.adapter_loaded(replica.base_model, 0.0, ok=False)
                    raise
                metrics.adapter_loaded(replica.base_model, time.perf_counter() - started,
                                       ok=True)
                entry = Loaded(alias, model, adapter.version, path, created_at=created_at)
                replica.loaded[alias] = entry
            log.info("loaded %s on %s", alias, replica.id)
            return entry

    async def make_room(self, replica: Replica, keep: str) -> None:
        """Unload least recently used adapters until one more fits (skipping any in use)."""
        while len(replica.loaded) >= replica.capacity:
            idle = [e for e in replica.loaded.values() if e.inflight == 0 and e.model != keep]
            if not idle:
                return
            victim = min(idle, key=lambda e: self.registry.priority(e.model, e.created_at))
            await self.unload(replica, victim)

    async def unload(self, replica: Replica, entry: Loaded) -> None:
        replica.loaded.pop(entry.alias, None)
        try:
            await replica.client.unload(entry.alias)
            log.info("unloaded %s from %s", entry.alias, replica.id)
        except ReplicaUnreachable:
            log.warning("could not unload %s from %s", entry.alias, replica.id)

    async def unload_model(self, model: str) -> int:
        """Unload every version of `model` from every replica (a deleted model). A load of
        it already under way finishes first (the replica's lock for the model) and is undone
        here; one that starts later is refused."""
        self.registry.deleted.add(model)
        self.registry.versions.pop(model, None)
        self.registry.last_used.pop(model, None)
        count = 0
        for replica in self.registry.replicas:
            async with replica.lock(model):
                for entry in replica.versions(model):
                    await self.unload(replica, entry)
                    count += 1
        return count

    def _forget(self, lease: Lease) -> None:
        """The server no longer has the adapter we routed to (a restart, another process
        evicted it, or a new version replaced it): drop what we believed."""
        if lease.entry is not None:
            lease.replica.loaded.pop(lease.entry.alias, None)
            if self.registry.versions.get(lease.entry.model) == lease.entry.version:
                del self.registry.versions[lease.entry.model]

    # ---- proxying ----------------------------------------------------------------------

    async def proxy(self, path: str, body: bytes,
                    resolve: Callable[[str], Awaitable[Target]], *,
                    organization_id: str = "") -> Proxied:
        """Forward an OpenAI inference request (`path` is `/v1/chat/completions` or
        `/v1/completions`); `resolve` checks that the caller may use the model. The request
        counts against `organization_id`'s limits until its answer has been relayed."""
        if len(body) > self.limits.max_request_bytes:
            raise ApiError(413, f"The request body is {len(body)} bytes; at most "
                               f"{self.limits.max_request_bytes} are allowed.",
                               type="invalid_request_error", code="request_too_large")
        try:
            payload = msgspec.json.decode(body)
        except msgspec.DecodeError as exc:
            raise InvalidRequest(f"The request body is not valid JSON: {exc}",
                                 code="invalid_json") from exc
        except RecursionError as exc:
            raise InvalidRequest("The request body is nested too deeply.",
                                 code="invalid_json") from exc
        if not isinstance(payload, dict):
            raise InvalidRequest("The request body must be a JSON object.")
        model = payload.get("model")
        if not isinstance(model, str) or not model:
            raise InvalidRequest("You must provide a model parameter.", param="model",
                                 code="missing_required_parameter")
        started = time.perf_counter()
        changed = check_request(path, payload, self.limits)
        target = await resolve(model)
        permit = self.admission.admit(organization_id,
                                      estimated_tokens(path, payload, len(body)))
        try:
            result = await self._attempts(path, body, payload, model, target, changed, permit,
                                          started)
        except BaseException:
            permit.release()
            raise
        result.headers = permit.headers
        return result

    async def _attempts(self, path: str, body: bytes, payload: dict[str, Any], model: str,
                        target: Target, changed: bool, permit: Permit,
                        started: float) -> Proxied:
        stream = payload.get("stream") is True
        last_error: Exception | None = None
        for _ in range(_ATTEMPTS):
            lease = await self.acquire(target)
            if lease.upstream == model:
                content = msgspec.json.encode(payload) if changed else body
                rename: Callable[[bytes], bytes] = drop_nulls
            else:
                content = msgspec.json.encode({**payload, "model": lease.upstream})
                rename = Renamer(lease.upstream, model)
            try:
                result = await self._forward(lease, path, content, stream, rename, permit,
                                             started)
            except ReplicaUnreachable as exc:
                lease.release()
                lease.replica.state = ReplicaState.UNHEALTHY  # the health check revives it
                last_error = exc
                continue
            except _Vanished:
                lease.release()
                self._forget(lease)
                continue
            except BaseException:
                lease.release()
                raise
            return result
        if isinstance(last_error, ReplicaUnreachable):
            raise NoReplica(target.base_model, "the servers stopped answering") from last_error
        raise NoReplica(target.base_model, f"could not place '{model}'")

    async def _forward(self, lease: Lease, path: str, content: bytes, stream: bool,
                       rename: Callable[[bytes], bytes], permit: Permit,
                       started: float) -> Proxied:
        try:
            response = await self.upstream.post(
                lease.replica.url, path, content,
                accept="text/event-stream" if stream else _JSON, api_key=lease.replica.api_key)
        except UpstreamError as exc:  # refused, reset, or closed before answering
            raise ReplicaUnreachable(str(exc)) from exc
        relayed = False
        try:
            if response.status >= 400:
                data = await response.read()
                if response.status == 404 and lease.entry is not None:
                    raise _Vanished()
                raise upstream_error(response.status, data, rename)
            if not stream or response.content_type != "text/event-stream":
                data = await response.read()
                lease.release()
                permit.release()
                metrics.answered(lease.replica.base_model, data)
                return Proxied(response.status, response.content_type, body=rename(data))
            relayed = True
            return Proxied(response.status, response.content_type,
                           stream=_Relay(response, lease, rename, permit,
                                         metrics.StreamMeter(lease.replica.base_model, started)))
        except UpstreamError as exc:
            raise ReplicaUnreachable(str(exc)) from exc
        finally:
            if not relayed:
                response.release()


class _Vanished(Exception):
    """vLLM answered 404 for an adapter alias we believed loaded."""


class _Relay:
    """vLLM's event stream as it arrives, rewritten (`rename`) a whole line at a time (a
    chunk boundary can fall inside an event; vLLM's chunks usually end with one). The replica
    lease and the organization's permit are released when the stream ends, fails, or is
    dropped unread (the client left before the first chunk: a generator's `finally` would
    never run then). Closing early closes the connection to vLLM, which aborts the request."""

    def __init__(self, response: UpstreamResponse, lease: Lease,
                 rename: Callable[[bytes], bytes], permit: Permit,
                 meter: metrics.StreamMeter | None = None) -> None:
        self._meter = meter
        self._response = response
        self._lease = lease
        self._rename = rename
        self._permit = permit
        self._chunks = response.chunks()
        self._pending = b""

    def __aiter__(self) -> _Relay:
        return self

    async def __anext__(self) -> bytes:
        data = await self._next()
        if self._meter is not None:
            self._meter.chunk(data)
        return data

    async def _next(self) -> bytes:
        try:
            while True:
                try:
                    chunk = await self._chunks.__anext__()
                except StopAsyncIteration:
                    if not self._pending:
                        raise
                    data, self._pending = self._pending, b""
                    return self._rename(data)
                if not self._pending and chunk.endswith(b"\n"):
                    return self._rename(chunk)
                self._pending += chunk
                cut = self._pending.rfind(b"\n")
                if cut >= 0:
                    ready, self._pending = self._pending[:cut + 1], self._pending[cut + 1:]
                    return self._rename(ready)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self._response.release()
        self._lease.release()
        self._permit.release()

    def __del__(self) -> None:
        self.close()
