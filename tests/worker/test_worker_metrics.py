"""The worker's `/metrics` endpoint (a real `trainer.worker` process on a queue of its own, so
it trains nothing) and the recorder that turns training progress into rates."""

from __future__ import annotations

import sys
import uuid

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import REPO
from trainer.worker_metrics import (
    STEP_SECONDS,
    STEPS,
    TOKENS_PER_SECOND,
    TRAINED_TOKENS,
    ProgressRecorder,
)
from tuneforge.processes import free_port, spawn, wait_until
from tuneforge.settings import Settings


def test_worker_serves_its_gauges(settings: Settings) -> None:
    if "postgresql" in settings.effective_database_url:
        pytest.skip("the endpoint does not depend on the database; checked once, on SQLite")
    port = free_port()
    env = {**settings.to_env(), "TUNEFORGE_QUEUE_NAME": f"tf-wm-{uuid.uuid4().hex[:6]}",
           "TUNEFORGE_WORKER_METRICS_PORT": str(port)}
    worker = spawn("worker-metrics", [sys.executable, "-m", "trainer.worker"],
                   settings.data_dir / f"worker-metrics-{port}.log", env=env, cwd=REPO)
    try:
        url = f"http://127.0.0.1:{port}/metrics"

        def answers() -> bool:
            try:
                return httpx.get(url, timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(answers, 120, "worker metrics", worker)
        text = httpx.get(url, timeout=5).text
    finally:
        worker.stop()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("tuneforge_worker_job_running", ())] == 0
    assert samples[("tuneforge_worker_training_tokens_per_second", ())] == 0
    assert ("tuneforge_worker_training_step_seconds", ()) in samples
    # No GPU here (and torch not imported by an idle worker): the process's resident memory.
    rss = samples[("tuneforge_worker_device_memory_bytes", (("device", "cpu"), ("kind", "rss")))]
    assert rss > 0
    assert "process_resident_memory_bytes" in text


def test_recorder_turns_progress_into_rates() -> None:
    recorder = ProgressRecorder()
    recorder.start_run()
    steps, tokens = STEPS._value.get(), TRAINED_TOKENS._value.get()
    recorder.record({"step": 10, "trained_tokens": 5_000}, now=100.0)  # the origin only
    assert TOKENS_PER_SECOND._value.get() == 0
    recorder.record({"step": 12, "trained_tokens": 5_800}, now=104.0)
    assert STEP_SECONDS._value.get() == 2.0
    assert TOKENS_PER_SECOND._value.get() == 200.0
    recorder.record({"step": 13, "trained_tokens": 6_100}, now=105.0)
    assert STEP_SECONDS._value.get() == 1.0
    assert TOKENS_PER_SECOND._value.get() == 300.0
    assert STEPS._value.get() - steps == 3
    assert TRAINED_TOKENS._value.get() - tokens == 1_100
    # A resumed run starting below the last step sets a new origin, reports nothing wrong.
    recorder.record({"step": 4, "trained_tokens": 2_000}, now=106.0)
    assert TOKENS_PER_SECOND._value.get() == 300.0
    recorder.record({"step": "x", "trained_tokens": None})  # ignored
    recorder.start_run()
    assert TOKENS_PER_SECOND._value.get() == 0 and STEP_SECONDS._value.get() == 0
