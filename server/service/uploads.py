"""Uploads: a large file sent in parts, assembled in S3 into a normal File on completion."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator

from sqlalchemy import select, update

from server.auth import Principal
from server.db.models import Upload, UploadPart
from server.service.context import Context
from server.service.files import (
    FileService,
    FineTuneFileCheck,
    check_filename,
    check_purpose,
    limited,
)
from server.service.objects import UploadObject, UploadPartObject, upload_object
from server.service.pagination import scoped
from server.storage import PART_SIZE, StorageUnavailable
from tuneforge.domain import FilePurpose, UploadStatus, new_id, now
from tuneforge.errors import conflict, invalid, not_found, too_large
from tuneforge.layout import file_key

log = logging.getLogger(__name__)

MIN_EXPIRY_SECONDS = 3600
MAX_EXPIRY_SECONDS = 30 * 24 * 3600


def part_key(upload_id: str, part_id: str) -> str:
    return f"uploads/{upload_id}/{part_id}"


class UploadService:
    def __init__(self, ctx: Context, files: FileService) -> None:
        self.ctx = ctx
        self.files = files
        self._next_multipart_sweep = 0.0  # time.monotonic()

    async def create(self, principal: Principal, *, filename: str, purpose: str, bytes: int,
                     mime_type: str, expires_after: int | None = None) -> UploadObject:
        purpose = check_purpose(purpose)
        check_filename(filename, purpose, param="filename")
        if bytes < 1:
            raise invalid("bytes must be a positive number of bytes.", param="bytes")
        if bytes > self.ctx.settings.max_upload_bytes:
            raise too_large(f"The upload exceeds the maximum size of "
                            f"{self.ctx.settings.max_upload_bytes} bytes.", param="bytes")
        expiry = expires_after or self.ctx.settings.upload_expiry_seconds
        if expires_after is not None and not MIN_EXPIRY_SECONDS <= expiry <= MAX_EXPIRY_SECONDS:
            raise invalid("expires_after.seconds must be between 3600 and 2592000.",
                          param="expires_after.seconds")
        created = now()
        row = Upload(id=new_id("upload_"), organization_id=principal.organization_id,
                     filename=filename, purpose=purpose, mime_type=mime_type, bytes=bytes,
                     status=UploadStatus.PENDING, created_at=created, expires_at=created + expiry)
        async with self.ctx.sessions() as session:
            session.add(row)
            await session.commit()
        return upload_object(row, None)

    async def _pending(self, principal: Principal, upload_id: str) -> Upload:
        row = await self._get(principal, upload_id)
        if row.status == UploadStatus.PENDING and row.expires_at <= now():
            await self._expire(row)
            row.status = UploadStatus.EXPIRED
        if row.status != UploadStatus.PENDING:
            raise conflict(f"Upload {upload_id} is {row.status}, not pending.",
                           code="upload_not_pending")
        return row

    async def _get(self, principal: Principal, upload_id: str) -> Upload:
        async with self.ctx.sessions() as session:
            row = (await session.execute(
                scoped(Upload, principal.organization_id).where(Upload.id == upload_id)
            )).scalar_one_or_none()
        if row is None:
            raise not_found("upload", upload_id, param="upload_id")
        return row

    async def add_part(self, principal: Principal, upload_id: str,
                       chunks: AsyncIterator[bytes]) -> UploadPartObject:
        await self._pending(principal, upload_id)
        part_id = new_id("part_")
        key = part_key(upload_id, part_id)
        with self.files.request_budget():
            size = await self.ctx.store.put_stream(
                key, limited(chunks, self.ctx.settings.max_upload_part_bytes, "data"))
        part = UploadPart(id=part_id, upload_id=upload_id, bytes=size)
        try:
            async with self.ctx.sessions() as session, session.begin():
                # Guarded: a part is recorded only while the upload is still pending.
                still_pending = (await session.execute(
                    select(Upload.id).where(Upload.id == upload_id,
                                            Upload.status == UploadStatus.PENDING)
                    .with_for_update()
                )).scalar_one_or_none()
                if still_pending is None:
                    raise conflict(f"Upload {upload_id} is no longer pending.",
                                   code="upload_not_pending")
                session.add(part)
        except BaseException:
            with contextlib.suppress(Exception), self.files.request_budget():
                await self.ctx.store.delete(key)
            raise
        return UploadPartObject(id=part.id, created_at=part.created_at, upload_id=upload_id)

    async def complete(self, principal: Principal, upload_id: str, part_ids: list[str],
                       md5: str | None = None) -> UploadObject:
        upload = await self._pending(principal, upload_id)
        if not part_ids:
            raise invalid("part_ids must list at least one part.", param="part_ids")
        if len(set(part_ids)) != len(part_ids):
            raise invalid("part_ids lists a part more than once.", param="part_ids")
        async with self.ctx.sessions() as session:
            parts = {p.id: p for p in (await session.execute(
                select(UploadPart).where(UploadPart.upload_id == upload_id)
            )).scalars()}
        unknown = [p for p in part_ids if p not in parts]
        if unknown:
            raise invalid(f"Unknown part id '{unknown[0]}' for upload {upload_id}.",
                          param="part_ids")
        total = sum(parts[p].bytes for p in part_ids)
        if total != upload.bytes:
            raise invalid(f"The parts add up to {total} bytes, but the upload was created with "
                          f"bytes={upload.bytes}.", param="part_ids", code="bytes_mismatch")

        file_id = new_id("file-")
        target = file_key(file_id)
        sources = [part_key(upload_id, p) for p in part_ids]
        try:
            with self.files.request_budget():
                await self._assemble(target, sources, [parts[p].bytes for p in part_ids])
                await self._verify(target, upload, md5)
            file_row = await self.files.record(principal.organization_id, file_id,
                                               upload.filename, upload.purpose, total)
        except BaseException:
            with contextlib.suppress(Exception), self.files.request_budget():
                await self.ctx.store.delete(target)
            raise
        async with self.ctx.sessions() as session, session.begin():
            done = await session.execute(
                update(Upload).where(Upload.id == upload_id,
                                     Upload.status == UploadStatus.PENDING)
                .values(status=UploadStatus.COMPLETED, file_id=file_id)
            )
            if done.rowcount != 1:
                raise conflict(f"Upload {upload_id} changed state while completing.",
                               code="upload_not_pending")
        await self._remove_parts(upload_id)
        upload.status, upload.file_id = UploadStatus.COMPLETED, file_id
        result = upload_object(upload, None)
        result.file = file_row
        return result

    async def _assemble(self, target: str, sources: list[str], sizes: list[int]) -> None:
        if len(sources) > 1 and all(size >= PART_SIZE for size in sizes[:-1]):
            await self.ctx.store.compose(target, sources)  # server-side copy, no bytes through us
            return

        async def concatenated() -> AsyncIterator[bytes]:
            for source in sources:
                async for chunk in self.ctx.store.iter_object(source):
                    yield chunk

        await self.ctx.store.put_stream(target, concatenated())

    async def _verify(self, target: str, upload: Upload, md5: str | None) -> None:
        fine_tune = upload.purpose == FilePurpose.FINE_TUNE
        checker = FineTuneFileCheck(param="file") if fine_tune else None
        if md5 is None and checker is None:
            return
        digest = hashlib.md5(usedforsecurity=False)
        async for chunk in self.ctx.store.iter_object(target):
            digest.update(chunk)
            if checker:
                checker.feed(chunk)
        if checker:
            checker.finish()
        if md5 is not None and digest.hexdigest() != md5.lower():
            raise invalid(f"md5 mismatch: the assembled file has md5 {digest.hexdigest()}.",
                          param="md5", code="md5_mismatch")

    async def cancel(self, principal: Principal, upload_id: str) -> UploadObject:
        row = await self._pending(principal, upload_id)
        async with self.ctx.sessions() as session, session.begin():
            done = await session.execute(
                update(Upload).where(Upload.id == upload_id,
                                     Upload.status == UploadStatus.PENDING)
                .values(status=UploadStatus.CANCELLED)
            )
            if done.rowcount != 1:
                raise conflict(f"Upload {upload_id} is no longer pending.",
                               code="upload_not_pending")
        await self._remove_parts(upload_id)
        row.status = UploadStatus.CANCELLED
        return upload_object(row, None)

    async def get(self, principal: Principal, upload_id: str) -> UploadObject:
        row = await self._get(principal, upload_id)
        file_row = await self.files.get_row(principal, row.file_id) if row.file_id else None
        return upload_object(row, file_row)

    async def expire_due(self) -> int:
        """Expire pending uploads past their expiry and remove their parts."""
        async with self.ctx.sessions() as session:
            due = list((await session.execute(
                select(Upload).where(Upload.status == UploadStatus.PENDING,
                                     Upload.expires_at <= now())
            )).scalars())
        for row in due:
            await self._expire(row)
        return len(due)

    async def _expire(self, row: Upload) -> None:
        async with self.ctx.sessions() as session, session.begin():
            await session.execute(
                update(Upload).where(Upload.id == row.id, Upload.status == UploadStatus.PENDING)
                .values(status=UploadStatus.EXPIRED)
            )
        await self._remove_parts(row.id)

    async def _remove_parts(self, upload_id: str) -> None:
        try:
            with self.files.request_budget():
                await self.ctx.store.delete_prefix(f"uploads/{upload_id}/")
        except Exception:
            log.warning("could not remove parts of upload %s", upload_id, exc_info=True)

    async def abort_stale_multipart_uploads(self) -> int:
        """Abort S3 multipart uploads that a killed upload, API process or worker left
        unfinished for `storage.multipart_max_age_seconds`; does the work at most once every
        `storage.multipart_sweep_interval_seconds` (the reconciler calls it every pass)."""
        storage = self.ctx.settings.storage
        if time.monotonic() < self._next_multipart_sweep:
            return 0
        self._next_multipart_sweep = time.monotonic() + storage.multipart_sweep_interval_seconds
        try:
            with self.files.request_budget():
                return await self.ctx.store.abort_stale_multipart_uploads(
                    storage.multipart_max_age_seconds)
        except StorageUnavailable:
            log.warning("S3 unavailable: stale multipart uploads not swept this time")
            self._next_multipart_sweep = 0.0  # try again on the next pass
            return 0

