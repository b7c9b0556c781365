"""Files: stream uploads into S3, list, retrieve, download, delete."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from sqlalchemy import delete, select

from server.auth import Principal
from server.db.models import File, Job
from server.service.context import Context
from server.service.objects import FileDeleted, FileObject, ListPage, file_object, page
from server.service.pagination import Order, check_limit, fetch_page, scoped
from server.storage import retry_budget
from tuneforge.domain import ACTIVE_STATUSES, UPLOADABLE_PURPOSES, FilePurpose, JobStatus, new_id
from tuneforge.errors import ApiError, conflict, invalid, not_found, too_large
from tuneforge.jsonl import JsonlStream, LineError
from tuneforge.layout import file_key


def check_purpose(purpose: str | None) -> str:
    if purpose not in UPLOADABLE_PURPOSES:
        allowed = ", ".join(sorted(UPLOADABLE_PURPOSES))
        raise invalid(f"Invalid purpose {purpose!r}: expected one of {allowed}.",
                      param="purpose", code="invalid_purpose")
    return purpose


def check_filename(filename: str | None, purpose: str, param: str = "file") -> str:
    if not filename:
        raise invalid("The file has no filename.", param=param)
    if purpose == FilePurpose.FINE_TUNE and not filename.lower().endswith(".jsonl"):
        raise invalid(
            f"Invalid file format for fine-tuning: '{filename}' must be a .jsonl file.",
            param=param, code="invalid_file_format",
        )
    return filename


class FineTuneFileCheck:
    """The line rules of `tuneforge.jsonl` (the worker applies the same ones) over a
    fine-tune file's bytes as they arrive, as the API's errors. The shape of each example is
    checked by the worker, during `validating_files`, as OpenAI does."""

    def __init__(self, param: str = "file") -> None:
        self.param = param
        self._stream = JsonlStream()

    def feed(self, chunk: bytes) -> None:
        try:
            self._stream.feed(chunk)
        except LineError as exc:
            raise self._refused(exc) from None

    def finish(self) -> None:
        try:
            self._stream.finish()
        except LineError as exc:
            raise self._refused(exc) from None
        if self._stream.examples == 0:
            raise invalid("The file is empty: expected JSON Lines, one object per line.",
                          param=self.param, code="invalid_file_format")

    def _refused(self, exc: LineError) -> ApiError:
        return invalid(f"Invalid file format for fine-tuning: {exc.message}",
                       param=self.param, code="invalid_file_format")


async def checked(chunks: AsyncIterator[bytes], check: FineTuneFileCheck
                  ) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        check.feed(chunk)
        yield chunk
    check.finish()


async def limited(chunks: AsyncIterator[bytes], limit: int, param: str) -> AsyncIterator[bytes]:
    total = 0
    async for chunk in chunks:
        total += len(chunk)
        if total > limit:
            raise too_large(f"The file exceeds the maximum size of {limit} bytes.", param=param)
        yield chunk


class FileService:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def request_budget(self) -> contextlib.AbstractContextManager[None]:
        """S3 calls made for an API request retry only briefly: a longer outage is a 503 with
        Retry-After, not a hung request."""
        return retry_budget(self.ctx.settings.storage.request_retry_seconds)

    async def create(
        self,
        principal: Principal,
        filename: str | None,
        purpose: str | None,
        chunks: AsyncIterator[bytes],
    ) -> FileObject:
        purpose = check_purpose(purpose)
        filename = check_filename(filename, purpose)
        stream = limited(chunks, self.ctx.settings.max_upload_bytes, "file")
        if purpose == FilePurpose.FINE_TUNE:
            stream = checked(stream, FineTuneFileCheck(param="file"))
        file_id = new_id("file-")
        with self.request_budget():
            size = await self.ctx.store.put_stream(file_key(file_id), stream)
        return await self.record(principal.organization_id, file_id, filename, purpose, size)

    async def record(self, organization_id: str, file_id: str, filename: str, purpose: str,
                     size: int) -> FileObject:
        """Insert the row for an object already in S3; on failure the object is removed."""
        row = File(id=file_id, organization_id=organization_id, filename=filename,
                   purpose=purpose, bytes=size, status="processed")
        try:
            async with self.ctx.sessions() as session:
                session.add(row)
                await session.commit()
        except BaseException:
            with contextlib.suppress(Exception), self.request_budget():
                await self.ctx.store.delete(file_key(file_id))
            raise
        return file_object(row)

    async def list(self, principal: Principal, *, after: str | None = None, limit: int = 10000,
                   order: Order = "desc", purpose: str | None = None) -> ListPage[FileObject]:
        check_limit(limit, 10000)
        stmt = scoped(File, principal.organization_id)
        if purpose:
            stmt = stmt.where(File.purpose == purpose)
        async with self.ctx.sessions() as session:
            rows, has_more = await fetch_page(session, stmt, File, after=after, limit=limit,
                                              order=order)
        return ListPage[FileObject](**page([file_object(r) for r in rows], has_more))

    async def get_row(self, principal: Principal, file_id: str) -> File:
        async with self.ctx.sessions() as session:
            row = (await session.execute(
                scoped(File, principal.organization_id).where(File.id == file_id)
            )).scalar_one_or_none()
        if row is None:
            raise not_found("file", file_id, param="file_id")
        return row

    async def get(self, principal: Principal, file_id: str) -> FileObject:
        return file_object(await self.get_row(principal, file_id))

    async def content(
        self, principal: Principal, file_id: str
    ) -> tuple[File, AsyncIterator[bytes]]:
        row = await self.get_row(principal, file_id)
        with self.request_budget():  # opened now: an outage is a 503, not a cut-off 200
            return row, await self.ctx.store.open_stream(file_key(row.id))

    async def delete(self, principal: Principal, file_id: str) -> FileDeleted:
        async with self.ctx.sessions() as session, session.begin():
            row = (await session.execute(
                scoped(File, principal.organization_id).where(File.id == file_id)
            )).scalar_one_or_none()
            if row is None:
                raise not_found("file", file_id, param="file_id")
            in_use = (await session.execute(
                select(Job.id).where(
                    Job.organization_id == principal.organization_id,
                    Job.status.in_([s.value for s in (*ACTIVE_STATUSES, JobStatus.PAUSED)]),
                    (Job.training_file == file_id) | (Job.validation_file == file_id),
                ).limit(1)
            )).scalar_one_or_none()
            if in_use:
                raise conflict(f"File {file_id} is used by fine-tuning job {in_use}, which has "
                               "not finished; cancel the job or wait for it to end first.",
                               code="file_in_use")
            # The object first: if S3 is down the request fails (503) and the row stays, so
            # the delete can be retried; deleting a missing object succeeds.
            with self.request_budget():
                await self.ctx.store.delete(file_key(file_id))
            await session.execute(delete(File).where(File.id == file_id))
        return FileDeleted(id=file_id, deleted=True)

