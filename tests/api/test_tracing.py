"""OpenTelemetry traces: with `tracing.enabled` the API's request span, the enqueue and the
worker's run of the job share one trace, exported over OTLP/HTTP to a real receiver started
here (an HTTP server decoding the protobuf export requests); off, nothing is exported.

The API and the worker run as real processes on a database of their own, so the session's
API server (tracing off) never touches these jobs."""

from __future__ import annotations

import gzip
import io
import json
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.conftest import REPO
from tuneforge.processes import ManagedProcess, free_port, spawn, wait_until
from tuneforge.settings import Settings, TracingSettings

MODEL = "SmolLM2-135M-Instruct"


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]


class OtlpReceiver:
    """POST /v1/traces (OTLP/HTTP, protobuf) on 127.0.0.1: keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.requests = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                ok = self.path == "/v1/traces"
                if ok:
                    receiver.take(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200 if ok else 404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"

    def take(self, request: ExportTraceServiceRequest) -> None:
        self.requests += 1
        for resource_spans in request.resource_spans:
            service = next((a.value.string_value for a in resource_spans.resource.attributes
                            if a.key == "service.name"), "")
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attributes = {a.key: a.value.string_value or a.value.int_value
                                  for a in span.attributes}
                    self.spans.append(ReceivedSpan(
                        service, span.name, span.trace_id.hex(), span.span_id.hex(),
                        span.parent_span_id.hex(), attributes))

    def wait_for(self, predicate: Any, what: str, timeout: float = 60) -> ReceivedSpan:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = next((s for s in list(self.spans) if predicate(s)), None)
            if found is not None:
                return found
            time.sleep(0.1)
        names = sorted({(s.service, s.name) for s in self.spans})
        raise AssertionError(f"no span {what} was exported; got {names}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    result = OtlpReceiver()
    yield result
    result.close()


@dataclass
class TracedStack:
    settings: Settings
    base_url: str
    api_key: str
    worker_log: Path


@pytest.fixture(scope="module")
def traced_stack(settings: Settings, receiver: OtlpReceiver) -> Iterator[TracedStack]:
    """An API process and a worker with tracing on, on a fresh database and queue. The
    worker's base model is missing, so it fails the job at once instead of training."""
    import asyncio

    if not settings.database_url.startswith("sqlite"):
        pytest.skip("runs once: the traced stack has a SQLite database of its own")
    from server.auth import create_key
    from server.db.migrate import upgrade
    from server.db.session import create_engine, create_sessionmaker

    data_dir = settings.data_dir.parent / f"traced-{uuid.uuid4().hex[:6]}"
    data_dir.mkdir()
    own = settings.model_copy(update={
        "data_dir": data_dir, "database_url": f"sqlite+aiosqlite:///{data_dir / 'state.db'}",
        "port": free_port(), "grpc_port": free_port(),
        "queue_name": f"tf-traced-{uuid.uuid4().hex[:6]}",
        "tracing": TracingSettings(enabled=True, endpoint=receiver.endpoint,
                                   service_name="tuneforge-api"),
    })
    upgrade(own.effective_database_url)

    async def new_key() -> str:
        engine = create_engine(own.effective_database_url)
        try:
            async with create_sessionmaker(engine)() as session:
                return (await create_key(session, "traced"))[1]
        finally:
            await engine.dispose()

    key = asyncio.run(new_key())
    env = {**own.to_env(), "OTEL_BSP_SCHEDULE_DELAY": "100"}  # export spans within 0.1 s
    worker_env = {**env, "TUNEFORGE_TRACING": json.dumps(
                      {**own.tracing.model_dump(), "service_name": "tuneforge-worker"}),
                  "TUNEFORGE_BASE_MODELS": json.dumps(
                      [{"name": MODEL, "path": str(data_dir / "no-such-model")}])}
    processes: list[ManagedProcess] = []
    try:
        processes.append(spawn("api-traced", [sys.executable, "-m", "stack.cli", "server"],
                               data_dir / "api.log", env=env, cwd=REPO))
        base = f"http://127.0.0.1:{own.port}"
        wait_until(lambda: httpx.get(f"{base}/v1/models").status_code == 401, 60,
                   "traced API server", processes[0])
        processes.append(spawn("worker-traced", [sys.executable, "-m", "trainer.worker"],
                               data_dir / "worker.log", env=worker_env, cwd=REPO))
        yield TracedStack(own, f"{base}/v1", key, data_dir / "worker.log")
    finally:
        for process in processes:
            process.stop()


def test_the_request_the_enqueue_and_the_workers_run_share_one_trace(
        traced_stack: TracedStack, receiver: OtlpReceiver) -> None:
    from openai import OpenAI

    from trainer.samples import arithmetic_chat

    request_id = f"traced-{uuid.uuid4().hex[:10]}"
    with OpenAI(base_url=traced_stack.base_url, api_key=traced_stack.api_key,
                max_retries=0) as client:
        lines = "".join(json.dumps(row) + "\n" for row in arithmetic_chat(12, seed=0))
        file_id = client.files.create(file=("arith.jsonl", io.BytesIO(lines.encode())),
                                      purpose="fine-tune").id
        job = client.fine_tuning.jobs.create(model=MODEL, training_file=file_id,
                                             extra_headers={"X-Request-ID": request_id})

    created = receiver.wait_for(
        lambda s: s.name == "POST /v1/fine_tuning/jobs"
        and s.attributes.get("tuneforge.request_id") == request_id, "for the job's creation")
    assert created.service == "tuneforge-api"
    assert created.attributes.get("http.route") == "/v1/fine_tuning/jobs"
    enqueue = receiver.wait_for(lambda s: s.name == "queue.enqueue"
                                and s.attributes.get("tuneforge.job_id") == job.id,
                                "around the enqueue")
    assert enqueue.trace_id == created.trace_id

    run = receiver.wait_for(lambda s: s.name == "job.run"
                            and s.attributes.get("tuneforge.job_id") == job.id,
                            "for the worker's run")
    assert run.service == "tuneforge-worker"
    assert run.trace_id == created.trace_id
    assert run.attributes.get("tuneforge.request_id") == request_id
    validate = receiver.wait_for(lambda s: s.name == "job.validate"
                                 and s.trace_id == created.trace_id, "for validation")
    assert validate.parent_span_id == run.span_id

    # The worker's log lines for the job carry the trace too.
    lines = [json.loads(line) for line in traced_stack.worker_log.read_text().splitlines()]
    of_job = [line for line in lines if line.get("job_id") == job.id]
    assert of_job and all(line.get("trace_id") == created.trace_id for line in of_job)


def test_with_tracing_off_nothing_is_exported(receiver: OtlpReceiver) -> None:
    """In this process tracing was never turned on: configuring it off installs nothing, and
    spans are the no-op kind that no exporter ever sees."""
    from opentelemetry import trace

    from server.observability import tracing

    before = receiver.requests
    assert tracing.configure_tracing(TracingSettings(enabled=False,
                                                     endpoint=receiver.endpoint)) is False
    assert not tracing.enabled()
    with tracing.span("never exported") as span:
        assert not span.is_recording()
        assert tracing.current_traceparent() is None
    assert type(trace.get_tracer_provider()).__name__ == "ProxyTracerProvider"
    assert receiver.requests == before
