"""The writes a training run hands off so that its training thread never waits on them.

Two ordered lanes, each drained by one task on the event loop: records (events, progress:
small DB writes) and uploads (a checkpoint's S3 upload and its DB record). The training
thread only enqueues. Uploads are bounded: when `max_uploads` are pending (one running, the
rest waiting), the training thread waits for a slot, so a slow store cannot pile checkpoints
up on disk. The first write that fails stops both lanes (what is queued behind it is dropped)
and is reported through `on_failure`; `settle` waits for every write handed over so far, and
`raise_failure` re-raises the failure on the caller's side.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

Write = Callable[[], Awaitable[None]]
_SLOT_POLL_SECONDS = 0.2


class BackgroundWrites:
    def __init__(self, loop: asyncio.AbstractEventLoop, *,
                 on_failure: Callable[[BaseException], None], max_uploads: int = 2) -> None:
        self.loop = loop
        self.on_failure = on_failure
        self.failure: BaseException | None = None
        self._records: asyncio.Queue[Write | None] = asyncio.Queue()
        self._uploads: asyncio.Queue[Write | None] = asyncio.Queue()
        self._upload_slots = threading.BoundedSemaphore(max_uploads)
        self._closed = False
        self._lanes = [loop.create_task(self._drain(self._records, holds_slot=False)),
                       loop.create_task(self._drain(self._uploads, holds_slot=True))]

    # ---- the training thread's side -------------------------------------------------------

    def record(self, write: Write) -> None:
        """Queue a small write behind every earlier one; returns at once."""
        if self.failure is None and not self._closed:
            self.loop.call_soon_threadsafe(self._records.put_nowait, write)

    def upload(self, write: Write) -> bool:
        """Queue an upload behind every earlier one; waits only while `max_uploads` are
        pending. Returns False when it was not queued (the writes failed or were closed):
        the caller still owns what the upload would have taken over."""
        while not self._upload_slots.acquire(timeout=_SLOT_POLL_SECONDS):
            if self.failure is not None or self._closed:
                return False
        if self.failure is not None or self._closed:
            self._upload_slots.release()
            return False
        self.loop.call_soon_threadsafe(self._uploads.put_nowait, write)
        return True

    # ---- the event loop's side -------------------------------------------------------------

    async def settle(self) -> None:
        """Wait until every write handed over so far has run, or was dropped after a failure.
        (A hand-over from the training thread is queued before that thread's result reaches
        the loop, so awaiting its end and then this covers all of its writes.)"""
        await self._records.join()
        await self._uploads.join()

    def raise_failure(self) -> None:
        if self.failure is not None:
            raise self.failure

    async def close(self) -> None:
        """Settle, then stop the lanes."""
        await self.settle()
        self._closed = True
        for queue in (self._records, self._uploads):
            queue.put_nowait(None)
        await asyncio.gather(*self._lanes, return_exceptions=True)

    async def _drain(self, queue: asyncio.Queue[Write | None], *, holds_slot: bool) -> None:
        while True:
            write = await queue.get()
            try:
                if write is None:
                    return
                if self.failure is None:
                    await write()
            except Exception as exc:
                self._fail(exc)
            finally:
                if holds_slot and write is not None:
                    self._upload_slots.release()
                queue.task_done()

    def _fail(self, exc: BaseException) -> None:
        if self.failure is not None:
            return
        self.failure = exc
        try:
            self.on_failure(exc)
        except Exception:
            log.exception("on_failure raised")
