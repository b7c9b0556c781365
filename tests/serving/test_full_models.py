"""Full-weight fine-tuned models (full / Spectrum jobs) served by vLLM servers of their own,
started on demand by the API's serving plane next to the base model's replica.

The "fine-tuned" weights are the base model's with the final norm scaled by a power of two
(exact in bf16): every logit is scaled by it, so greedy answers equal the base model's while
the log-probabilities of those answers fall measurably, and differently for each model. That
shows which weights answered. The package's settings allow one full-model server at a time
(the default): a second model of the same architecture and tokenizer is swapped into the
running server (vLLM's reload_weights), a request for the first swaps it back, and a model
whose other files differ stops that server and gets one of its own, started by its first
request.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import time
from pathlib import Path

import openai
import pytest
from sqlalchemy import select

from server.db.models import ServingRequest
from tests.api.data import chat_jsonl
from tests.conftest import MODEL_CACHE, until_validated
from tests.serving.conftest import BASE, new_model, replica_state, wait_for
from tuneforge.domain import JobStatus, fine_tuned_model_name, new_id
from tuneforge.layout import merged_prefix
from tuneforge.settings import Settings

pytestmark = pytest.mark.vllm

_WORKER = "tests-serving-full"
PROMPT = [{"role": "user", "content": "Name three colors of the rainbow."}]
SCALES = {"half": 0.5, "quarter": 0.25}  # of the final norm's weight: softer logits


@pytest.fixture(scope="module")
def full_weights(tmp_root: Path) -> dict[str, Path]:
    """Two "fully fine-tuned" models as a full job leaves them (safetensors + tokenizer)."""
    import torch
    from safetensors.torch import load_file, save_file

    base = MODEL_CACHE / BASE
    tensors = load_file(str(base / "model.safetensors"))
    out: dict[str, Path] = {}
    for name, scale in SCALES.items():
        target = tmp_root / "full-weights" / name
        target.mkdir(parents=True, exist_ok=True)
        for item in base.iterdir():
            if item.is_file() and item.suffix in (".json", ".jinja"):
                shutil.copy(item, target / item.name)
        changed = {k: (v * scale if k == "model.norm.weight" else v).to(torch.bfloat16)
                   .contiguous() for k, v in tensors.items()}
        save_file(changed, str(target / "model.safetensors"), metadata={"format": "pt"})
        out[name] = target
    # The "half" weights with another generation config: not swappable into the others' server.
    other = tmp_root / "full-weights" / "half-other"
    shutil.copytree(out["half"], other)
    config = json.loads((other / "generation_config.json").read_text())
    (other / "generation_config.json").write_text(json.dumps({**config, "top_k": 40}))
    out["half-other"] = other
    return out


def full_state(settings: Settings) -> list[dict[str, object]]:
    """The full-model servers the API process runs (its informational state file)."""
    try:
        path = settings.data_dir / "serving" / "full-servers.json"
        return list(json.loads(path.read_text())["servers"])
    except (OSError, ValueError, KeyError):
        return []


def server_of(settings: Settings, model: str) -> dict[str, object] | None:
    return next((s for s in full_state(settings) if s["model"] == model), None)


def running(pid: object) -> bool:
    try:
        os.kill(int(str(pid)), 0)
    except ProcessLookupError:
        return False
    return True


async def full_job(services, client: openai.OpenAI, weights: Path, suffix: str):  # type: ignore[no-untyped-def]
    """A running job whose worker uploaded full weights to `merged_prefix`: (job id, name)."""
    file_id = client.files.create(file=("t.jsonl", io.BytesIO(chat_jsonl())),
                                  purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(model=BASE, training_file=file_id, suffix=suffix)
    assert await until_validated(services, job.id) == "queued"
    jobs = services.protocol
    assert await jobs.claim(job.id, _WORKER, 3600)
    assert await jobs.advance(job.id, [JobStatus.QUEUED], JobStatus.RUNNING,
                              worker_id=_WORKER)
    await services.ctx.store.upload_dir(weights, merged_prefix(job.id))
    return job.id, fine_tuned_model_name(BASE, job.organization_id, suffix, job.id)


async def ask_full(services, job_id: str, model: str,  # type: ignore[no-untyped-def]
                   settings: Settings) -> tuple[float, list[str]]:
    """What the worker does for a full job: a serving request of kind "full" for the merged
    weights, then wait for the answer. Returns its `ready_at` and the states the model's
    server was seen in while the request was unanswered."""
    request_id = new_id("srv-")
    async with services.ctx.sessions() as session, session.begin():
        session.add(ServingRequest(id=request_id, job_id=job_id, model=model, base_model=BASE,
                                   adapter_prefix=merged_prefix(job_id), kind="full",
                                   requested_at=time.time()))
    seen: list[str] = []
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline:
        async with services.ctx.sessions() as session:
            row = (await session.execute(select(ServingRequest).where(
                ServingRequest.id == request_id))).scalar_one()
        assert row.error is None, row.error
        if row.ready_at is not None:
            assert row.replicas == 1
            return row.ready_at, seen
        server = server_of(settings, model)
        if server is not None and (not seen or seen[-1] != server["state"]):
            seen.append(str(server["state"]))
        await asyncio.sleep(0.1)
    raise AssertionError(f"the serving plane did not answer {request_id}")


def answer(client: openai.OpenAI, model: str) -> tuple[str, float]:
    """The greedy answer and its total log-probability."""
    reply = client.chat.completions.create(model=model, messages=PROMPT, max_tokens=12,
                                           temperature=0, logprobs=True)
    assert reply.model == model
    tokens = reply.choices[0].logprobs.content
    return reply.choices[0].message.content or "", sum(t.logprob for t in tokens)


@pytest.fixture(scope="module")
async def full_models(services, api_server, serving_settings: Settings,  # type: ignore[no-untyped-def]
                      full_weights: dict[str, Path], tenant_a) -> dict[str, str]:
    """The first full model, served through a worker's serving request, as the worker does
    before the job succeeds."""
    with openai.OpenAI(base_url=api_server.base_url, api_key=tenant_a.api_key,
                       max_retries=0) as client:
        job_id, name = await full_job(services, client, full_weights["half"], "full-half")
    ready_at, seen = await ask_full(services, job_id, name, serving_settings)
    # Unanswered while its server started; answered once it is up and generated a token.
    assert "starting" in seen, seen
    server = server_of(serving_settings, name)
    assert server is not None and server["state"] == "ready" and running(server["pid"])
    assert await services.protocol.succeed(job_id, fine_tuned_model=name, result_files=[],
                                           trained_tokens=1, worker_id=_WORKER,
                                           tuning="full")
    return {"half": name, "half_job": job_id, "ready_at": str(ready_at)}


async def test_full_model_answers_through_the_proxy(
        full_models: dict[str, str], client: openai.OpenAI, client_b: openai.OpenAI,
        serving_settings: Settings, services, adapters: list[Path]) -> None:  # type: ignore[no-untyped-def]
    name = full_models["half"]
    base_replica = replica_state(serving_settings)
    pid = server_of(serving_settings, name)["pid"]  # type: ignore[index]
    text, logprob = await asyncio.to_thread(answer, client, name)
    base_text, base_logprob = await asyncio.to_thread(answer, client, BASE)
    # Its own weights: the same greedy words as the base (logits halved exactly), less sure.
    # Only the opening words: the two servers batch and reduce differently, so a later
    # near-tie may part the greedy paths.
    assert text.split()[:2] == base_text.split()[:2] and text
    assert logprob < base_logprob - 0.1, (logprob, base_logprob)
    # Streaming works through the same route.
    chunks = client.chat.completions.create(model=name, messages=PROMPT, max_tokens=12,
                                            temperature=0, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert server_of(serving_settings, name)["pid"] == pid  # type: ignore[index]
    # Another organization does not see it.
    with pytest.raises(openai.NotFoundError):
        client_b.chat.completions.create(model=name, messages=PROMPT, max_tokens=4)
    # Nothing else restarted: the base replica and its adapters keep serving.
    adapter_model = await new_model(services, client, adapters[0], "beside-full", serve=True)
    assert client.chat.completions.create(model=adapter_model, messages=PROMPT,
                                          max_tokens=4).choices[0].message.content
    after = replica_state(serving_settings)
    assert (after["pid"], after["restarts"]) == (base_replica["pid"], base_replica["restarts"])


async def test_same_architecture_is_swapped_into_the_running_server(
        full_models: dict[str, str], client: openai.OpenAI, serving_settings: Settings,
        services, full_weights: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
    half = full_models["half"]
    pid = server_of(serving_settings, half)["pid"]  # type: ignore[index]
    _, half_logprob = await asyncio.to_thread(answer, client, half)
    job_id, quarter = await full_job(services, client, full_weights["quarter"], "full-quarter")
    await ask_full(services, job_id, quarter, serving_settings)
    assert await services.protocol.succeed(job_id, fine_tuned_model=quarter, result_files=[],
                                           trained_tokens=1, worker_id=_WORKER,
                                           tuning="full")
    # One full-model server at a time: the older model's made room, by a weight swap.
    assert [(s["model"], s["pid"]) for s in full_state(serving_settings)] == [(quarter, pid)]
    _, quarter_logprob = await asyncio.to_thread(answer, client, quarter)
    assert quarter_logprob < half_logprob - 0.1  # its own, softer weights
    # A request for the model swapped out swaps it back (the request waits).
    _, again = await asyncio.to_thread(answer, client, half)
    assert abs(again - half_logprob) < 0.05
    assert [(s["model"], s["pid"]) for s in full_state(serving_settings)] == [(half, pid)]
    assert running(pid)


async def test_other_files_get_a_server_of_their_own_on_demand(
        full_models: dict[str, str], client: openai.OpenAI, serving_settings: Settings,
        services, full_weights: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
    half = full_models["half"]
    _, half_logprob = await asyncio.to_thread(answer, client, half)
    pid = server_of(serving_settings, half)["pid"]  # type: ignore[index]
    # Succeeded without a serving request (as when the worker's wait ran out): no server yet.
    job_id, other = await full_job(services, client, full_weights["half-other"], "full-other")
    assert await services.protocol.succeed(job_id, fine_tuned_model=other, result_files=[],
                                           trained_tokens=1, worker_id=_WORKER,
                                           tuning="full")
    assert server_of(serving_settings, other) is None
    # Its first request starts its server (stopping the least recently used one) and waits.
    _, logprob = await asyncio.to_thread(answer, client, other)
    assert abs(logprob - half_logprob) < 0.05  # the same weights, on a new server
    assert [s["model"] for s in full_state(serving_settings)] == [other]
    assert not running(pid)
    full_models["other"] = other


async def test_deleted_full_model_is_stopped(
        full_models: dict[str, str], client: openai.OpenAI,
        serving_settings: Settings) -> None:
    name = full_models["other"]
    await asyncio.to_thread(answer, client, name)  # running
    pid = server_of(serving_settings, name)["pid"]  # type: ignore[index]
    assert client.models.delete(name).deleted
    wait_for(lambda: not running(pid) and server_of(serving_settings, name) is None, 60,
             "the deleted model's server stopped")
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model=name, messages=PROMPT, max_tokens=4)
