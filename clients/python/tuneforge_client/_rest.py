"""The REST transport: OpenAI's JSON API over httpx."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from tuneforge_client import types as t
from tuneforge_client.errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    error_for_status,
)
from tuneforge_client.plans import JobPlan  # plan (TuneForge extension)

ChunkSource = AsyncIterator[bytes]


def _raise_for(response: httpx.Response, body: bytes) -> None:
    if response.is_success:
        return
    try:
        error = json.loads(body)["error"]
        message = error.get("message") or response.reason_phrase
    except (ValueError, KeyError, TypeError):
        error, message = {}, body.decode(errors="replace") or response.reason_phrase
    raise error_for_status(response.status_code, message, type=error.get("type"),
                           param=error.get("param"), code=error.get("code"))


def _query(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


# The server sends a keep-alive comment every 15 s (its default) while a job is quiet; a
# stream silent for this long is taken as dropped and reopened.
SSE_SILENCE_SECONDS = 60.0


@dataclass
class SseMessage:
    event: str = "message"
    id: str | None = None
    data: str = ""


async def _sse_messages(lines: AsyncIterator[str]) -> AsyncIterator[SseMessage]:
    """Server-Sent Events messages from a stream's lines (comments skipped)."""
    current, data = SseMessage(), []
    async for line in lines:
        if not line:
            if data or current.id is not None or current.event != "message":
                current.data = "\n".join(data)
                yield current
            current, data = SseMessage(), []
            continue
        if line.startswith(":"):
            continue  # a comment: the keep-alive
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            current.event = value
        elif name == "id":
            current.id = value


class RestTransport:
    def __init__(self, base_url: str, api_key: str | None, timeout: float | None) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            self._client = httpx.AsyncClient(
                base_url=self.base_url, headers=headers,
                timeout=httpx.Timeout(self.timeout, connect=min(self.timeout or 10.0, 10.0)),
            )
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def request(self, method: str, path: str, *, unlimited: bool = False,
                      **kwargs: Any) -> Any:
        try:
            response = await self.client.request(
                method, path, timeout=None if unlimited else httpx.USE_CLIENT_DEFAULT, **kwargs)
        except httpx.TimeoutException as exc:
            raise APITimeoutError(f"{method} {path} timed out") from exc
        except httpx.TransportError as exc:
            raise APIConnectionError(f"cannot reach {self.base_url}: {exc}") from exc
        _raise_for(response, response.content)
        try:
            return response.json()
        except ValueError as exc:
            raise APIError(f"{method} {path}: the answer is not JSON",
                           status_code=response.status_code) from exc

    # ---- files -------------------------------------------------------------------------

    async def upload_file(self, filename: str, purpose: str, chunks: ChunkSource,
                          size: int) -> t.FileObject:
        boundary = "tuneforge-" + secrets.token_hex(16)
        safe_name = quote(filename, safe=" !#$&'()*+,-./:;=?@[]^_`{|}~")
        head = (
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n"
            f"{purpose}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"{safe_name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()

        async def body() -> AsyncIterator[bytes]:
            yield head
            async for chunk in chunks:
                yield chunk
            yield tail

        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}",
                   "Content-Length": str(len(head) + size + len(tail))}
        data = await self.request("POST", "/files", content=body(), headers=headers,
                                  unlimited=True)
        return t.FileObject.from_dict(data)

    async def list_files(self, *, after: str | None, limit: int | None, order: str | None,
                         purpose: str | None) -> t.Page[t.FileObject]:
        data = await self.request("GET", "/files", params=_query(
            after=after, limit=limit, order=order, purpose=purpose))
        return t.Page.of(data, t.FileObject.from_dict)

    async def get_file(self, file_id: str) -> t.FileObject:
        return t.FileObject.from_dict(await self.request("GET", f"/files/{quote(file_id)}"))

    async def delete_file(self, file_id: str) -> t.FileDeleted:
        return t.FileDeleted.from_dict(await self.request("DELETE", f"/files/{quote(file_id)}"))

    async def file_content(self, file_id: str) -> AsyncIterator[bytes]:
        try:
            async with self.client.stream("GET", f"/files/{quote(file_id)}/content",
                                          timeout=None) as response:
                if not response.is_success:
                    _raise_for(response, await response.aread())
                async for chunk in response.aiter_bytes():
                    yield chunk
        except httpx.TimeoutException as exc:
            raise APITimeoutError("file download timed out") from exc
        except httpx.TransportError as exc:
            raise APIConnectionError(f"cannot reach {self.base_url}: {exc}") from exc

    # ---- jobs --------------------------------------------------------------------------

    async def create_job(self, body: dict[str, Any]) -> t.FineTuningJob:
        return t.FineTuningJob.from_dict(await self.request("POST", "/fine_tuning/jobs",
                                                            json=body))

    # ---- plan (TuneForge extension) ----
    async def plan_job(self, body: dict[str, Any]) -> JobPlan:
        return JobPlan.from_dict(await self.request("POST", "/fine_tuning/jobs/plan",
                                                    json=body, unlimited=True))
    # ---- end plan ----

    async def list_jobs(self, *, after: str | None, limit: int | None,
                        metadata: dict[str, str] | None) -> t.Page[t.FineTuningJob]:
        params = _query(after=after, limit=limit)
        params.update({f"metadata[{k}]": v for k, v in (metadata or {}).items()})
        data = await self.request("GET", "/fine_tuning/jobs", params=params)
        return t.Page.of(data, t.FineTuningJob.from_dict)

    async def get_job(self, job_id: str) -> t.FineTuningJob:
        return t.FineTuningJob.from_dict(
            await self.request("GET", f"/fine_tuning/jobs/{quote(job_id)}"))

    async def job_action(self, job_id: str, action: str) -> t.FineTuningJob:
        return t.FineTuningJob.from_dict(
            await self.request("POST", f"/fine_tuning/jobs/{quote(job_id)}/{action}"))

    async def list_events(self, job_id: str, *, after: str | None,
                          limit: int | None) -> t.Page[t.FineTuningJobEvent]:
        data = await self.request("GET", f"/fine_tuning/jobs/{quote(job_id)}/events",
                                  params=_query(after=after, limit=limit))
        return t.Page.of(data, t.FineTuningJobEvent.from_dict)

    async def watch(self, job_id: str, *, after: str | None
                    ) -> AsyncIterator[t.FineTuningJobEvent | t.FineTuningJob]:
        """The job's Server-Sent Events (`GET …/events?stream=true`): the job object
        (`event: job`) and its events (after `after`, sent as `Last-Event-ID`) until the
        server's `event: end`. A connection cut before that, or silent for longer than
        `SSE_SILENCE_SECONDS` (the server sends keep-alives), raises `APIConnectionError`
        so the caller reconnects after the last event it saw."""
        headers = {"Accept": "text/event-stream"}
        if after:
            headers["Last-Event-ID"] = after
        timeout = httpx.Timeout(self.timeout, connect=min(self.timeout or 10.0, 10.0),
                                read=SSE_SILENCE_SECONDS)
        try:
            async with self.client.stream("GET", f"/fine_tuning/jobs/{quote(job_id)}/events",
                                          params={"stream": "true"}, headers=headers,
                                          timeout=timeout) as response:
                if not response.is_success:
                    _raise_for(response, await response.aread())
                async for message in _sse_messages(response.aiter_lines()):
                    if message.event == "end":
                        return
                    if message.event == "job":
                        yield t.FineTuningJob.from_dict(json.loads(message.data))
                    elif message.event == "message" and message.data:
                        yield t.FineTuningJobEvent.from_dict(json.loads(message.data))
        except httpx.TimeoutException as exc:
            raise APIConnectionError(f"the event stream of {job_id} went silent") from exc
        except httpx.TransportError as exc:
            raise APIConnectionError(f"cannot reach {self.base_url}: {exc}") from exc
        raise APIConnectionError(f"the event stream of {job_id} was cut before the job ended")

    async def list_checkpoints(self, job_id: str, *, after: str | None,
                               limit: int | None) -> t.Page[t.FineTuningJobCheckpoint]:
        data = await self.request("GET", f"/fine_tuning/jobs/{quote(job_id)}/checkpoints",
                                  params=_query(after=after, limit=limit))
        return t.Page.of(data, t.FineTuningJobCheckpoint.from_dict)

    # ---- models ------------------------------------------------------------------------

    async def list_models(self) -> t.Page[t.Model]:
        return t.Page.of(await self.request("GET", "/models"), t.Model.from_dict)

    async def get_model(self, model: str) -> t.Model:
        return t.Model.from_dict(await self.request("GET", f"/models/{quote(model, safe=':')}"))

    async def delete_model(self, model: str) -> t.ModelDeleted:
        return t.ModelDeleted.from_dict(
            await self.request("DELETE", f"/models/{quote(model, safe=':')}"))

    # ---- inference (REST only) ---------------------------------------------------------

    async def chat(self, body: dict[str, Any]) -> t.ChatCompletion:
        return t.ChatCompletion.from_dict(
            await self.request("POST", "/chat/completions", json=body, unlimited=True))

    async def chat_stream(self, body: dict[str, Any]) -> AsyncIterator[t.ChatCompletionChunk]:
        try:
            async with self.client.stream("POST", "/chat/completions", json=body,
                                          timeout=None) as response:
                if not response.is_success:
                    _raise_for(response, await response.aread())
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        return
                    chunk = json.loads(payload)
                    if "error" in chunk and not chunk.get("choices"):
                        error = chunk["error"] or {}
                        raise error_for_status(int(error.get("status") or 500),
                                               error.get("message") or "stream error",
                                               type=error.get("type"), code=error.get("code"))
                    yield t.ChatCompletionChunk.from_dict(chunk)
        except httpx.TimeoutException as exc:
            raise APITimeoutError("chat completion timed out") from exc
        except httpx.TransportError as exc:
            raise APIConnectionError(f"cannot reach {self.base_url}: {exc}") from exc
