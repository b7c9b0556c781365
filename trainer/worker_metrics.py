"""The worker's Prometheus endpoint: `/metrics` on its own port (`worker_metrics_port`, 0 = off;
bound to `worker_metrics_host`, 127.0.0.1 by default).

- Training: tokens/s and seconds per step of the run in progress (from the progress the
  training library reports, `record_progress`), steps done, whether a job runs.
- Device memory, read at scrape time: per CUDA device (allocated, reserved, total) once the
  worker has imported torch and a GPU is there; else the process's resident memory
  (`device="cpu"`). Scraping never imports torch.

No job, organization or model id is a label.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psutil
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from tuneforge.settings import Settings

log = logging.getLogger(__name__)

JOB_RUNNING = Gauge("tuneforge_worker_job_running", "1 while this worker runs a job.")
TOKENS_PER_SECOND = Gauge(
    "tuneforge_worker_training_tokens_per_second",
    "Training throughput of the run in progress, between its last two progress reports.")
STEP_SECONDS = Gauge(
    "tuneforge_worker_training_step_seconds",
    "Seconds per optimizer step of the run in progress, between its last two reports.")
STEP_HISTOGRAM = Histogram(
    "tuneforge_worker_training_step_duration_seconds",
    "Seconds per optimizer step (averaged between progress reports).",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0))
TRAINED_TOKENS = Counter("tuneforge_worker_trained_tokens",
                         "Tokens trained by this worker (all runs).")
STEPS = Counter("tuneforge_worker_training_steps", "Optimizer steps run by this worker.")


@dataclass
class _Last:
    step: int
    tokens: int
    at: float


class ProgressRecorder:
    """Turns the training library's progress reports (`step`, `trained_tokens`) into rates.
    Thread-safe: the training thread calls it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: _Last | None = None

    def start_run(self) -> None:
        with self._lock:
            self._last = None
        TOKENS_PER_SECOND.set(0)
        STEP_SECONDS.set(0)

    def record(self, metrics: dict[str, Any], now: float | None = None) -> None:
        step, tokens = metrics.get("step"), metrics.get("trained_tokens")
        if not isinstance(step, int) or not isinstance(tokens, int):
            return
        now = time.monotonic() if now is None else now
        with self._lock:
            last, self._last = self._last, _Last(step, tokens, now)
        if last is None or step <= last.step or now <= last.at:
            return  # the first report of a run (or a resumed one) only sets the origin
        elapsed, steps = now - last.at, step - last.step
        step_seconds = elapsed / steps
        STEP_SECONDS.set(step_seconds)
        STEP_HISTOGRAM.observe(step_seconds)
        STEPS.inc(steps)
        if tokens >= last.tokens:
            TOKENS_PER_SECOND.set((tokens - last.tokens) / elapsed)
            TRAINED_TOKENS.inc(tokens - last.tokens)


RECORDER = ProgressRecorder()


def record_progress(metrics: dict[str, Any]) -> None:
    """The `on_metrics` hook of a run (called on the training thread)."""
    RECORDER.record(metrics)


class DeviceMemoryCollector(Collector):
    """`tuneforge_worker_device_memory_bytes{device, kind}` at scrape time."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("tuneforge_worker_device_memory_bytes",
                                   "Memory of the training device: CUDA allocated/reserved/"
                                   "total per GPU, else the process's resident memory.",
                                   labels=["device", "kind"])
        if not _cuda_memory(family):
            family.add_metric(["cpu", "rss"], psutil.Process().memory_info().rss)
        yield family


def _cuda_memory(family: GaugeMetricFamily) -> bool:
    torch = sys.modules.get("torch")  # never imported for a scrape
    if torch is None:
        return False
    try:
        if not torch.cuda.is_available():
            return False
        for index in range(torch.cuda.device_count()):
            device = f"cuda:{index}"
            family.add_metric([device, "allocated"], torch.cuda.memory_allocated(index))
            family.add_metric([device, "reserved"], torch.cuda.memory_reserved(index))
            family.add_metric([device, "total"],
                              torch.cuda.get_device_properties(index).total_memory)
    except Exception:  # a scrape must answer: the CPU figure stands in
        log.warning("could not read CUDA memory", exc_info=True)
        return False
    return True


_collector_registered = False


class MetricsServer:
    def __init__(self, server: Any, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self.port: int = server.server_address[1]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve(settings: Settings) -> MetricsServer | None:
    """Start `/metrics` on `worker_metrics_host:worker_metrics_port` (a daemon thread); None
    when the port is 0."""
    global _collector_registered
    if not settings.worker_metrics_port:
        return None
    if not _collector_registered:
        REGISTRY.register(DeviceMemoryCollector())
        _collector_registered = True
    server, thread = start_http_server(settings.worker_metrics_port,
                                       addr=settings.worker_metrics_host)
    log.info("worker metrics on %s:%d/metrics", settings.worker_metrics_host,
             settings.worker_metrics_port)
    return MetricsServer(server, thread)
