"""OpenTelemetry traces across one job's path: the REST request, the enqueue, the worker's run
(validation, training, publishing) and the serving plane's hot-load, exported over OTLP/HTTP.

Off by default (`tracing.enabled = false`): no provider is installed, so every tracer is
OpenTelemetry's no-op one, no exporter exists and the request middleware skips tracing
altogether. On: one `TracerProvider` per process (API, worker) with a batching OTLP/HTTP
exporter to `tracing.endpoint`, service name `tracing.service_name`.

The trace crosses the queue in the job row: the API stores the W3C `traceparent` of the
request that created the job (`jobs.traceparent`) and the worker and the serving plane
continue it from there. The standard `OTEL_BSP_*` variables tune the batching.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from tuneforge.settings import TracingSettings

log = logging.getLogger(__name__)

TRACER_NAME = "tuneforge"
_propagator = TraceContextTextMapPropagator()
_provider: Any = None  # the SDK's TracerProvider while tracing is on


def configure_tracing(settings: TracingSettings) -> bool:
    """Install the OTLP exporter when `settings.enabled`; True if tracing is now on. Once per
    process (OpenTelemetry's global provider cannot be replaced)."""
    global _provider
    if not settings.enabled or _provider is not None:
        return _provider is not None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: settings.service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.endpoint)))
    trace.set_tracer_provider(provider)
    _provider = provider
    log.info("tracing on: OTLP/HTTP export as service %s", settings.service_name)
    return True


def enabled() -> bool:
    return _provider is not None


def shutdown_tracing() -> None:
    """Export what is still buffered and stop the exporter (at process exit)."""
    global _provider
    if _provider is not None:
        provider, _provider = _provider, None
        provider.shutdown()


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


def current_traceparent() -> str | None:
    """The W3C `traceparent` of the current span (None without a recording span)."""
    if not enabled():
        return None
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent")


def context_from(traceparent: str | None) -> Context | None:
    """The remote parent a stored `traceparent` names (None: start a new trace)."""
    if not traceparent or not enabled():
        return None
    return _propagator.extract({"traceparent": traceparent})


@contextlib.contextmanager
def span(name: str, *, traceparent: str | None = None,
         attributes: dict[str, Any] | None = None,
         kind: SpanKind = SpanKind.INTERNAL) -> Iterator[Span]:
    """A span, child of the current one, or of `traceparent` when given (a job's stored
    context). A no-op span while tracing is off."""
    with tracer().start_as_current_span(name, context=context_from(traceparent), kind=kind,
                                        attributes=attributes) as current:
        yield current


def _nothing(_: Any) -> None:
    return None


@contextlib.contextmanager
def request_span(scope: Any, request_id: str) -> Iterator[Callable[[Any], None]]:
    """The span of one HTTP request (kind SERVER), continuing a client's `traceparent` if it
    sent one; named after the route template once routing has run. Yields a callback that
    reads the status from the response's start message."""
    if not enabled():
        yield _nothing
        return
    headers = {bytes(k).decode("latin-1").lower(): bytes(v).decode("latin-1")
               for k, v in scope.get("headers", ())}
    parent = _propagator.extract(headers)
    method = scope.get("method", "GET")
    with tracer().start_as_current_span(
        f"{method} {scope.get('path', '')}", context=parent, kind=SpanKind.SERVER,
        attributes={"http.request.method": method, "url.path": scope.get("path", ""),
                    "tuneforge.request_id": request_id},
    ) as current:

        def on_response(message: Any) -> None:
            status = int(message.get("status", 0))
            current.set_attribute("http.response.status_code", status)
            if status >= 500:
                current.set_status(Status(StatusCode.ERROR))

        try:
            yield on_response
        finally:
            template = scope.get("path_template")
            if template:
                current.update_name(f"{method} {template}")
                current.set_attribute("http.route", template)
