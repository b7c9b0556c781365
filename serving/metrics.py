"""Prometheus metrics of the inference plane (exposed by the API process's `GET /metrics`).

- Adapter loads on a replica (`POST /v1/load_lora_adapter`): count by outcome and latency.
- The proxy: completion tokens relayed (Prometheus' `rate()` gives tokens/s) and the time to
  the first token of streamed answers, by base model and stream or not.

Labels are operator-chosen names only (base models, outcomes): never an organization, a
fine-tuned model's name or a request.
"""

from __future__ import annotations

import time

import msgspec
from prometheus_client import Counter, Histogram

ADAPTER_LOADS = Counter(
    "tuneforge_adapter_loads", "Adapter loads on inference servers, by outcome.",
    ["base_model", "outcome"])
ADAPTER_LOAD_SECONDS = Histogram(
    "tuneforge_adapter_load_seconds",
    "Time to load an adapter on an inference server (POST /v1/load_lora_adapter).",
    ["base_model"], buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0))
PROXIED_REQUESTS = Counter(
    "tuneforge_proxy_requests", "Inference requests relayed to an inference server.",
    ["base_model", "stream"])
PROXIED_TOKENS = Counter(
    "tuneforge_proxy_completion_tokens",
    "Completion tokens relayed by the inference proxy (streams: one per content chunk).",
    ["base_model", "stream"])
TIME_TO_FIRST_TOKEN = Histogram(
    "tuneforge_proxy_time_to_first_token_seconds",
    "From the proxy receiving a streamed request to relaying its first content chunk.",
    ["base_model"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0))


class _Usage(msgspec.Struct):
    completion_tokens: int = 0


class _Answer(msgspec.Struct):
    usage: _Usage | None = None


def adapter_loaded(base_model: str, seconds: float, ok: bool) -> None:
    ADAPTER_LOADS.labels(base_model, "loaded" if ok else "failed").inc()
    if ok:
        ADAPTER_LOAD_SECONDS.labels(base_model).observe(seconds)


def answered(base_model: str, body: bytes) -> None:
    """A whole (non-streamed) answer: its `usage.completion_tokens`."""
    PROXIED_REQUESTS.labels(base_model, "false").inc()
    try:
        usage = msgspec.json.decode(body, type=_Answer).usage
    except (msgspec.DecodeError, msgspec.ValidationError):
        return
    if usage is not None and usage.completion_tokens > 0:
        PROXIED_TOKENS.labels(base_model, "false").inc(usage.completion_tokens)


class StreamMeter:
    """Counts a relayed event stream's content chunks and times its first one."""

    def __init__(self, base_model: str, started: float) -> None:
        self.base_model = base_model
        self.started = started
        self.first = True
        self._tokens = PROXIED_TOKENS.labels(base_model, "true")
        PROXIED_REQUESTS.labels(base_model, "true").inc()

    def chunk(self, data: bytes) -> None:
        # vLLM sends one token per `data:` event (compact JSON); role-only, usage-only and
        # `[DONE]` events carry no content.
        count = sum(1 for line in data.split(b"\n")
                    if line.startswith(b"data: {") and _has_content(line))
        if count:
            if self.first:
                self.first = False
                TIME_TO_FIRST_TOKEN.labels(self.base_model).observe(
                    time.perf_counter() - self.started)
            self._tokens.inc(count)


def _has_content(line: bytes) -> bool:
    for key in (b'"content":"', b'"text":"'):
        at = line.find(key)
        if at >= 0 and line[at + len(key):at + len(key) + 1] != b'"':
            return True
    return False
