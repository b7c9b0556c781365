"""A job trained through the API by a real `trainer.worker` becomes chat-able through the proxy
the moment it succeeds, and shows what it learned; the base model does not."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import openai
import pytest

from tests.conftest import REPO
from tests.serving.conftest import BASE, loaded_models
from tests.worker.conftest import all_events, sft_file, wait_status
from tuneforge.processes import ManagedProcess, spawn
from tuneforge.settings import Settings

pytestmark = [pytest.mark.vllm, pytest.mark.train]


@pytest.fixture(scope="module")
def serving_worker(serving_settings: Settings, api_server,  # type: ignore[no-untyped-def]
                   no_leftover_jobs) -> Iterator[ManagedProcess]:
    """A worker that knows the serving settings (it hot-loads into the suite's vLLM)."""
    process = spawn("worker", [sys.executable, "-m", "trainer.worker"],
                    serving_settings.data_dir / "worker-serving.log",
                    env=serving_settings.to_env(), cwd=REPO, stop_timeout=30)
    yield process
    process.stop()


def test_trained_job_is_served_with_its_learned_behaviour(
        client: openai.OpenAI, serving_worker: ManagedProcess, vllm_url: str) -> None:
    from trainer.samples import heldout_prompts

    job = client.fine_tuning.jobs.create(
        model=BASE, training_file=sft_file(client, n=32), suffix="e2e", seed=3,
        method={"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": 3, "batch_size": 4, "learning_rate_multiplier": 5}}})
    done = wait_status(client, job.id, {"succeeded", "failed", "cancelled"}, timeout=1500)
    assert done.status == "succeeded", done.error
    name = done.fine_tuned_model
    assert name in loaded_models(vllm_url)  # hot-loaded before the job was marked succeeded
    ready = [e for e in all_events(client, job.id) if " is ready" in e.message]
    assert ready and ready[0].data["ready_seconds"] > 0

    def answers(model: str) -> list[str]:
        return [client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": prompt}], max_tokens=8,
            temperature=0).choices[0].message.content or "" for prompt in heldout_prompts(3)]

    tuned, base = answers(name), answers(BASE)
    assert sum(a.startswith("ANSWER:") for a in tuned) >= 2, tuned
    assert not any(a.startswith("ANSWER:") for a in base), base
