"""A job's live event stream, shared by gRPC `WatchEvents` and REST Server-Sent Events.

`watch` yields the job object first and again whenever it changes, and the job's events
oldest first (those after a cursor, then new ones as they are written), and ends once the
job has ended (succeeded, failed, cancelled) and every event it wrote has been sent. It
looks for changes every `poll_seconds` inside the server; clients never poll.

`sse` wraps it for REST: each event is one SSE message whose `id:` is the event's id (so a
client reconnecting with `Last-Event-ID` resumes after it), job snapshots are `event: job`
messages without an id, a comment (`: keep-alive`) goes out after `heartbeat_seconds` of
silence so proxies keep the connection open, and a final `event: end` tells a browser's
`EventSource` not to reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

from server.auth import Principal
from server.service.jobs import JobService
from server.service.objects import FineTuningJobObject, JobEventObject
from tuneforge.domain import TERMINAL_STATUSES

# Events fetched per query while replaying.
REPLAY_PAGE = 500
# How often the stream looks for new events and job changes (inside the server).
POLL_SECONDS = 0.5


@dataclass(frozen=True)
class JobUpdate:
    """The job object, sent first and whenever it changes."""

    job: FineTuningJobObject


@dataclass(frozen=True)
class EventUpdate:
    event: JobEventObject


Update = JobUpdate | EventUpdate


async def watch(jobs: JobService, principal: Principal, job_id: str, *,
                after: str | None = None,
                poll_seconds: float = POLL_SECONDS) -> AsyncIterator[Update]:
    """The job's updates until it has ended. Raises the 404 `ApiError` for a job the
    principal's organization does not own before yielding anything."""
    job = await jobs.get(principal, job_id)
    yield JobUpdate(job)
    cursor = after or None
    while True:
        # The terminal transition and its last event commit together: once a terminal
        # status has been seen, one more drain sends every event there will be.
        finished = job.status in TERMINAL_STATUSES
        while True:
            page = await jobs.list_events(principal, job_id, after=cursor, limit=REPLAY_PAGE,
                                          order="asc")
            for event in page.data:
                yield EventUpdate(event)
                cursor = event.id
            if not page.has_more:
                break
        if finished:
            return
        await asyncio.sleep(poll_seconds)
        latest = await jobs.get(principal, job_id)
        if latest != job:
            job = latest
            yield JobUpdate(job)


def sse_message(data: str, *, event: str | None = None, id: str | None = None) -> bytes:
    lines = []
    if id is not None:
        lines.append(f"id: {id}")
    if event is not None:
        lines.append(f"event: {event}")
    lines.extend(f"data: {line}" for line in data.splitlines() or [""])
    return ("\n".join(lines) + "\n\n").encode()


KEEP_ALIVE = b": keep-alive\n\n"
END = sse_message("[DONE]", event="end")


async def open_sse(jobs: JobService, principal: Principal, job_id: str, *,
                   after: str | None, heartbeat_seconds: float,
                   poll_seconds: float = POLL_SECONDS) -> AsyncIterator[bytes]:
    """The job's SSE stream. The job (404 for another organization's) and the cursor (400 for
    an unknown event id) are checked here, before the caller answers 200."""
    await jobs.list_events(principal, job_id, after=after, limit=1, order="asc")
    return sse(watch(jobs, principal, job_id, after=after, poll_seconds=poll_seconds),
               heartbeat_seconds)


async def sse(updates: AsyncIterator[Update], heartbeat_seconds: float) -> AsyncIterator[bytes]:
    """`updates` as Server-Sent Events, with a keep-alive comment after every
    `heartbeat_seconds` without a message."""
    iterator = aiter(updates)
    pending: asyncio.Task[Update] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(iterator))
            done, _ = await asyncio.wait({pending}, timeout=heartbeat_seconds)
            if not done:
                yield KEEP_ALIVE
                continue
            task, pending = pending, None
            try:
                update = task.result()
            except StopAsyncIteration:
                yield END
                return
            if isinstance(update, EventUpdate):
                yield sse_message(json.dumps(update.event.model_dump(mode="json")),
                                  id=update.event.id)
            else:
                yield sse_message(json.dumps(update.job.model_dump(mode="json")), event="job")
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
        with contextlib.suppress(Exception):
            await iterator.aclose()  # type: ignore[attr-defined]
