"""A worker that cannot prepare the job's base model fails the job with a clear error that
names the model, not this machine's paths."""

from __future__ import annotations

import openai

from tests.conftest import until_validated
from tests.worker.conftest import MODEL, sft_file
from tuneforge.settings import BaseModelEntry, Settings


async def test_a_base_model_the_worker_cannot_prepare_fails_the_job_clearly(
    client: openai.OpenAI, services, settings: Settings, tmp_path  # type: ignore[no-untyped-def]
) -> None:
    from trainer.job_runner import JobRunner

    job = client.fine_tuning.jobs.create(model=MODEL, training_file=sft_file(client, 12))
    assert await until_validated(client, job.id) == "queued"
    missing = tmp_path / "not-there"
    worker_settings = settings.model_copy(
        update={"base_models": [BaseModelEntry(name=MODEL, path=str(missing))]})
    runner = JobRunner(services.protocol, services.ctx.store, worker_settings, job.id,
                       "worker-without-the-model")
    assert await runner.run() == "failed: base_model_unavailable"

    failed = client.fine_tuning.jobs.retrieve(job.id)
    assert failed.status == "failed"
    assert failed.error.code == "base_model_unavailable" and failed.error.param == "model"
    assert MODEL in failed.error.message and str(tmp_path) not in failed.error.message
