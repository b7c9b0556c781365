"""The adapter cache: PEFT adapter directories fetched from S3 to local disk, atomically.

An adapter in S3 is a prefix (`jobs/{job_id}/adapter/` or `.../checkpoints/step-{n}/`) whose
top-level `adapter_*` files (config and weights) are what vLLM needs; anything else there
(optimizer state, tokenizer, README) is not fetched.

Each version of an adapter gets its own directory, `{cache}/{model}/{version}/`, written to
a temporary sibling first and then renamed into place, so vLLM never sees half a download and
two API processes can fill the same cache. The version is derived from the
objects' ETags and sizes, prefixed with their newest modification time, so versions of one
model sort by age.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving.errors import AdapterMissing

ADAPTER_FILE = re.compile(r"^adapter_[A-Za-z0-9_.-]+$")
_COMPLETE = ".complete"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class AdapterObject:
    key: str
    name: str
    size: int
    etag: str


@dataclass(frozen=True)
class AdapterVersion:
    prefix: str
    version: str
    objects: tuple[AdapterObject, ...]


def _normalize(prefix: str) -> str:
    return prefix.strip("/") + "/"


async def adapter_version(store: Any, prefix: str) -> AdapterVersion:
    """The adapter under `prefix` in S3 and its version; `AdapterMissing` if there is none.

    `store` is a `server.storage.ObjectStore` (its MinIO client and bucket are used)."""
    prefix = _normalize(prefix)
    objects, newest = await list_files(store, prefix, ADAPTER_FILE)
    if not any(o.name == "adapter_config.json" for o in objects):
        raise AdapterMissing(prefix)
    return versioned(prefix, objects, newest)


async def list_files(store: Any, prefix: str,
                     accept: re.Pattern[str]) -> tuple[list[AdapterObject], float]:
    """The top-level objects under `prefix` whose name matches `accept`, sorted by name, and
    the newest modification time among them."""
    prefix = _normalize(prefix)

    def listing() -> tuple[list[AdapterObject], float]:
        objects, newest = [], 0.0
        for obj in store.client.list_objects(store.bucket, prefix=prefix, recursive=False):
            name = (obj.object_name or "")[len(prefix):]
            if obj.is_dir or not accept.match(name):
                continue
            objects.append(AdapterObject(obj.object_name, name, obj.size or 0,
                                         (obj.etag or "").strip('"')))
            if obj.last_modified is not None:
                newest = max(newest, obj.last_modified.timestamp())
        return sorted(objects, key=lambda o: o.name), newest

    return await asyncio.to_thread(listing)


def versioned(prefix: str, objects: list[AdapterObject], newest: float) -> AdapterVersion:
    """`objects` with a version derived from their ETags and sizes, prefixed with the newest
    modification time (so versions of one model sort by age)."""
    digest = hashlib.sha256("\n".join(f"{o.name}:{o.size}:{o.etag}" for o in objects)
                            .encode()).hexdigest()
    version = f"{int(newest * 1000):012x}-{digest[:8]}"
    return AdapterVersion(prefix, version, tuple(objects))


def _make_tmp(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))


def _publish(tmp: Path, target: Path, prefix: str) -> None:
    """Rename the finished download into place (keeping another process's finished copy)."""
    (tmp / _COMPLETE).write_text(prefix + "\n")
    try:
        tmp.rename(target)
    except OSError:
        if (target / _COMPLETE).is_file():
            return
        shutil.rmtree(target, ignore_errors=True)  # a half-written leftover
        tmp.rename(target)


def safe_name(model: str) -> str:
    """A directory name for a model id (`ft:...` holds ':'), unique per id."""
    short = hashlib.sha256(model.encode()).hexdigest()[:8]
    return f"{_UNSAFE.sub('_', model)[:150]}-{short}"


class AdapterCache:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self._inflight: dict[Path, asyncio.Future[Path]] = {}

    def path(self, model: str, version: str) -> Path:
        return self.root / safe_name(model) / version

    async def fetch(self, store: Any, model: str, adapter: AdapterVersion) -> Path:
        """The local directory holding `adapter` (downloaded once; concurrent callers share
        one download)."""
        target = self.path(model, adapter.version)
        if (target / _COMPLETE).is_file():
            return target
        pending = self._inflight.get(target)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Path] = asyncio.get_running_loop().create_future()
        self._inflight[target] = future
        try:
            result = await self._download(store, adapter, target)
            future.set_result(result)
            return result
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody waits
            raise
        finally:
            del self._inflight[target]

    async def _download(self, store: Any, adapter: AdapterVersion, target: Path) -> Path:
        tmp = await asyncio.to_thread(_make_tmp, target)
        try:
            await asyncio.gather(*(
                asyncio.to_thread(store.client.fget_object, store.bucket, o.key,
                                  str(tmp / o.name))
                for o in adapter.objects))
            await asyncio.to_thread(_publish, tmp, target, adapter.prefix)
        finally:
            await asyncio.to_thread(shutil.rmtree, tmp, True)
        return target

    def collect(self, keep: set[tuple[str, str]], older_than: float) -> int:
        """Delete cached versions not in `keep` (`(model, version)` pairs) and untouched for
        `older_than` seconds; returns how many were removed."""
        if not self.root.is_dir():
            return 0
        kept = {(safe_name(model), version) for model, version in keep}
        removed, cutoff = 0, time.time() - older_than
        for model_dir in self.root.iterdir():
            if not model_dir.is_dir():
                continue
            for version_dir in model_dir.iterdir():
                if ((model_dir.name, version_dir.name) in kept
                        or version_dir.stat().st_mtime > cutoff):
                    continue
                shutil.rmtree(version_dir, ignore_errors=True)
                removed += 1
            if not any(model_dir.iterdir()):
                model_dir.rmdir()
        return removed
