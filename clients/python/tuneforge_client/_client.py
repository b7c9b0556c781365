"""The high-level clients: `AsyncTuneForge` (asyncio) and `TuneForge` (blocking)."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import IO, Any, Literal, TypedDict, TypeVar, Unpack, overload

from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
    wait_random,
)

from tuneforge_client import types as t
from tuneforge_client._grpc import GrpcTransport
from tuneforge_client._rest import RestTransport
from tuneforge_client.config import ClientConfig, resolve
from tuneforge_client.errors import (
    APIConnectionError,
    RateLimitError,
    ServiceUnavailableError,
    TuneForgeError,
)
from tuneforge_client.organization import AsyncOrganization, Organization
from tuneforge_client.plans import JobPlan  # plan (TuneForge extension)
from tuneforge_client.webhooks import AsyncWebhooks, Webhooks

T = TypeVar("T")
ProgressCallback = Callable[[int, int], None]
FileInput = str | os.PathLike[str] | bytes | IO[bytes]
Update = t.FineTuningJobEvent | t.FineTuningJob

READ_CHUNK_BYTES = 1024 * 1024


def is_retryable(exc: BaseException) -> bool:
    """Connection failures (gRPC UNAVAILABLE, refused/broken connections, timeouts), 429 and
    503 are retried with exponential backoff and jitter."""
    return isinstance(exc, APIConnectionError | RateLimitError | ServiceUnavailableError)


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


class _Source:
    """A file to upload: re-readable from the start for each attempt."""

    def __init__(self, file: FileInput, filename: str | None) -> None:
        self.path: Path | None = None
        self.data: bytes | None = None
        self.stream: IO[bytes] | None = None
        if isinstance(file, bytes):
            self.data, self.size = file, len(file)
            name = filename
        elif isinstance(file, str | os.PathLike):
            self.path = Path(file)
            self.size = self.path.stat().st_size
            name = filename or self.path.name
        else:
            self.stream = file
            self.start = file.tell()
            self.size = file.seek(0, os.SEEK_END) - self.start
            file.seek(self.start)
            name = filename or Path(getattr(file, "name", "") or "").name or None
        if not name:
            raise ValueError("filename is required when uploading bytes or an unnamed stream")
        self.filename = name

    async def chunks(self, progress: ProgressCallback | None) -> AsyncIterator[bytes]:
        sent = 0
        if progress:
            progress(0, self.size)
        if self.data is not None:
            view = memoryview(self.data)
            for start in range(0, self.size, READ_CHUNK_BYTES):
                chunk = bytes(view[start:start + READ_CHUNK_BYTES])
                yield chunk
                sent += len(chunk)
                if progress:
                    progress(sent, self.size)
            return
        f = self.path.open("rb") if self.path is not None else self.stream
        assert f is not None
        try:
            if self.stream is not None:
                f.seek(self.start)
            while chunk := await asyncio.to_thread(f.read, READ_CHUNK_BYTES):
                yield chunk
                sent += len(chunk)
                if progress:
                    progress(sent, self.size)
        finally:
            if self.path is not None:
                f.close()


class AsyncTuneForge:
    """The TuneForge API, asyncio flavour.

    `transport="grpc"` (default) or `"rest"` picks how files, jobs and models travel; both give
    the same objects. `jobs.watch/follow/wait` use the transport's live event stream (gRPC
    `WatchEvents`, or Server-Sent Events over REST), and `chat` always uses REST
    (`POST /v1/chat/completions`). Unset arguments come from the environment and the
    config file (see `tuneforge_client.config`).
    """

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *,
                 transport: Literal["grpc", "rest"] | None = None,
                 grpc_target: str | None = None, timeout: float | None = None,
                 max_retries: int = 3, config_file: Path | None = None) -> None:
        self.config: ClientConfig = resolve(base_url=base_url, api_key=api_key,
                                            grpc_target=grpc_target, transport=transport,
                                            timeout=timeout, config_file=config_file)
        self.max_retries = max_retries
        self._rest = RestTransport(self.config.base_url, self.config.api_key, self.config.timeout)
        self._grpc = GrpcTransport(self.config.grpc_target, self.config.api_key,
                                   self.config.timeout, secure=self.config.grpc_secure)
        self._transport: GrpcTransport | RestTransport = (
            self._grpc if self.config.transport == "grpc" else self._rest)
        self.files = AsyncFiles(self)
        self.jobs = AsyncJobs(self)
        self.models = AsyncModels(self)
        self.webhooks = AsyncWebhooks(self)
        self.organization = AsyncOrganization(self)

    @property
    def transport(self) -> str:
        return self.config.transport

    async def close(self) -> None:
        await self._grpc.close()
        await self._rest.close()

    async def __aenter__(self) -> AsyncTuneForge:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _retrying(self) -> AsyncRetrying:
        return AsyncRetrying(stop=stop_after_attempt(self.max_retries + 1),
                             wait=wait_exponential(multiplier=0.5, max=8.0) + wait_random(0, 0.5),
                             retry=retry_if_exception(is_retryable), reraise=True)

    async def _retry(self, call: Callable[[], Awaitable[T]]) -> T:
        async for attempt in self._retrying():
            with attempt:
                return await call()
        raise AssertionError("unreachable")

    @overload
    async def chat(self, model: str, messages: list[dict[str, Any]], *,
                   stream: Literal[False] = False, **params: Any) -> t.ChatCompletion: ...

    @overload
    async def chat(self, model: str, messages: list[dict[str, Any]], *,
                   stream: Literal[True], **params: Any) -> AsyncIterator[t.ChatCompletionChunk]:
        ...

    async def chat(self, model: str, messages: list[dict[str, Any]], *, stream: bool = False,
                   **params: Any) -> t.ChatCompletion | AsyncIterator[t.ChatCompletionChunk]:
        """`POST /v1/chat/completions` (OpenAI's wire format; REST). With `stream=True`, an
        async iterator of chunks as the server sends them (server-sent events)."""
        body = {"model": model, "messages": messages, **_drop_none(params)}
        if stream:
            return self._rest.chat_stream({**body, "stream": True})
        return await self._retry(lambda: self._rest.chat(body))


class AsyncFiles:
    def __init__(self, client: AsyncTuneForge) -> None:
        self._c = client

    async def upload(self, file: FileInput, *, purpose: str = "fine-tune",
                     filename: str | None = None,
                     progress: ProgressCallback | None = None) -> t.FileObject:
        """Upload a file (a path, bytes or a binary stream), streamed in 1 MiB chunks;
        `progress(sent_bytes, total_bytes)` is called as it goes."""
        source = _Source(file, filename)
        return await self._c._retry(lambda: self._c._transport.upload_file(
            source.filename, purpose, source.chunks(progress), source.size))

    async def list(self, *, after: str | None = None, limit: int | None = None,
                   order: Literal["asc", "desc"] | None = None,
                   purpose: str | None = None) -> t.Page[t.FileObject]:
        return await self._c._retry(lambda: self._c._transport.list_files(
            after=after, limit=limit, order=order, purpose=purpose))

    async def get(self, file_id: str) -> t.FileObject:
        return await self._c._retry(lambda: self._c._transport.get_file(file_id))

    async def delete(self, file_id: str) -> t.FileDeleted:
        return await self._c._retry(lambda: self._c._transport.delete_file(file_id))

    def iter_content(self, file_id: str) -> AsyncIterator[bytes]:
        """The file's bytes, streamed."""
        return self._c._transport.file_content(file_id)

    async def content(self, file_id: str) -> bytes:
        """The whole file in memory (use `iter_content` or `download` for big files)."""
        async def read() -> bytes:
            return b"".join([chunk async for chunk in self.iter_content(file_id)])

        return await self._c._retry(read)

    async def download(self, file_id: str, path: str | os.PathLike[str]) -> int:
        """Stream the file into `path`; returns the number of bytes written."""
        written = 0
        with open(path, "wb") as f:  # noqa: ASYNC230 - small writes between network reads
            async for chunk in self.iter_content(file_id):
                f.write(chunk)
                written += len(chunk)
        return written


class _RequiredJobParams(TypedDict):
    model: str
    training_file: str


class JobParams(_RequiredJobParams, total=False):
    """The parameters of `jobs.create` and `jobs.plan`: OpenAI's (dicts as in OpenAI's JSON,
    e.g. `method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 3}}}`)
    plus TuneForge's `lora` (`{"rank": 16, "alpha": 16, "dropout": 0.0,
    "target_modules": "all-linear", "quantization": "auto"}`) and `training`
    (`{"tuning": "qlora", "max_seq_length": 512, "validation_split": 0.1,
    "early_stopping": {"patience": 3}}`, see `TrainingParams`)."""

    validation_file: str | None
    suffix: str | None
    seed: int | None
    metadata: dict[str, str] | None
    integrations: list[dict[str, Any]] | None
    method: dict[str, Any] | None
    hyperparameters: dict[str, Any] | None
    lora: dict[str, Any] | None
    training: t.TrainingParams | None


def _job_request(operation: str, params: JobParams) -> dict[str, Any]:
    """The request body of `jobs.create` / `jobs.plan`; a missing or unknown parameter is a
    TypeError, as it is for a function's keywords."""
    missing = sorted(JobParams.__required_keys__ - params.keys())
    unknown = sorted(params.keys() - JobParams.__required_keys__ - JobParams.__optional_keys__)
    if missing or unknown:
        raise TypeError(f"jobs.{operation}() " + (
            f"missing required keyword argument(s): {', '.join(missing)}" if missing
            else f"got unexpected keyword argument(s): {', '.join(unknown)}"))
    body = _drop_none(dict(params))
    if "training" in body:
        body["training"] = dict(body["training"])
    return body


class AsyncJobs:
    def __init__(self, client: AsyncTuneForge) -> None:
        self._c = client

    async def create(self, **params: Unpack[JobParams]) -> t.FineTuningJob:
        """`POST /v1/fine_tuning/jobs` (the parameters: `JobParams`). `model` is a base model
        or one of your fine-tuned models (`ft:…`) or checkpoints (`ft:…:ckpt-step-N`) to
        continue from."""
        body = _job_request("create", params)
        return await self._c._retry(lambda: self._c._transport.create_job(body))

    # ---- plan (TuneForge extension) ----
    async def plan(self, **params: Unpack[JobParams]) -> JobPlan:
        """`POST /v1/fine_tuning/jobs/plan`: the parameters of `create`, checked the same way
        (the same errors), but nothing is created. Returns the data format and every data
        error with its line, token counts, and for each planned device (the CPU worker, each
        configured GPU size) the tuning, quantization, resolved hyperparameters and training
        controls, peak memory, steps and duration, with warnings."""
        body = _job_request("plan", params)
        return await self._c._retry(lambda: self._c._transport.plan_job(body))
    # ---- end plan ----

    async def list(self, *, after: str | None = None, limit: int | None = None,
                   metadata: dict[str, str] | None = None) -> t.Page[t.FineTuningJob]:
        return await self._c._retry(lambda: self._c._transport.list_jobs(
            after=after, limit=limit, metadata=metadata))

    async def get(self, job_id: str) -> t.FineTuningJob:
        return await self._c._retry(lambda: self._c._transport.get_job(job_id))

    async def cancel(self, job_id: str) -> t.FineTuningJob:
        return await self._c._retry(lambda: self._c._transport.job_action(job_id, "cancel"))

    async def pause(self, job_id: str) -> t.FineTuningJob:
        return await self._c._retry(lambda: self._c._transport.job_action(job_id, "pause"))

    async def resume(self, job_id: str) -> t.FineTuningJob:
        """Resume a paused job. Right after a pause its run may still be saving a checkpoint
        (409 `job_still_stopping`): that is retried with backoff too."""
        retrying = self._c._retrying().copy(
            retry=retry_if_exception(lambda exc: is_retryable(exc)
                                     or getattr(exc, "code", None) == "job_still_stopping"),
            stop=stop_after_delay(120))
        async for attempt in retrying:
            with attempt:
                return await self._c._transport.job_action(job_id, "resume")
        raise AssertionError("unreachable")

    async def events(self, job_id: str, *, after: str | None = None,
                     limit: int | None = None) -> t.Page[t.FineTuningJobEvent]:
        """Newest first, as OpenAI's list."""
        return await self._c._retry(lambda: self._c._transport.list_events(
            job_id, after=after, limit=limit))

    async def checkpoints(self, job_id: str, *, after: str | None = None,
                          limit: int | None = None) -> t.Page[t.FineTuningJobCheckpoint]:
        return await self._c._retry(lambda: self._c._transport.list_checkpoints(
            job_id, after=after, limit=limit))

    async def watch(self, job_id: str, *, after: str | None = None) -> AsyncIterator[Update]:
        """The live stream of a job (gRPC `WatchEvents`, or Server-Sent Events with
        `transport="rest"`): the job object first and whenever it changes, and its events
        oldest first (those after `after`, then new ones as they happen), until the job has
        ended. A dropped connection is resumed after the last event seen."""
        cursor, failures = after, 0
        while True:
            try:
                async for update in self._c._transport.watch(job_id, after=cursor):
                    failures = 0
                    if isinstance(update, t.FineTuningJobEvent):
                        cursor = update.id
                    yield update
                return
            except APIConnectionError:
                failures += 1
                if failures > self._c.max_retries:
                    raise
                await asyncio.sleep(min(0.5 * 2 ** (failures - 1), 8.0))

    async def follow(self, job_id: str, *,
                     after: str | None = None) -> AsyncIterator[t.FineTuningJobEvent]:
        """The job's events live (oldest first), until the job has ended."""
        async for update in self.watch(job_id, after=after):
            if isinstance(update, t.FineTuningJobEvent):
                yield update

    async def wait(self, job_id: str, *,
                   timeout: float | None = None) -> t.FineTuningJob:  # noqa: ASYNC109
        """Block until the job has ended; returns it (check `.status`)."""
        async def until_done() -> t.FineTuningJob:
            last: t.FineTuningJob | None = None
            async for update in self.watch(job_id, after=None):
                if isinstance(update, t.FineTuningJob):
                    last = update
            if last is None or not last.done:
                last = await self.get(job_id)
            return last

        return await asyncio.wait_for(until_done(), timeout)


class AsyncModels:
    def __init__(self, client: AsyncTuneForge) -> None:
        self._c = client

    async def list(self) -> t.Page[t.Model]:
        return await self._c._retry(lambda: self._c._transport.list_models())

    async def get(self, model: str) -> t.Model:
        return await self._c._retry(lambda: self._c._transport.get_model(model))

    async def delete(self, model: str) -> t.ModelDeleted:
        return await self._c._retry(lambda: self._c._transport.delete_model(model))


# ---- the blocking client -----------------------------------------------------------------


class _Portal:
    """An event loop in a daemon thread that runs the async client for blocking callers."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="tuneforge-client",
                                       daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except BaseException:
            if not future.done():  # interrupted (Ctrl-C): stop the work in the loop too
                self.loop.call_soon_threadsafe(future.cancel)
                try:
                    future.result(timeout=5)
                except BaseException:  # the interruption is what propagates
                    pass
            raise

    def iterate(self, agen: AsyncIterator[T]) -> Iterator[T]:
        async def step() -> tuple[bool, T | None]:
            try:
                return True, await agen.__anext__()
            except StopAsyncIteration:
                return False, None

        try:
            while True:
                more, item = self.run(step())
                if not more:
                    return
                yield item  # type: ignore[misc]
        finally:
            aclose = getattr(agen, "aclose", None)
            if aclose is not None and self.loop.is_running():
                try:
                    self.run(aclose())
                except (RuntimeError, TuneForgeError):
                    pass

    def close(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=5)
        if not self.loop.is_running():
            self.loop.close()


class TuneForge:
    """The TuneForge API, blocking flavour: the same methods as `AsyncTuneForge`, each returning
    its result (iterators for `files.iter_content`, `jobs.watch`, `jobs.follow`, and
    `chat(..., stream=True)`)."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *,
                 transport: Literal["grpc", "rest"] | None = None,
                 grpc_target: str | None = None, timeout: float | None = None,
                 max_retries: int = 3, config_file: Path | None = None) -> None:
        self._portal = _Portal()
        self._async = AsyncTuneForge(base_url, api_key, transport=transport,
                                     grpc_target=grpc_target, timeout=timeout,
                                     max_retries=max_retries, config_file=config_file)
        self.config = self._async.config
        self.files = Files(self._async.files, self._portal)
        self.jobs = Jobs(self._async.jobs, self._portal)
        self.models = Models(self._async.models, self._portal)
        self.webhooks = Webhooks(self._async.webhooks, self._portal)
        self.organization = Organization(self._async.organization, self._portal)

    @property
    def transport(self) -> str:
        return self._async.transport

    def close(self) -> None:
        if self._portal.loop.is_running():
            self._portal.run(self._async.close())
        self._portal.close()

    def __enter__(self) -> TuneForge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @overload
    def chat(self, model: str, messages: list[dict[str, Any]], *,
             stream: Literal[False] = False, **params: Any) -> t.ChatCompletion: ...

    @overload
    def chat(self, model: str, messages: list[dict[str, Any]], *,
             stream: Literal[True], **params: Any) -> Iterator[t.ChatCompletionChunk]: ...

    def chat(self, model: str, messages: list[dict[str, Any]], *, stream: bool = False,
             **params: Any) -> t.ChatCompletion | Iterator[t.ChatCompletionChunk]:
        if stream:
            chunks = self._portal.run(self._async.chat(model, messages, stream=True, **params))
            return self._portal.iterate(chunks)
        return self._portal.run(self._async.chat(model, messages, **params))


class Files:
    def __init__(self, files: AsyncFiles, portal: _Portal) -> None:
        self._a, self._p = files, portal

    def upload(self, file: FileInput, *, purpose: str = "fine-tune",
               filename: str | None = None,
               progress: ProgressCallback | None = None) -> t.FileObject:
        return self._p.run(self._a.upload(file, purpose=purpose, filename=filename,
                                          progress=progress))

    def list(self, *, after: str | None = None, limit: int | None = None,
             order: Literal["asc", "desc"] | None = None,
             purpose: str | None = None) -> t.Page[t.FileObject]:
        return self._p.run(self._a.list(after=after, limit=limit, order=order, purpose=purpose))

    def get(self, file_id: str) -> t.FileObject:
        return self._p.run(self._a.get(file_id))

    def delete(self, file_id: str) -> t.FileDeleted:
        return self._p.run(self._a.delete(file_id))

    def iter_content(self, file_id: str) -> Iterator[bytes]:
        return self._p.iterate(self._a.iter_content(file_id))

    def content(self, file_id: str) -> bytes:
        return self._p.run(self._a.content(file_id))

    def download(self, file_id: str, path: str | os.PathLike[str]) -> int:
        return self._p.run(self._a.download(file_id, path))


class Jobs:
    def __init__(self, jobs: AsyncJobs, portal: _Portal) -> None:
        self._a, self._p = jobs, portal

    def create(self, **params: Unpack[JobParams]) -> t.FineTuningJob:
        return self._p.run(self._a.create(**params))

    # ---- plan (TuneForge extension) ----
    def plan(self, **params: Unpack[JobParams]) -> JobPlan:
        return self._p.run(self._a.plan(**params))
    # ---- end plan ----

    def list(self, *, after: str | None = None, limit: int | None = None,
             metadata: dict[str, str] | None = None) -> t.Page[t.FineTuningJob]:
        return self._p.run(self._a.list(after=after, limit=limit, metadata=metadata))

    def get(self, job_id: str) -> t.FineTuningJob:
        return self._p.run(self._a.get(job_id))

    def cancel(self, job_id: str) -> t.FineTuningJob:
        return self._p.run(self._a.cancel(job_id))

    def pause(self, job_id: str) -> t.FineTuningJob:
        return self._p.run(self._a.pause(job_id))

    def resume(self, job_id: str) -> t.FineTuningJob:
        return self._p.run(self._a.resume(job_id))

    def events(self, job_id: str, *, after: str | None = None,
               limit: int | None = None) -> t.Page[t.FineTuningJobEvent]:
        return self._p.run(self._a.events(job_id, after=after, limit=limit))

    def checkpoints(self, job_id: str, *, after: str | None = None,
                    limit: int | None = None) -> t.Page[t.FineTuningJobCheckpoint]:
        return self._p.run(self._a.checkpoints(job_id, after=after, limit=limit))

    def watch(self, job_id: str, *, after: str | None = None) -> Iterator[Update]:
        return self._p.iterate(self._a.watch(job_id, after=after))

    def follow(self, job_id: str, *,
               after: str | None = None) -> Iterator[t.FineTuningJobEvent]:
        return self._p.iterate(self._a.follow(job_id, after=after))

    def wait(self, job_id: str, *, timeout: float | None = None) -> t.FineTuningJob:
        return self._p.run(self._a.wait(job_id, timeout=timeout))


class Models:
    def __init__(self, models: AsyncModels, portal: _Portal) -> None:
        self._a, self._p = models, portal

    def list(self) -> t.Page[t.Model]:
        return self._p.run(self._a.list())

    def get(self, model: str) -> t.Model:
        return self._p.run(self._a.get(model))

    def delete(self, model: str) -> t.ModelDeleted:
        return self._p.run(self._a.delete(model))
