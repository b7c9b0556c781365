"""Fixtures for the gRPC and SDK tests: the live server's gRPC target, raw stubs, SDK clients
and a raw REST client, all for real tenants of the real server."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import httpx
import pytest
from tuneforge_client import TuneForge
from tuneforge_client._pb.tuneforge.v1 import (
    errors_pb2,
    files_pb2_grpc,
    fine_tuning_pb2_grpc,
    models_pb2_grpc,
)

from tests.api.data import chat_jsonl

MODEL = "SmolLM2-135M-Instruct"


class Stubs:
    """Raw `tuneforge.v1` stubs on a blocking channel, authenticated as one tenant."""

    def __init__(self, channel: grpc.Channel, api_key: str | None) -> None:
        self.files = files_pb2_grpc.FilesStub(channel)
        self.jobs = fine_tuning_pb2_grpc.FineTuningStub(channel)
        self.models = models_pb2_grpc.ModelsStub(channel)
        self.metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()

    def __call__(self, method: Any, request: Any, **kwargs: Any) -> Any:
        return method(request, metadata=self.metadata, timeout=30, **kwargs)


def error_of(exc: grpc.RpcError) -> tuple[grpc.StatusCode, dict[str, Any]]:
    """The status code and the OpenAI error object (+ http_status) of a failed call."""
    for key, value in exc.trailing_metadata() or ():  # type: ignore[attr-defined]
        if key == "grpc-status-details-bin":
            status = errors_pb2.RpcStatus.FromString(value)
            detail = errors_pb2.ErrorDetail()
            assert status.details[0].Unpack(detail)
            assert status.code == exc.code().value[0]  # type: ignore[attr-defined]
            return exc.code(), {  # type: ignore[attr-defined]
                "message": detail.message, "type": detail.type,
                "param": detail.param if detail.HasField("param") else None,
                "code": detail.code if detail.HasField("code") else None,
                "http_status": detail.http_status,
            }
    raise AssertionError(f"no error details in {exc!r}")


@pytest.fixture(scope="session")
def grpc_target(api_server, settings) -> str:  # type: ignore[no-untyped-def]
    return f"127.0.0.1:{settings.grpc_port}"


@pytest.fixture(scope="session")
def channel(grpc_target: str) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(grpc_target) as result:
        grpc.channel_ready_future(result).result(timeout=30)
        yield result


@pytest.fixture
def stubs(channel: grpc.Channel, tenant_a) -> Stubs:  # type: ignore[no-untyped-def]
    return Stubs(channel, tenant_a.api_key)


@pytest.fixture
def stubs_b(channel: grpc.Channel, tenant_b) -> Stubs:  # type: ignore[no-untyped-def]
    return Stubs(channel, tenant_b.api_key)


@pytest.fixture
async def arest(api_server, tenant_a) -> AsyncIterator[httpx.AsyncClient]:  # type: ignore[no-untyped-def]
    async with httpx.AsyncClient(base_url=api_server.base_url, timeout=30, headers={
            "Authorization": f"Bearer {tenant_a.api_key}"}) as client:
        yield client


@pytest.fixture
def rest(api_server, tenant_a) -> Iterator[httpx.Client]:  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=api_server.base_url, timeout=30,
                      headers={"Authorization": f"Bearer {tenant_a.api_key}"}) as client:
        yield client


def sdk(api_server, grpc_target: str, api_key: str | None,  # type: ignore[no-untyped-def]
        transport: str = "grpc", **kwargs: Any) -> TuneForge:
    return TuneForge(base_url=api_server.base_url, api_key=api_key, grpc_target=grpc_target,
                     transport=transport, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def tf(api_server, grpc_target: str, tenant_a) -> Iterator[TuneForge]:  # type: ignore[no-untyped-def]
    with sdk(api_server, grpc_target, tenant_a.api_key) as client:
        yield client


@pytest.fixture
def tf_rest(api_server, grpc_target: str, tenant_a) -> Iterator[TuneForge]:  # type: ignore[no-untyped-def]
    with sdk(api_server, grpc_target, tenant_a.api_key, transport="rest") as client:
        yield client


@pytest.fixture
def tf_b(api_server, grpc_target: str, tenant_b) -> Iterator[TuneForge]:  # type: ignore[no-untyped-def]
    with sdk(api_server, grpc_target, tenant_b.api_key) as client:
        yield client


def rest_upload(rest: httpx.Client, content: bytes, name: str = "train.jsonl",
                purpose: str = "fine-tune") -> httpx.Response:
    return rest.post("/files", data={"purpose": purpose},
                     files={"file": (name, io.BytesIO(content))})


async def arest_upload(rest: httpx.AsyncClient, content: bytes, name: str = "train.jsonl",
                       purpose: str = "fine-tune") -> httpx.Response:
    return await rest.post("/files", data={"purpose": purpose},
                           files={"file": (name, io.BytesIO(content))})


@pytest.fixture
def training_file(tf: TuneForge) -> str:
    return tf.files.upload(chat_jsonl(), filename="train.jsonl").id
