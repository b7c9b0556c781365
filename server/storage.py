"""Object store over the MinIO SDK (sync; every call runs in a worker thread).

Streams go through a bounded queue between the event loop and the SDK's thread, so an upload
of any size holds only a few parts in memory.
"""

from __future__ import annotations

import asyncio
import io
import queue
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from minio import Minio
from minio.commonconfig import ComposeSource
from minio.deleteobjects import DeleteObject
from minio.error import S3Error

from tuneforge.settings import S3Settings

PART_SIZE = 5 * 1024 * 1024  # S3's minimum multipart part size
CHUNK_SIZE = 1024 * 1024
_QUEUE_DEPTH = 4

T = TypeVar("T")


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int


class _End:
    """Queue sentinel: the producer finished (or failed with `error`)."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


class _QueueReader(io.RawIOBase):
    """A blocking file-like reader over chunks that the event loop puts into a queue."""

    def __init__(self, chunks: queue.Queue[bytes | _End]) -> None:
        self._chunks = chunks
        self._buffer = bytearray()
        self._done = False

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while not self._done and (size < 0 or len(self._buffer) < size):
            item = self._chunks.get()
            if isinstance(item, _End):
                self._done = True
                if item.error is not None:
                    raise item.error
                break
            self._buffer += item
        if size < 0:
            size = len(self._buffer)
        out = bytes(self._buffer[:size])
        del self._buffer[:size]
        return out


class ObjectStore:
    def __init__(self, settings: S3Settings) -> None:
        self.bucket = settings.bucket
        self.client = Minio(
            settings.endpoint,
            access_key=settings.access_key,
            secret_key=settings.secret_key.get_secret_value(),
            secure=settings.secure,
            region=settings.region,
        )

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def ensure_bucket(self) -> None:
        if not await self._run(self.client.bucket_exists, self.bucket):
            try:
                await self._run(self.client.make_bucket, self.bucket)
            except S3Error as exc:  # another process created it first
                if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

    async def put_stream(self, key: str, chunks: AsyncIterator[bytes]) -> int:
        """Store `chunks` under `key`; returns the size. If the iterator raises, nothing is
        left in the bucket (the SDK aborts its multipart upload) and the error propagates."""
        pipe: queue.Queue[bytes | _End] = queue.Queue(maxsize=_QUEUE_DEPTH)
        reader = _QueueReader(pipe)
        upload = asyncio.ensure_future(
            self._run(self.client.put_object, self.bucket, key, reader, -1, part_size=PART_SIZE)
        )
        size = 0
        batch = bytearray()
        try:
            async for chunk in chunks:
                size += len(chunk)
                batch += chunk
                if len(batch) >= CHUNK_SIZE:
                    await self._feed(pipe, bytes(batch), upload)
                    batch.clear()
            if batch:
                await self._feed(pipe, bytes(batch), upload)
            await self._feed(pipe, _End(), upload)
        except BaseException as exc:
            if not upload.done():
                await asyncio.to_thread(pipe.put, _End(_Aborted(str(exc))))
            await asyncio.gather(upload, return_exceptions=True)
            await self.delete(key)
            raise
        await upload
        return size

    async def _feed(self, pipe: queue.Queue[bytes | _End], item: bytes | _End,
                    upload: asyncio.Future[Any]) -> None:
        if upload.done():  # the SDK failed early: surface its error instead of blocking
            await upload
        await asyncio.to_thread(pipe.put, item)

    async def put_bytes(
        self, key: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> None:
        await self._run(
            self.client.put_object, self.bucket, key, io.BytesIO(data), len(data),
            content_type=content_type,
        )

    async def get_bytes(self, key: str) -> bytes:
        def read() -> bytes:
            response = self.client.get_object(self.bucket, key)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

        return await self._run(read)

    async def iter_object(self, key: str, chunk_size: int = CHUNK_SIZE) -> AsyncIterator[bytes]:
        response = await self._run(self.client.get_object, self.bucket, key)
        try:
            stream = response.stream(chunk_size)
            while chunk := await self._run(next, stream, b""):
                yield chunk
        finally:
            response.close()
            response.release_conn()

    async def stat(self, key: str) -> ObjectInfo | None:
        try:
            info = await self._run(self.client.stat_object, self.bucket, key)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "NotFound"):
                return None
            raise
        return ObjectInfo(key=key, size=info.size or 0)

    async def compose(self, key: str, sources: list[str]) -> None:
        """Server-side concatenation; every source but the last must be >= 5 MiB."""
        await self._run(
            self.client.compose_object,
            self.bucket,
            key,
            [ComposeSource(self.bucket, source) for source in sources],
        )

    async def delete(self, key: str) -> None:
        await self._run(self.client.remove_object, self.bucket, key)

    async def delete_prefix(self, prefix: str) -> None:
        def remove_all() -> None:
            objects = self.client.list_objects(self.bucket, prefix=prefix, recursive=True)
            targets = (DeleteObject(o.object_name) for o in objects if o.object_name)
            errors = list(self.client.remove_objects(self.bucket, targets))
            if errors:
                raise RuntimeError(f"could not delete {len(errors)} objects under {prefix}")

        await self._run(remove_all)

    async def list_keys(self, prefix: str) -> list[ObjectInfo]:
        def list_all() -> list[ObjectInfo]:
            objects = self.client.list_objects(self.bucket, prefix=prefix, recursive=True)
            return [ObjectInfo(o.object_name or "", o.size or 0) for o in objects]

        return await self._run(list_all)


    async def upload_dir(self, local: Path, prefix: str) -> int:
        """Upload every file under `local` to `prefix/…`; returns the number of files."""
        files = await self._run(lambda: [p for p in sorted(local.rglob("*")) if p.is_file()])
        for path in files:
            key = f"{prefix.rstrip('/')}/{path.relative_to(local).as_posix()}"
            await self._run(self.client.fput_object, self.bucket, key, str(path))
        return len(files)

    async def download_prefix(self, prefix: str, local: Path) -> int:
        """Download every object under `prefix/` into `local`, keeping relative paths."""
        prefix = prefix.rstrip("/") + "/"
        count = 0
        for info in await self.list_keys(prefix):
            target = local / info.key[len(prefix):]
            await self._run(self.client.fget_object, self.bucket, info.key, str(target))
            count += 1
        return count

    async def download_file(self, key: str, target: Path) -> None:
        await self._run(self.client.fget_object, self.bucket, key, str(target))


class _Aborted(Exception):
    """Raised inside the SDK's reader so it abandons (and aborts) a multipart upload."""
