"""The `tuneforge.v1` services over the service layer: authenticate, call, convert.

No rule lives here: every check is the service layer's, as for the REST routes.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message
from pydantic import ValidationError

from server.auth import Principal
from server.grpc.convert import body, reply
from server.grpc.errors import from_validation, internal, status_code, trailing_metadata
from server.grpc.pb.tuneforge.v1 import (
    files_pb2,
    files_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
    plan_pb2,  # plan (TuneForge extension)
)
from server.grpc.pb.tuneforge.v1 import fine_tuning_pb2 as ft_pb2
from server.grpc.pb.tuneforge.v1 import fine_tuning_pb2_grpc as ft_pb2_grpc
from server.service import Services, event_stream
from server.service.objects import file_object
from server.service.plan import PlanService  # plan (TuneForge extension)
from server.service.requests import JobCreateRequest
from tuneforge.errors import ApiError, invalid

log = logging.getLogger(__name__)

# Largest data message the Content stream sends.
CONTENT_CHUNK_BYTES = 1024 * 1024

T = TypeVar("T")
Context = grpc.aio.ServicerContext


def _as_api_error(exc: Exception) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ValidationError):
        return from_validation(exc)
    log.error("unhandled error in a gRPC call", exc_info=exc)
    return internal()


async def _abort(context: Context, exc: Exception) -> None:
    error = _as_api_error(exc)
    await context.abort(status_code(error.status), error.message,
                        trailing_metadata=trailing_metadata(error))


def unary(fn: Callable[[Any, Any, Context], Awaitable[T]]
          ) -> Callable[[Any, Any, Context], Awaitable[T]]:
    """Turn service-layer errors of a unary-response handler into statuses."""

    @functools.wraps(fn)
    async def handler(self: Any, request: Any, context: Context) -> T:
        try:
            return await fn(self, request, context)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:
            await _abort(context, exc)
            raise AssertionError("unreachable") from exc  # abort always raises

    return handler


def streaming(fn: Callable[[Any, Any, Context], AsyncIterator[T]]
              ) -> Callable[[Any, Any, Context], AsyncIterator[T]]:
    """Turn service-layer errors of a response-streaming handler into statuses."""

    @functools.wraps(fn)
    async def handler(self: Any, request: Any, context: Context) -> AsyncIterator[T]:
        try:
            async for item in fn(self, request, context):
                yield item
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:
            await _abort(context, exc)

    return handler


def _query(request: Message) -> dict[str, Any]:
    """A list request's set fields as keyword arguments; the job it names is passed apart."""
    query = body(request)
    query.pop("fine_tuning_job_id", None)
    return query


class _Base:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def principal(self, context: Context) -> Principal:
        authorization = next((value for key, value in context.invocation_metadata() or ()
                              if key == "authorization"), None)
        if isinstance(authorization, bytes):
            authorization = authorization.decode()
        return await self.services.ctx.authenticate(authorization)


class FilesServicer(_Base, files_pb2_grpc.FilesServicer):
    @unary
    async def Upload(self, request_iterator: AsyncIterator[files_pb2.UploadFileRequest],
                     context: Context) -> files_pb2.File:
        principal = await self.principal(context)
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("payload") != "metadata":
            raise invalid("The first message of an upload must carry `metadata` (filename and "
                          "purpose).", param="metadata")

        async def chunks() -> AsyncIterator[bytes]:
            async for message in request_iterator:
                if message.WhichOneof("payload") != "chunk":
                    raise invalid("Only the first message of an upload may carry `metadata`.",
                                  param="metadata")
                yield message.chunk

        try:
            created = await self.services.files.create(
                principal, first.metadata.filename, first.metadata.purpose, chunks())
        except ApiError:
            # grpc/grpc#36066: an asyncio client still writing when the status arrives reports
            # INTERNAL ("Internal error from Core") instead of it. Read what the client still
            # sends, no more than an upload may hold, before answering.
            await _drain(request_iterator, self.services.ctx.settings.max_upload_bytes)
            raise
        return reply(created, files_pb2.File)

    @unary
    async def Get(self, request: files_pb2.GetFileRequest,
                  context: Context) -> files_pb2.File:
        principal = await self.principal(context)
        return reply(await self.services.files.get(principal, request.file_id), files_pb2.File)

    @unary
    async def List(self, request: files_pb2.ListFilesRequest,
                   context: Context) -> files_pb2.ListFilesResponse:
        principal = await self.principal(context)
        query = _query(request)
        if query.get("order") not in (None, "asc", "desc"):
            raise invalid("order must be 'asc' or 'desc'", param="order")
        return reply(await self.services.files.list(principal, **query),
                     files_pb2.ListFilesResponse)

    @unary
    async def Delete(self, request: files_pb2.DeleteFileRequest,
                     context: Context) -> files_pb2.FileDeleted:
        principal = await self.principal(context)
        return reply(await self.services.files.delete(principal, request.file_id),
                     files_pb2.FileDeleted)

    @streaming
    async def Content(self, request: files_pb2.GetFileContentRequest,
                      context: Context) -> AsyncIterator[files_pb2.FileContentChunk]:
        principal = await self.principal(context)
        row, chunks = await self.services.files.content(principal, request.file_id)
        header: files_pb2.File | None = reply(file_object(row), files_pb2.File)
        async for chunk in chunks:
            for start in range(0, len(chunk), CONTENT_CHUNK_BYTES):
                yield files_pb2.FileContentChunk(
                    data=chunk[start:start + CONTENT_CHUNK_BYTES], file=header)
                header = None
        if header is not None:  # an empty file
            yield files_pb2.FileContentChunk(data=b"", file=header)


class FineTuningServicer(_Base, ft_pb2_grpc.FineTuningServicer):
    @unary
    async def Create(self, request: ft_pb2.CreateJobRequest,
                     context: Context) -> ft_pb2.FineTuningJob:
        principal = await self.principal(context)
        create = JobCreateRequest.model_validate(body(request))
        return reply(await self.services.jobs.create(principal, create), ft_pb2.FineTuningJob)

    @unary
    async def Get(self, request: ft_pb2.GetJobRequest, context: Context) -> ft_pb2.FineTuningJob:
        principal = await self.principal(context)
        return reply(await self.services.jobs.get(principal, request.fine_tuning_job_id),
                     ft_pb2.FineTuningJob)

    @unary
    async def List(self, request: ft_pb2.ListJobsRequest,
                   context: Context) -> ft_pb2.ListJobsResponse:
        principal = await self.principal(context)
        return reply(await self.services.jobs.list(principal, **_query(request)),
                     ft_pb2.ListJobsResponse)

    @unary
    async def Cancel(self, request: ft_pb2.CancelJobRequest,
                     context: Context) -> ft_pb2.FineTuningJob:
        principal = await self.principal(context)
        return reply(await self.services.jobs.cancel(principal, request.fine_tuning_job_id),
                     ft_pb2.FineTuningJob)

    @unary
    async def Pause(self, request: ft_pb2.PauseJobRequest,
                    context: Context) -> ft_pb2.FineTuningJob:
        principal = await self.principal(context)
        return reply(await self.services.jobs.pause(principal, request.fine_tuning_job_id),
                     ft_pb2.FineTuningJob)

    @unary
    async def Resume(self, request: ft_pb2.ResumeJobRequest,
                     context: Context) -> ft_pb2.FineTuningJob:
        principal = await self.principal(context)
        return reply(await self.services.jobs.resume(principal, request.fine_tuning_job_id),
                     ft_pb2.FineTuningJob)

    @unary
    async def ListEvents(self, request: ft_pb2.ListJobEventsRequest,
                         context: Context) -> ft_pb2.ListJobEventsResponse:
        principal = await self.principal(context)
        return reply(await self.services.jobs.list_events(
            principal, request.fine_tuning_job_id, **_query(request)),
                     ft_pb2.ListJobEventsResponse)

    @unary
    async def ListCheckpoints(self, request: ft_pb2.ListJobCheckpointsRequest,
                              context: Context) -> ft_pb2.ListJobCheckpointsResponse:
        principal = await self.principal(context)
        return reply(await self.services.jobs.list_checkpoints(
            principal, request.fine_tuning_job_id, **_query(request)),
                     ft_pb2.ListJobCheckpointsResponse)

    # ---- plan (TuneForge extension) ----
    @unary
    async def PlanJob(self, request: ft_pb2.CreateJobRequest,
                      context: Context) -> plan_pb2.JobPlan:
        principal = await self.principal(context)
        create = JobCreateRequest.model_validate(body(request))
        planned = await PlanService(self.services.ctx, self.services.jobs).plan(principal, create)
        return reply(planned, plan_pb2.JobPlan)
    # ---- end plan ----

    @streaming
    async def WatchEvents(self, request: ft_pb2.WatchEventsRequest,
                          context: Context) -> AsyncIterator[ft_pb2.WatchEventsResponse]:
        principal = await self.principal(context)
        async for update in event_stream.watch(self.services.jobs, principal,
                                               request.fine_tuning_job_id,
                                               after=request.after or None):
            if isinstance(update, event_stream.EventUpdate):
                yield ft_pb2.WatchEventsResponse(event=reply(update.event, ft_pb2.JobEvent))
            else:
                yield ft_pb2.WatchEventsResponse(job=reply(update.job, ft_pb2.FineTuningJob))


class ModelsServicer(_Base, models_pb2_grpc.ModelsServicer):
    @unary
    async def List(self, request: models_pb2.ListModelsRequest,
                   context: Context) -> models_pb2.ListModelsResponse:
        principal = await self.principal(context)
        return reply(await self.services.models.list(principal), models_pb2.ListModelsResponse)

    @unary
    async def Get(self, request: models_pb2.GetModelRequest, context: Context) -> models_pb2.Model:
        principal = await self.principal(context)
        return reply(await self.services.models.get(principal, request.model), models_pb2.Model)

    @unary
    async def Delete(self, request: models_pb2.DeleteModelRequest,
                     context: Context) -> models_pb2.ModelDeleted:
        principal = await self.principal(context)
        return reply(await self.services.models.delete(principal, request.model),
                     models_pb2.ModelDeleted)


async def _drain(request_iterator: AsyncIterator[files_pb2.UploadFileRequest],
                 limit: int) -> None:
    """Consume the rest of a client stream (up to `limit` bytes of chunks), ignoring errors."""
    read = 0
    try:
        async for message in request_iterator:
            read += len(message.chunk)
            if read > limit:
                return
    except Exception:  # the client went away: nothing left to read
        return
