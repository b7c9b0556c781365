"""Readiness of the API process's dependencies (`GET /readyz`): the database, Redis, object
storage and, where inference servers are configured, the serving plane.

Each check is bounded by `CHECK_TIMEOUT_SECONDS` and all run at once. A failure is reported by
the dependency's name only: never a host, port, bucket, URL or credential (the reason goes
to the log).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

if TYPE_CHECKING:
    from server.service.context import Context

log = logging.getLogger(__name__)

CHECK_TIMEOUT_SECONDS = 3.0


async def _database(ctx: Context) -> None:
    async with ctx.sessions() as session:
        await session.execute(text("SELECT 1"))


async def _redis(ctx: Context) -> None:
    pool = await ctx.queue.pool()
    await pool.ping()


async def _storage(ctx: Context) -> None:
    store = ctx.store
    # One attempt on the store's own pool, no retry budget: the store as it is now.
    exists = await store._once(store.client.bucket_exists, store.bucket)
    if not exists:
        raise RuntimeError("the bucket does not exist")


def _serving(plane: Any) -> Callable[[Context], Awaitable[None]]:
    async def check(ctx: Context) -> None:
        if not any(replica.healthy for replica in plane.registry.replicas):
            raise RuntimeError("no inference server is ready")
    return check


async def _run(name: str, check: Callable[[Context], Awaitable[None]], ctx: Context) -> bool:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
            await check(ctx)
    except Exception as exc:  # any failure: "not ready"
        log.warning("readiness: %s is not ready (%s: %s)", name, type(exc).__name__, exc)
        return False
    return True


async def check_dependencies(ctx: Context, serving_plane: Any = None) -> dict[str, bool]:
    """`{dependency: ready}` for database, redis, storage and (with inference servers
    configured) serving."""
    checks: dict[str, Callable[[Context], Awaitable[None]]] = {
        "database": _database, "redis": _redis, "storage": _storage}
    if serving_plane is not None and getattr(serving_plane, "enabled", False):
        checks["serving"] = _serving(serving_plane)
    results = await asyncio.gather(*(_run(name, check, ctx) for name, check in checks.items()))
    return dict(zip(checks, results, strict=True))
