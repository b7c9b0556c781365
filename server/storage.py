"""Object store over the MinIO SDK (sync: its calls run on the store's own thread pool).

Nothing that feeds a pool thread ever waits on one: a streamed upload is cut into 5 MiB parts
on the event loop and each part is one short call (the S3 multipart upload is driven here, not
by the SDK's reader loop), so a slow client holds no thread and no number of concurrent uploads
can starve the pool. At most `storage.max_concurrent_uploads` streams buffer parts at once.

Transient failures (S3 unreachable, connection dropped, 5xx) of idempotent calls are retried
with exponential backoff for `storage.retry_seconds` (`retry_budget` shortens that for an API
request), then raise `StorageUnavailable`, whose message names no host, port, bucket or key.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import certifi
import urllib3
from minio import Minio
from minio.commonconfig import ComposeSource
from minio.datatypes import Part
from minio.deleteobjects import DeleteObject
from minio.error import InvalidResponseError, S3Error, ServerError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_delay,
    wait_exponential,
    wait_random,
)
from urllib3.exceptions import MaxRetryError, ProtocolError
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from tuneforge.errors import ApiError
from tuneforge.settings import S3Settings, StorageSettings

PART_SIZE = 5 * 1024 * 1024  # S3's minimum multipart part size
CHUNK_SIZE = 1024 * 1024

log = logging.getLogger(__name__)

T = TypeVar("T")

_retry_budget: ContextVar[float | None] = ContextVar("tuneforge_s3_retry_budget", default=None)


class StorageUnavailable(ApiError):
    """S3 is unreachable or failing transiently: retry later. A 503 over REST (with
    Retry-After), UNAVAILABLE over gRPC. The message names no host, port, bucket or key."""

    def __init__(self, retry_after: int = 5) -> None:
        super().__init__(503, "The file storage is temporarily unavailable; retry later.",
                         type="server_error", code="service_unavailable",
                         headers={"Retry-After": str(retry_after)})
        self.retry_after = retry_after


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, S3Error):
        return exc.response is not None and exc.response.status >= 500
    if isinstance(exc, ServerError):
        return exc.status_code >= 500
    if isinstance(exc, InvalidResponseError):  # a non-XML 5xx, e.g. from a proxy
        return getattr(exc, "_code", 0) >= 500
    return isinstance(exc, MaxRetryError | ProtocolError | Urllib3Timeout | ConnectionError
                      | TimeoutError)


@contextlib.contextmanager
def retry_budget(seconds: float) -> Iterator[None]:
    """Within this block (this task), idempotent S3 calls retry for at most `seconds`."""
    token = _retry_budget.set(seconds)
    try:
        yield
    finally:
        _retry_budget.reset(token)


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int


def _http_client(settings: StorageSettings) -> urllib3.PoolManager:
    # The SDK's default, with a connection per pool thread and few quick urllib3 retries:
    # the backoff across an outage is ours (tenacity), bounded by the retry budget.
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=settings.connect_timeout_seconds,
                                read=settings.read_timeout_seconds),
        maxsize=settings.threads,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=urllib3.Retry(total=2, backoff_factor=0.1,
                              status_forcelist=[500, 502, 503, 504]),
    )


def _discard(future: asyncio.Future[Any]) -> None:
    """Cancel `future` if it still runs, else retrieve its outcome (no "never retrieved")."""
    if not future.cancel() and not future.cancelled():
        future.exception()


def _log_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    log.warning("S3 call failed (%s); retry %d", type(error).__name__, state.attempt_number)


class ObjectStore:
    def __init__(self, settings: S3Settings, storage: StorageSettings | None = None) -> None:
        self.settings = storage or StorageSettings()
        self.bucket = settings.bucket
        self.client = Minio(
            settings.endpoint,
            access_key=settings.access_key,
            secret_key=settings.secret_key.get_secret_value(),
            secure=settings.secure,
            region=settings.region,
            http_client=_http_client(self.settings),
        )
        self._pool = ThreadPoolExecutor(self.settings.threads, thread_name_prefix="s3")
        self._upload_slots = asyncio.Semaphore(self.settings.max_concurrent_uploads)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def unavailable(self) -> StorageUnavailable:
        return StorageUnavailable(self.settings.retry_after_seconds)

    async def _once(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`fn` on the pool, once; a transient failure becomes StorageUnavailable."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))
        except Exception as exc:
            if is_transient(exc):
                raise self.unavailable() from exc
            raise

    async def _retrying(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`fn` (idempotent) on the pool, retried with backoff on transient failures within
        the retry budget; then StorageUnavailable."""
        budget = _retry_budget.get()
        retrying = AsyncRetrying(
            retry=retry_if_exception(is_transient),
            stop=stop_after_delay(self.settings.retry_seconds if budget is None else budget),
            wait=wait_exponential(multiplier=0.25, max=8) + wait_random(0, 0.25),
            before_sleep=_log_retry,
            reraise=True,
        )
        loop = asyncio.get_running_loop()
        call = functools.partial(fn, *args, **kwargs)
        try:
            async for attempt in retrying:
                with attempt:
                    return await loop.run_in_executor(self._pool, call)
        except Exception as exc:
            if is_transient(exc):
                raise self.unavailable() from exc
            raise
        raise AssertionError("unreachable")

    async def ensure_bucket(self) -> None:
        if not await self._retrying(self.client.bucket_exists, self.bucket):
            try:
                await self._retrying(self.client.make_bucket, self.bucket)
            except S3Error as exc:  # another process created it first
                if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

    async def put_stream(self, key: str, chunks: AsyncIterator[bytes]) -> int:
        """Store `chunks` under `key`; returns the size. If the iterator raises (or the task is
        cancelled), the multipart upload is aborted, nothing is stored and the error
        propagates."""
        async with self._upload_slots:  # waiting here reads nothing of the body
            return await self._put_stream(key, chunks)

    async def _put_stream(self, key: str, chunks: AsyncIterator[bytes]) -> int:
        # The SDK's private multipart calls (minio is pinned): its own put_object would hold a
        # pool thread for the whole upload, blocked on our body.
        size = 0
        buffer = bytearray()
        upload_id: str | None = None
        parts: list[Part] = []
        sending: asyncio.Future[str] | None = None  # one part in flight while the next fills
        try:
            async for chunk in chunks:
                size += len(chunk)
                buffer += chunk
                while len(buffer) > PART_SIZE:  # never send the last part early
                    if upload_id is None:
                        upload_id = await self._retrying(
                            self.client._create_multipart_upload, self.bucket, key, {})
                    if sending is not None:
                        parts.append(Part(len(parts) + 1, await sending))
                    data = bytes(buffer[:PART_SIZE])
                    del buffer[:PART_SIZE]
                    sending = asyncio.ensure_future(self._retrying(
                        self.client._upload_part, self.bucket, key, data, None, upload_id,
                        len(parts) + 1))
            if upload_id is None:
                await self._retrying(self.client._put_object, self.bucket, key, bytes(buffer),
                                     {"Content-Type": "application/octet-stream"})
                return size
            if sending is not None:
                parts.append(Part(len(parts) + 1, await sending))
                sending = None
            parts.append(Part(len(parts) + 1, await self._retrying(
                self.client._upload_part, self.bucket, key, bytes(buffer), None, upload_id,
                len(parts) + 1)))
            await self._once(self.client._complete_multipart_upload, self.bucket, key,
                             upload_id, parts)
            upload_id = None
            return size
        finally:
            if sending is not None:
                _discard(sending)
            if upload_id is not None:
                await self._abort_quietly(key, upload_id)

    async def _abort_quietly(self, key: str, upload_id: str) -> None:
        """Abort a multipart upload once; if S3 cannot be reached the reconciler's sweep
        (`abort_stale_multipart_uploads`) removes it later."""
        try:
            await self._once(self.client._abort_multipart_upload, self.bucket, key, upload_id)
        except Exception:
            log.warning("could not abort the multipart upload of %s; the sweep will", key,
                        exc_info=True)

    async def abort_stale_multipart_uploads(self, older_than_seconds: float) -> int:
        """Abort every unfinished multipart upload in the bucket initiated more than
        `older_than_seconds` ago (left by a killed upload or worker); returns how many."""

        def sweep() -> int:
            cutoff = datetime.now(UTC) - timedelta(seconds=older_than_seconds)
            aborted = 0
            key_marker: str | None = None
            upload_marker: str | None = None
            while True:
                page = self.client._list_multipart_uploads(
                    self.bucket, key_marker=key_marker, upload_id_marker=upload_marker)
                for upload in page.uploads:
                    if (upload.upload_id and upload.initiated_time is not None
                            and upload.initiated_time <= cutoff):
                        try:
                            self.client._abort_multipart_upload(
                                self.bucket, upload.object_name, upload.upload_id)
                        except S3Error as exc:
                            if exc.code != "NoSuchUpload":
                                raise
                        log.info("aborted the stale multipart upload of %s (initiated %s)",
                                 upload.object_name, upload.initiated_time)
                        aborted += 1
                if not page.is_truncated or not page.uploads:
                    return aborted
                # The SDK does not parse NextUploadIdMarker; the page's last entry is it.
                key_marker = page.uploads[-1].object_name
                upload_marker = page.uploads[-1].upload_id

        return await self._retrying(sweep)

    async def list_multipart_uploads(self, prefix: str = "") -> list[str]:
        """Keys with an unfinished multipart upload under `prefix` (first 1000)."""
        page = await self._retrying(self.client._list_multipart_uploads, self.bucket,
                                    prefix=prefix)
        return [upload.object_name for upload in page.uploads]

    async def put_bytes(
        self, key: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> None:
        await self._retrying(lambda: self.client.put_object(
            self.bucket, key, io.BytesIO(data), len(data), content_type=content_type))

    async def get_bytes(self, key: str) -> bytes:
        def read() -> bytes:
            response = self.client.get_object(self.bucket, key)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

        return await self._retrying(read)

    async def open_stream(self, key: str,
                          chunk_size: int = CHUNK_SIZE) -> AsyncIterator[bytes]:
        """Open `key` now (so a missing object or an outage raises here, before a caller
        answers 200) and return an iterator over its bytes."""
        response = await self._retrying(self.client.get_object, self.bucket, key)
        return self._read_response(response, chunk_size)

    async def _read_response(self, response: Any, chunk_size: int) -> AsyncIterator[bytes]:
        try:
            stream = response.stream(chunk_size)
            while chunk := await self._once(next, stream, b""):
                yield chunk
        finally:
            response.close()
            response.release_conn()

    async def iter_object(self, key: str, chunk_size: int = CHUNK_SIZE) -> AsyncIterator[bytes]:
        async for chunk in await self.open_stream(key, chunk_size):
            yield chunk

    async def stat(self, key: str) -> ObjectInfo | None:
        try:
            info = await self._retrying(self.client.stat_object, self.bucket, key)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "NotFound"):
                return None
            raise
        return ObjectInfo(key=key, size=info.size or 0)

    async def compose(self, key: str, sources: list[str]) -> None:
        """Server-side concatenation; every source but the last must be >= 5 MiB."""
        await self._retrying(
            self.client.compose_object,
            self.bucket,
            key,
            [ComposeSource(self.bucket, source) for source in sources],
        )

    async def delete(self, key: str) -> None:
        await self._retrying(self.client.remove_object, self.bucket, key)

    async def delete_prefix(self, prefix: str) -> None:
        def remove_all() -> None:
            objects = self.client.list_objects(self.bucket, prefix=prefix, recursive=True)
            targets = (DeleteObject(o.object_name) for o in objects if o.object_name)
            errors = list(self.client.remove_objects(self.bucket, targets))
            if errors:
                raise RuntimeError(f"could not delete {len(errors)} objects")

        await self._retrying(remove_all)

    async def list_keys(self, prefix: str) -> list[ObjectInfo]:
        def list_all() -> list[ObjectInfo]:
            objects = self.client.list_objects(self.bucket, prefix=prefix, recursive=True)
            return [ObjectInfo(o.object_name or "", o.size or 0) for o in objects]

        return await self._retrying(list_all)

    async def upload_dir(self, local: Path, prefix: str) -> int:
        """Upload every file under `local` to `prefix/…`; returns the number of files."""
        loop = asyncio.get_running_loop()
        files = await loop.run_in_executor(
            self._pool, lambda: [p for p in sorted(local.rglob("*")) if p.is_file()])
        for path in files:
            key = f"{prefix.rstrip('/')}/{path.relative_to(local).as_posix()}"
            await self._retrying(self.client.fput_object, self.bucket, key, str(path))
        return len(files)

    async def download_prefix(self, prefix: str, local: Path) -> int:
        """Download every object under `prefix/` into `local`, keeping relative paths."""
        prefix = prefix.rstrip("/") + "/"
        count = 0
        for info in await self.list_keys(prefix):
            target = local / info.key[len(prefix):]
            await self._retrying(self.client.fget_object, self.bucket, info.key, str(target))
            count += 1
        return count

    async def download_file(self, key: str, target: Path) -> None:
        await self._retrying(self.client.fget_object, self.bucket, key, str(target))
