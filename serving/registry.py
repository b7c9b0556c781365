"""What every replica has loaded, as this process last saw it, plus LRU and in-flight counts.

An adapter is loaded into vLLM under an alias, `{model}@{version}`: a new version of a model is
a new alias, so requests already running keep the old weights while new requests go to the new
one (the proxy rewrites the alias back to the model's name in responses). Versions of one model
sort by age (see `serving.adapters`).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from serving.vllm import Listed, VllmClient

_VERSION = re.compile(r"^[0-9a-f]{12}-[0-9a-f]{8}$")


def make_alias(model: str, version: str) -> str:
    return f"{model}@{version}"


def split_alias(alias: str) -> tuple[str, str] | None:
    """`(model, version)` for an alias this plane made; None for any other adapter name."""
    model, sep, version = alias.rpartition("@")
    if not sep or not model or not _VERSION.match(version):
        return None
    return model, version


class ReplicaState(StrEnum):
    STARTING = "starting"  # a started server that has not answered yet
    READY = "ready"
    UNHEALTHY = "unhealthy"  # stopped answering; requests avoid it
    DOWN = "down"  # a started server that exited; being restarted


@dataclass
class Loaded:
    alias: str
    model: str
    version: str
    path: str
    loaded_at: float = field(default_factory=time.monotonic)
    # When the model was created (wall clock): how a model nobody has asked for yet ranks.
    created_at: float = 0.0
    inflight: int = 0


@dataclass
class Replica:
    id: str
    base_model: str
    url: str
    capacity: int
    client: VllmClient
    managed: bool = False  # started and supervised by this process
    adapter_dir: str = ""  # where the server reads the adapter cache; "" = the same path
    api_key: str = field(default="", repr=False)  # vLLM's bearer key ("" for none)
    state: ReplicaState = ReplicaState.STARTING
    pid: int | None = None
    restarts: int = 0
    failures: int = 0
    ready_since: float | None = None
    loaded: dict[str, Loaded] = field(default_factory=dict)
    inflight: int = 0
    _locks: dict[str, asyncio.Lock] = field(default_factory=lambda: defaultdict(asyncio.Lock))
    # Making room and loading happen one at a time per replica, so capacity holds.
    placement: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def healthy(self) -> bool:
        return self.state == ReplicaState.READY

    def lock(self, model: str) -> asyncio.Lock:
        """Serializes loads and unloads of one model on this replica."""
        return self._locks[model]

    def versions(self, model: str) -> list[Loaded]:
        """The loaded versions of `model`, newest first."""
        return sorted((e for e in self.loaded.values() if e.model == model),
                      key=lambda e: e.version, reverse=True)

    def server_path(self, local: Path, cache_root: Path) -> str:
        """`local` (inside the adapter cache) as this server sees it."""
        if not self.adapter_dir:
            return str(local)
        return str(Path(self.adapter_dir) / local.relative_to(cache_root))

    def sync(self, listed: Listed, asked_at: float) -> None:
        """Adopt what the server reports. Entries loaded after the listing was asked for are
        kept even if absent (the listing predates them)."""
        for alias, path in listed.adapters.items():
            if alias not in self.loaded:
                parsed = split_alias(alias)
                if parsed is None:
                    continue  # not ours: leave it alone
                self.loaded[alias] = Loaded(alias, parsed[0], parsed[1], path,
                                            loaded_at=asked_at)
        for alias in [a for a, e in self.loaded.items()
                      if a not in listed.adapters and e.loaded_at < asked_at]:
            del self.loaded[alias]

    def forget_all(self) -> None:
        self.loaded.clear()

    def snapshot(self) -> dict[str, object]:
        return {"id": self.id, "base_model": self.base_model, "url": self.url,
                "state": str(self.state), "managed": self.managed, "pid": self.pid,
                "restarts": self.restarts, "capacity": self.capacity,
                "adapter_dir": self.adapter_dir, "adapters_loaded": len(self.loaded),
                "inflight": self.inflight}


@dataclass
class Registry:
    replicas: list[Replica] = field(default_factory=list)
    # model -> when a request last used it (wall clock), across replicas
    last_used: dict[str, float] = field(default_factory=dict)
    # model -> the newest version this process knows of
    versions: dict[str, str] = field(default_factory=dict)
    # Models deleted while this process ran. A load decided before the delete (a reconcile
    # pass, an on-demand request) must not bring one back; model names are never reused.
    deleted: set[str] = field(default_factory=set)

    def priority(self, model: str, created_at: float) -> tuple[float, str]:
        """How much `model` deserves a slot: last used, or created if never used (ties broken
        by name). The router evicts the lowest and the reconciler keeps the highest: one
        order, so they never undo each other's work."""
        return max(self.last_used.get(model, 0.0), created_at), model

    def of_base(self, base_model: str) -> list[Replica]:
        return [r for r in self.replicas if r.base_model == base_model]

    def healthy(self, base_model: str) -> list[Replica]:
        return [r for r in self.replicas if r.base_model == base_model and r.healthy]

    def base_models(self) -> set[str]:
        return {r.base_model for r in self.replicas}

    def note_version(self, model: str, version: str) -> None:
        if version > self.versions.get(model, ""):
            self.versions[model] = version

    def learn_from(self, replica: Replica) -> None:
        """Versions a replica has loaded that are newer than what we knew (a worker's
        hot-load of a new version, seen on the next health check)."""
        for entry in replica.loaded.values():
            self.note_version(entry.model, entry.version)

    def loaded_versions(self) -> set[tuple[str, str]]:
        """Every `(model, version)` loaded on some replica."""
        return {(e.model, e.version) for r in self.replicas for e in r.loaded.values()}
