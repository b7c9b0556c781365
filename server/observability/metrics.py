"""Prometheus metrics of the API process (`GET /metrics`, README "Operating").

- HTTP: `tuneforge_http_requests_total` and `tuneforge_http_request_duration_seconds` by
  method, route *template* (`/v1/fine_tuning/jobs/{job_id}`, never an id) and status, recorded
  by `MetricsMiddleware` for every request that matches a route.
- State read at scrape time (`refresh`): jobs by status (DB), the arq queue's depth and the
  age of its oldest entry (Redis), and the age of the oldest job waiting for a worker (DB).
- The serving plane's own metrics (adapter loads, proxied tokens, time to first token) live in
  `serving.metrics`, on the same default registry.

Only counts and durations: no organization, job, file or model id is ever a label.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import func, or_, select

from server.db.models import Job
from tuneforge.domain import JobStatus

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Message, Receive, Scope, Send

    from server.service.context import Context

log = logging.getLogger(__name__)

__all__ = ["CONTENT_TYPE_LATEST", "MetricsMiddleware", "exposition", "refresh", "wrap"]

# A scrape waits at most this long for each source (DB, Redis); a stale source reads as down.
SOURCE_TIMEOUT_SECONDS = 2.0
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    120.0, 300.0)
WAITING_STATUSES = (JobStatus.VALIDATING_FILES, JobStatus.QUEUED)
# Label values stay a small fixed set: a client cannot mint a series with a made-up method.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

HTTP_REQUESTS = Counter(
    "tuneforge_http_requests", "HTTP requests answered, by route template and status.",
    ["method", "route", "status"])
HTTP_LATENCY = Histogram(
    "tuneforge_http_request_duration_seconds",
    "Time from the request's arrival to the end of its response, by route template.",
    ["method", "route", "status"], buckets=_LATENCY_BUCKETS)
JOBS = Gauge("tuneforge_jobs", "Fine-tuning jobs by status (all organizations).", ["status"])
JOBS_WAITING_OLDEST_AGE = Gauge(
    "tuneforge_jobs_waiting_oldest_age_seconds",
    "Age of the oldest job waiting for a worker (validating_files or queued, no live lease); "
    "0 when none waits.")
QUEUE_DEPTH = Gauge("tuneforge_queue_depth", "Entries in the arq job queue (Redis).")
QUEUE_OLDEST_AGE = Gauge(
    "tuneforge_queue_oldest_age_seconds",
    "Age of the oldest entry in the arq job queue (Redis); 0 when it is empty.")
SOURCE_UP = Gauge(
    "tuneforge_metrics_source_up",
    "Whether the last scrape could read a source of the state metrics (db, redis).",
    ["source"])

_refresh_lock = asyncio.Lock()


class MetricsMiddleware:
    """Pure ASGI: counts each HTTP request and times it to the end of its response,
    labelled by the route template Litestar matched (`unmatched` for none)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception that escapes every handler

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("path_template") or "unmatched"
            method = scope.get("method", "")
            labels = (method if method in _METHODS else "OTHER", route, str(status))
            HTTP_REQUESTS.labels(*labels).inc()
            HTTP_LATENCY.labels(*labels).observe(time.perf_counter() - started)


async def _jobs_state(ctx: Context) -> None:
    now = int(time.time())
    async with ctx.sessions() as session:
        counts = dict((await session.execute(
            select(Job.status, func.count()).group_by(Job.status))).all())
        oldest = (await session.execute(
            select(func.min(Job.created_at)).where(
                Job.status.in_([s.value for s in WAITING_STATUSES]),
                or_(Job.lease_owner.is_(None), Job.lease_expires_at < now)))).scalar()
    for status in JobStatus:
        JOBS.labels(status.value).set(counts.pop(status.value, 0))
    for status, count in counts.items():  # a status this version does not know
        JOBS.labels(str(status)).set(count)
    JOBS_WAITING_OLDEST_AGE.set(max(0, now - oldest) if oldest is not None else 0)


async def _queue_state(ctx: Context) -> None:
    pool = await ctx.queue.pool()
    name = ctx.queue.queue_name
    depth = await pool.zcard(name)
    # arq scores entries by the time (ms) they become due: enqueue time, or a deferral's.
    first: list[Any] = await pool.zrange(name, 0, 0, withscores=True)
    QUEUE_DEPTH.set(depth)
    QUEUE_OLDEST_AGE.set(max(0.0, time.time() - first[0][1] / 1000) if first else 0.0)


async def refresh(ctx: Context) -> None:
    """Read the state metrics from the DB and Redis (bounded; a failing source is marked down
    in `tuneforge_metrics_source_up` and logged, and the scrape still answers)."""
    for source, read in (("db", _jobs_state), ("redis", _queue_state)):
        try:
            async with asyncio.timeout(SOURCE_TIMEOUT_SECONDS):
                await read(ctx)
        except Exception as exc:  # any failure: "could not read"
            log.warning("metrics: could not read %s (%s)", source, type(exc).__name__)
            SOURCE_UP.labels(source).set(0)
        else:
            SOURCE_UP.labels(source).set(1)


async def exposition(ctx: Context, registry: CollectorRegistry = REGISTRY) -> bytes:
    """The Prometheus text exposition, with the state metrics refreshed first."""
    async with _refresh_lock:
        await refresh(ctx)
        return generate_latest(registry)


def wrap(app: Any) -> None:
    """Install `MetricsMiddleware` around a Litestar app's whole ASGI handler, routing
    included, so that requests matching no route count too (as route `unmatched`)."""
    app.asgi_handler = MetricsMiddleware(app.asgi_handler)
