"""The gRPC transport: `tuneforge.v1` over a grpc.aio channel."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, TypeVar

import grpc

from tuneforge_client import types as t
from tuneforge_client._convert import page, read, request
from tuneforge_client._pb.tuneforge.v1 import (
    errors_pb2,
    files_pb2,
    files_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
)
from tuneforge_client._pb.tuneforge.v1 import fine_tuning_pb2 as ft_pb2
from tuneforge_client._pb.tuneforge.v1 import fine_tuning_pb2_grpc as ft_pb2_grpc
from tuneforge_client.errors import (
    APIConnectionError,
    APITimeoutError,
    TuneForgeError,
    error_for_status,
)
from tuneforge_client.plans import JobPlan  # plan (TuneForge extension)

DETAILS_KEY = "grpc-status-details-bin"
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
UPLOAD_CHUNK_BYTES = 1024 * 1024

# The HTTP status of a gRPC status that came without TuneForge's error details.
_HTTP_OF = {
    grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403, grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.FAILED_PRECONDITION: 409, grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429, grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500, grpc.StatusCode.UNKNOWN: 500,
}


def error_detail(error: grpc.aio.AioRpcError) -> errors_pb2.ErrorDetail | None:
    """The OpenAI error object a TuneForge server put in the status details, if any."""
    for key, value in error.trailing_metadata() or ():
        if key == DETAILS_KEY and isinstance(value, bytes):
            status = errors_pb2.RpcStatus.FromString(value)
            for packed in status.details:
                detail = errors_pb2.ErrorDetail()
                if packed.Unpack(detail):
                    return detail
    return None


def translate(error: grpc.aio.AioRpcError) -> TuneForgeError:
    code = error.code()
    detail = error_detail(error)
    if detail is not None:
        return error_for_status(
            detail.http_status or _HTTP_OF.get(code, 500), detail.message, type=detail.type,
            param=detail.param if detail.HasField("param") else None,
            code=detail.code if detail.HasField("code") else None, grpc_code=code.name)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return APITimeoutError(error.details() or "deadline exceeded")
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
        return APIConnectionError(error.details() or code.name)
    return error_for_status(_HTTP_OF.get(code, 500), error.details() or code.name,
                            grpc_code=code.name)


S = TypeVar("S")


class GrpcTransport:
    def __init__(self, target: str, api_key: str | None, timeout: float | None, *,
                 secure: bool = False) -> None:
        self.target = target
        self.api_key = api_key
        self.timeout = timeout
        self.secure = secure
        self._channel: grpc.aio.Channel | None = None
        self._files: files_pb2_grpc.FilesStub | None = None
        self._jobs: ft_pb2_grpc.FineTuningStub | None = None
        self._models: models_pb2_grpc.ModelsStub | None = None
        self._extra_stubs: dict[type, Any] = {}  # the extensions' services, per channel

    def _connect(self) -> None:
        options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                   ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                   ("grpc.keepalive_time_ms", 30_000)]
        if self.secure:
            channel = grpc.aio.secure_channel(self.target, grpc.ssl_channel_credentials(),
                                              options=options)
        else:
            channel = grpc.aio.insecure_channel(self.target, options=options)
        self._channel = channel
        self._files = files_pb2_grpc.FilesStub(channel)
        self._jobs = ft_pb2_grpc.FineTuningStub(channel)
        self._models = models_pb2_grpc.ModelsStub(channel)

    @property
    def files(self) -> files_pb2_grpc.FilesStub:
        if self._files is None:
            self._connect()
        return self._files  # type: ignore[return-value]

    @property
    def jobs(self) -> ft_pb2_grpc.FineTuningStub:
        if self._jobs is None:
            self._connect()
        return self._jobs  # type: ignore[return-value]

    @property
    def models(self) -> models_pb2_grpc.ModelsStub:
        if self._models is None:
            self._connect()
        return self._models  # type: ignore[return-value]

    def stub(self, stub_type: type[S]) -> S:
        """A stub of another `tuneforge.v1` service (webhooks, organization) on the channel."""
        if self._channel is None:
            self._connect()
        if stub_type not in self._extra_stubs:
            self._extra_stubs[stub_type] = stub_type(self._channel)
        return self._extra_stubs[stub_type]  # type: ignore[no-any-return]

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
            self._files = self._jobs = self._models = None
            self._extra_stubs.clear()

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.api_key}"),) if self.api_key else ()

    async def call(self, method: Any, request: Any) -> Any:
        try:
            return await method(request, metadata=self.metadata, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise translate(exc) from None

    # ---- files -------------------------------------------------------------------------

    async def upload_file(self, filename: str, purpose: str, chunks: AsyncIterator[bytes],
                          size: int) -> t.FileObject:
        async def requests() -> AsyncIterator[files_pb2.UploadFileRequest]:
            yield files_pb2.UploadFileRequest(
                metadata=files_pb2.UploadFileMetadata(filename=filename, purpose=purpose))
            async for chunk in chunks:
                for start in range(0, len(chunk), UPLOAD_CHUNK_BYTES):
                    yield files_pb2.UploadFileRequest(
                        chunk=chunk[start:start + UPLOAD_CHUNK_BYTES])

        try:
            created = await self.files.Upload(requests(), metadata=self.metadata)
        except grpc.aio.AioRpcError as exc:
            raise translate(exc) from None
        return read(created, t.FileObject)

    async def list_files(self, *, after: str | None, limit: int | None, order: str | None,
                         purpose: str | None) -> t.Page[t.FileObject]:
        query = files_pb2.ListFilesRequest(after=after, limit=limit, order=order, purpose=purpose)
        return page(await self.call(self.files.List, query), t.FileObject)

    async def get_file(self, file_id: str) -> t.FileObject:
        return read(await self.call(self.files.Get, files_pb2.GetFileRequest(file_id=file_id)),
                    t.FileObject)

    async def delete_file(self, file_id: str) -> t.FileDeleted:
        return read(await self.call(self.files.Delete,
                                    files_pb2.DeleteFileRequest(file_id=file_id)), t.FileDeleted)

    async def file_content(self, file_id: str) -> AsyncIterator[bytes]:
        stream = self.files.Content(files_pb2.GetFileContentRequest(file_id=file_id),
                                    metadata=self.metadata)
        try:
            async for message in stream:
                if message.data:
                    yield message.data
        except grpc.aio.AioRpcError as exc:
            raise translate(exc) from None
        finally:
            stream.cancel()

    # ---- jobs --------------------------------------------------------------------------

    async def create_job(self, body: dict[str, Any]) -> t.FineTuningJob:
        return read(await self.call(self.jobs.Create, request(body, ft_pb2.CreateJobRequest)),
                    t.FineTuningJob)

    # ---- plan (TuneForge extension) ----
    async def plan_job(self, body: dict[str, Any]) -> JobPlan:
        message = request(body, ft_pb2.CreateJobRequest)
        try:
            planned = await self.jobs.PlanJob(message, metadata=self.metadata)
        except grpc.aio.AioRpcError as exc:
            raise translate(exc) from None
        return read(planned, JobPlan)
    # ---- end plan ----

    async def list_jobs(self, *, after: str | None, limit: int | None,
                        metadata: dict[str, str] | None) -> t.Page[t.FineTuningJob]:
        query = ft_pb2.ListJobsRequest(after=after, limit=limit, metadata=metadata or {})
        return page(await self.call(self.jobs.List, query), t.FineTuningJob)

    async def get_job(self, job_id: str) -> t.FineTuningJob:
        return read(await self.call(self.jobs.Get,
                                    ft_pb2.GetJobRequest(fine_tuning_job_id=job_id)),
                    t.FineTuningJob)

    async def job_action(self, job_id: str, action: str) -> t.FineTuningJob:
        method, request_type = {
            "cancel": (self.jobs.Cancel, ft_pb2.CancelJobRequest),
            "pause": (self.jobs.Pause, ft_pb2.PauseJobRequest),
            "resume": (self.jobs.Resume, ft_pb2.ResumeJobRequest),
        }[action]
        return read(await self.call(method, request_type(fine_tuning_job_id=job_id)),
                    t.FineTuningJob)

    async def list_events(self, job_id: str, *, after: str | None,
                          limit: int | None) -> t.Page[t.FineTuningJobEvent]:
        query = ft_pb2.ListJobEventsRequest(fine_tuning_job_id=job_id, after=after, limit=limit)
        return page(await self.call(self.jobs.ListEvents, query), t.FineTuningJobEvent)

    async def list_checkpoints(self, job_id: str, *, after: str | None,
                               limit: int | None) -> t.Page[t.FineTuningJobCheckpoint]:
        query = ft_pb2.ListJobCheckpointsRequest(fine_tuning_job_id=job_id, after=after,
                                                 limit=limit)
        return page(await self.call(self.jobs.ListCheckpoints, query), t.FineTuningJobCheckpoint)

    async def watch(self, job_id: str, *, after: str | None
                    ) -> AsyncIterator[t.FineTuningJobEvent | t.FineTuningJob]:
        stream = self.jobs.WatchEvents(
            ft_pb2.WatchEventsRequest(fine_tuning_job_id=job_id, after=after),
            metadata=self.metadata)
        try:
            async for message in stream:
                if message.WhichOneof("update") == "event":
                    yield read(message.event, t.FineTuningJobEvent)
                elif message.WhichOneof("update") == "job":
                    yield read(message.job, t.FineTuningJob)
        except grpc.aio.AioRpcError as exc:
            raise translate(exc) from None
        finally:
            stream.cancel()

    # ---- models ------------------------------------------------------------------------

    async def list_models(self) -> t.Page[t.Model]:
        return page(await self.call(self.models.List, models_pb2.ListModelsRequest()), t.Model)

    async def get_model(self, model: str) -> t.Model:
        return read(await self.call(self.models.Get, models_pb2.GetModelRequest(model=model)),
                    t.Model)

    async def delete_model(self, model: str) -> t.ModelDeleted:
        return read(await self.call(self.models.Delete,
                                    models_pb2.DeleteModelRequest(model=model)), t.ModelDeleted)
