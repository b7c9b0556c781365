"""The SDK README's quick start runs as written against the live server (the test plays the
worker: it moves the job to running, reports a step and finishes it)."""

from __future__ import annotations

import asyncio
import re
import threading
from pathlib import Path

import pytest
from tuneforge_client import NotFoundError, ServiceUnavailableError, TuneForge

from tests.conftest import until_validated
from tests.grpc.conftest import MODEL
from tuneforge.domain import EventType, JobStatus, fine_tuned_model_name

README = Path(__file__).resolve().parents[2] / "clients" / "python" / "README.md"


async def test_quick_start(api_server, grpc_target: str, tenant_a, tf: TuneForge,  # type: ignore[no-untyped-def]
                           services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    quick_start = re.search(r"## Quick start.*?```python\n(.*?)```", README.read_text(),
                            re.DOTALL).group(1)  # type: ignore[union-attr]
    code = quick_start.replace("http://127.0.0.1:8000/v1", api_server.base_url) \
        .replace('"tf-..."', repr(tenant_a.api_key))
    monkeypatch.setenv("TUNEFORGE_GRPC_TARGET", grpc_target)
    monkeypatch.setenv("TUNEFORGE_CLIENT_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.chdir(tmp_path)
    before = {j.id for j in tf.jobs.list(limit=100)}
    outcome: dict[str, BaseException | None] = {}

    def run() -> None:
        try:
            exec(compile(code, str(README), "exec"), {})
            outcome["error"] = None
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    for _ in range(200):
        created = [j for j in tf.jobs.list(limit=100) if j.id not in before]
        if created:
            break
        await asyncio.sleep(0.05)
    job = created[0]
    assert job.suffix == "adder" and job.lora.rank == 16
    assert await until_validated(services, job.id) == "queued"
    await services.protocol.advance(job.id, [JobStatus.QUEUED], JobStatus.RUNNING)
    await services.protocol.add_event(job.id, "Step 1/1: training loss=0.5", type=EventType.METRICS,
                                      data={"step": 1, "total_steps": 1, "train_loss": 0.5})
    name = fine_tuned_model_name(MODEL, job.organization_id, "adder", job.id)
    await services.protocol.succeed(job.id, fine_tuned_model=name, result_files=[],
                                    trained_tokens=10)
    await asyncio.to_thread(thread.join, 30)
    assert "error" in outcome, "the quick start did not finish"
    error = outcome["error"]
    assert (tmp_path / "train.jsonl").exists()
    assert tf.jobs.get(job.id).status == "succeeded"
    # The last step chats with the model: it needs POST /v1/chat/completions and a vLLM server
    # for the base model, which this test stack does not run.
    if (isinstance(error, NotFoundError) and error.code == "unknown_url") or \
            isinstance(error, ServiceUnavailableError):
        pytest.skip(f"the quick start ran up to chat, which cannot answer here: {error}")
    assert error is None, repr(error)
