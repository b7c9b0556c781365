"""Structured logs (structlog), configured once per process: the API server and the worker.

Every record, structlog's own and the standard library's (`logging.getLogger(__name__)`,
uvicorn, arq), goes through one handler on the root logger and comes out as one JSON object
per line (`log_format = "json"`, the default) with `timestamp`, `level`, `logger`, `message`
and the context bound for the current request or job (`request_id`, `job_id`; `trace_id` and
`span_id` while a span is recording). `console` renders the same for people. Credentials
never reach a line: API keys and URL passwords in messages, and values of fields named like a
secret, are masked.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog
from opentelemetry import trace
from structlog.typing import EventDict, Processor

# A TuneForge API key, a bearer token, a password in a URL (`scheme://user:password@host`).
_SECRETS = (
    (re.compile(r"\btf-[A-Za-z0-9_\-]{20,}"), "tf-***"),  # keys are `tf-` + 43 characters
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=\-]{8,}"), r"\1***"),
    (re.compile(r"(://[^/\s:@]*:)[^/\s@]+@"), r"\1***@"),
)
_SECRET_FIELDS = re.compile(r"(?i)(authorization|api_key|password|secret|token)")
# Loggers that would bury everything else (one line per vLLM health probe, twice a second).
_QUIET = {"httpx": logging.WARNING, "httpcore": logging.WARNING}


def mask(text: str) -> str:
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


def _mask_secrets(_: Any, __: str, event: EventDict) -> EventDict:
    for key, value in event.items():
        if _SECRET_FIELDS.search(key) and value:
            event[key] = "***"
        elif isinstance(value, str):
            event[key] = mask(value)
    return event


def _add_trace_ids(_: Any, __: str, event: EventDict) -> EventDict:
    """The current span's ids, when tracing records one (a no-op span has none)."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event.setdefault("trace_id", format(context.trace_id, "032x"))
        event.setdefault("span_id", format(context.span_id, "016x"))
    return event


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        _add_trace_ids,
    ]


def configure_logging(log_format: str = "json", *, level: int = logging.INFO,
                      stream: TextIO | None = None) -> None:
    """Route every log record of this process through structlog. Call once at start-up; a
    second call replaces the first (the root logger keeps one handler)."""
    shared = _shared_processors()
    structlog.configure(
        processors=[structlog.stdlib.filter_by_level, *shared,
                    structlog.stdlib.PositionalArgumentsFormatter(),
                    structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    if log_format == "console":
        renderer: Processor = structlog.dev.ConsoleRenderer(colors=False)
        final: list[Processor] = [_mask_secrets, renderer]
    else:
        final = [structlog.processors.format_exc_info,
                 structlog.processors.EventRenamer("message"), _mask_secrets,
                 structlog.processors.JSONRenderer()]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    for name, quiet_level in _QUIET.items():
        logging.getLogger(name).setLevel(quiet_level)
    # uvicorn and arq install handlers of their own; theirs would print a second, plain line.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "arq", "arq.worker"):
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True


def bound_context() -> MutableMapping[str, Any]:
    """The context bound for this request or job (`request_id`, `job_id`, …)."""
    return structlog.contextvars.get_contextvars()


def current_request_id() -> str | None:
    value = bound_context().get("request_id")
    return value if isinstance(value, str) else None
