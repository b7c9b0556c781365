"""Responses checked against OpenAI's own OpenAPI document (`shared/openai-openapi.yaml`).

`check` validates one raw HTTP response (status code, content type, body) against the
operation's response in the document with `openapi-core`; `check_error` validates an error
envelope; `check_schema` validates one JSON value (an SSE chunk) against a named schema.

The document is taken as it is (but for its leftover OpenAPI 3.0 keywords, boolean
`exclusiveMinimum` and `nullable`, read as 3.0 meant them: see `_exclusive_bounds_as_numbers`
and `_nullable_as_null_type`), with two kinds of explicit, listed exceptions:
- DEVIATIONS: where TuneForge means to differ from OpenAI's API.
- EXTENSIONS: fields TuneForge adds to OpenAI's objects (documented in the README's
  "Differences from OpenAI's API"). The objects TuneForge returns are closed
  (`additionalProperties: false`), so any other field that is not OpenAI's fails.
"""

from __future__ import annotations

import copy
import functools
import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
# CI runs in a fresh clone with a copy of shared/ beside it.
SPEC_PATH = REPO.parent / "shared" / "openai-openapi.yaml"
# OpenAI's document serves its operations under this URL; ours are on another host.
OPENAI_HOST = "https://api.openai.com"

_STRING = {"type": "string"}
_NUMBER = {"type": "number"}

DEVIATIONS = {
    # The one intended difference: a running job can be paused (`POST .../pause`), and a
    # paused job reports the status `paused`, which OpenAI's FineTuningJob enum lacks.
    "FineTuningJob.status": "adds the `paused` job status",
    # Not a difference from OpenAI's service, only from its document, which writes this
    # download as an `application/json` string (the SDK reads the bytes raw): checked by hand.
    "GET /files/{file_id}/content": "the file's bytes, as application/octet-stream",
    # Likewise: the document has no chunk schema for streamed `/v1/completions` and points at
    # CreateCompletionResponse, whose `finish_reason` cannot be null; OpenAI's own chunks
    # carry `finish_reason: null` until the last (as its chat chunk schema says).
    "CompletionStreamChunk": "CreateCompletionResponse with a nullable choices[].finish_reason",
    # The document's own upload enum (CreateFileRequest.purpose) accepts `evals`, but its file
    # object's enum lacks it: a file uploaded for evals reports the purpose it was given.
    "OpenAIFile.purpose": "adds `evals`, which CreateFileRequest accepts",
    # An extension, not in OpenAI's API: `?stream=true` answers Server-Sent Events (the job as
    # `event: job`, its events with their ids as `id:`, keep-alive comments, `event: end`),
    # resumable with `Last-Event-ID`. Without it the answer is OpenAI's event list, checked
    # against the document; the stream is checked by tests/api/test_event_stream.py.
    "GET /fine_tuning/jobs/{fine_tuning_job_id}/events?stream=true":
        "Server-Sent Events of the job's events (text/event-stream)",
}

# TuneForge extension fields, by the schema of the object that carries them.
EXTENSIONS: dict[str, dict[str, Any]] = {
    "FineTuningJob": {
        # The adapter/quantization settings the job trains with (request field `lora`).
        "lora": {
            "type": "object",
            "required": ["rank", "alpha", "dropout", "target_modules", "quantization"],
            "additionalProperties": False,
            "properties": {
                "rank": {"type": "integer"}, "alpha": _NUMBER, "dropout": _NUMBER,
                "target_modules": {"anyOf": [_STRING, {"type": "array", "items": _STRING}]},
                "quantization": {"enum": ["auto", "4bit", "none"]},
            },
        },
        # The `suffix` the job was created with; absent when it was created without one.
        "suffix": _STRING,
        # The training controls (request field `training`): as requested ("auto" kept) until
        # the worker resolved them, then as the job trains.
        "training": {
            "type": "object",
            "required": ["tuning", "max_seq_length", "warmup_ratio", "lr_scheduler",
                         "weight_decay", "gradient_accumulation_steps", "optimizer",
                         "gradient_checkpointing", "eval_interval"],
            "additionalProperties": False,
            "properties": {
                "tuning": {"enum": ["auto", "lora", "qlora", "full", "spectrum"]},
                "tuning_reason": _STRING, "spectrum_fraction": _NUMBER,
                "max_seq_length": {"type": "integer"},
                "warmup_ratio": {"anyOf": [{"const": "auto"}, _NUMBER]},
                "lr_scheduler": {"enum": ["auto", "linear", "cosine", "constant"]},
                "weight_decay": {"anyOf": [{"const": "auto"}, _NUMBER]},
                "gradient_accumulation_steps": {"anyOf": [{"const": "auto"},
                                                          {"type": "integer"}]},
                "effective_batch_size": {"type": "integer"},
                "optimizer": {"enum": ["auto", "adamw", "paged_adamw_8bit"]},
                "gradient_checkpointing": {"enum": ["auto", "on", "off"]},
                "validation_split": _NUMBER,
                "eval_interval": {"anyOf": [{"const": "auto"}, {"type": "integer"}]},
                "early_stopping": {
                    "type": "object", "required": ["patience", "min_delta"],
                    "additionalProperties": False,
                    "properties": {"patience": {"type": "integer"}, "min_delta": _NUMBER}},
            },
        },
        # A job continuing a fine-tuned model (`model: "ft:…"`): its base model and parent.
        "base_model": _STRING,
        "parent_model": _STRING,
        # The W&B / MLflow runs the worker started for `integrations` (docs/tracking.md).
        "tracking_runs": {"type": "array", "items": {
            "type": "object", "required": ["type", "run_id", "url"],
            "additionalProperties": False,
            "properties": {"type": {"enum": ["wandb", "mlflow"]}, "run_id": _STRING,
                           "url": {"type": ["string", "null"]}}}},
    },
    # A fine-tuned model's base model, tuning type and parent (absent on base models); a base
    # model's card (`tuneforge/model_card.py`; absent on fine-tuned models).
    "Model": {"base_model": _STRING, "tuning": {"enum": ["lora", "qlora", "full", "spectrum"]},
              "parent": _STRING,
              "architecture": _STRING, "family": _STRING,
              "max_position_embeddings": {"type": "integer"},
              "context_length": {"type": "integer"}, "chat_template": {"type": "boolean"},
              "methods": {"type": "array", "items": {"enum": ["supervised", "dpo"]}},
              "tunings": {"type": "array",
                          "items": {"enum": ["lora", "qlora", "full", "spectrum"]}},
              "supports_tools": {"type": "boolean"},
              "stop_tokens": {"type": "array", "items": _STRING}},
    # Every TuneForge list carries the full cursor envelope.
    "ListModelsResponse": {"has_more": {"type": "boolean"}, "first_id": _STRING,
                           "last_id": _STRING},
    "ListFineTuningJobEventsResponse": {"first_id": _STRING, "last_id": _STRING},
    "ListPaginatedFineTuningJobsResponse": {"first_id": _STRING, "last_id": _STRING},
}

# The schemas of the objects TuneForge itself builds (not the proxied inference answers,
# which are vLLM's): closed, so a field that is neither OpenAI's nor listed above fails.
CLOSED = (
    "OpenAIFile", "DeleteFileResponse", "ListFilesResponse", "Upload", "UploadPart",
    "FineTuningJob", "FineTuningIntegration", "FineTuneMethod", "FineTuneSupervisedMethod",
    "FineTuneDPOMethod", "FineTuneSupervisedHyperparameters", "FineTuneDPOHyperparameters",
    "ListPaginatedFineTuningJobsResponse", "FineTuningJobEvent",
    "ListFineTuningJobEventsResponse", "FineTuningJobCheckpoint",
    "ListFineTuningJobCheckpointsResponse", "Model", "ListModelsResponse",
    "DeleteModelResponse", "Error", "ErrorResponse",
)


def _close(schema: dict[str, Any]) -> None:
    """No properties but the listed ones, here and in the inline objects below (a `$ref` is
    closed, or not, by its own name)."""
    if "properties" in schema and "additionalProperties" not in schema:
        schema["additionalProperties"] = False
    for sub in schema.get("properties", {}).values():
        _close(sub)
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in schema.get(key, []):
            _close(sub)
    if isinstance(schema.get("items"), dict):
        _close(schema["items"])


def _exclusive_bounds_as_numbers(node: Any) -> None:
    """OpenAI's 3.1 document still writes some bounds the OpenAPI 3.0 way
    (`minimum: 0, exclusiveMinimum: true`); JSON Schema 2020-12 reads `true` as the number 1
    (so `beta: 0.2` would fail). Rewrite them as 3.1 means them: `exclusiveMinimum: 0`."""
    if isinstance(node, dict):
        for exclusive, inclusive in (("exclusiveMinimum", "minimum"),
                                     ("exclusiveMaximum", "maximum")):
            if isinstance(node.get(exclusive), bool):
                if node.pop(exclusive) and inclusive in node:
                    node[exclusive] = node.pop(inclusive)
        for value in node.values():
            _exclusive_bounds_as_numbers(value)
    elif isinstance(node, list):
        for value in node:
            _exclusive_bounds_as_numbers(value)


def _nullable_as_null_type(node: Any) -> None:
    """Likewise `nullable: true` (3.0), which a 3.1 validator ignores: the document marks the
    chunk's `usage`, for one, "nullable" and says it is null but in the last chunk. Rewrite it
    as 3.1 says it: `anyOf: [<the schema>, {type: "null"}]`."""
    if isinstance(node, dict):
        if isinstance(node.get("nullable"), bool):
            if node.pop("nullable"):
                inner = dict(node)
                node.clear()
                node["anyOf"] = [inner, {"type": "null"}]
        for value in node.values():
            _nullable_as_null_type(value)
    elif isinstance(node, list):
        for value in node:
            _nullable_as_null_type(value)


def _patched(spec: dict[str, Any]) -> dict[str, Any]:
    _exclusive_bounds_as_numbers(spec)
    _nullable_as_null_type(spec)
    schemas = spec["components"]["schemas"]
    schemas["FineTuningJob"]["properties"]["status"]["enum"].append("paused")
    schemas["OpenAIFile"]["properties"]["purpose"]["enum"].append("evals")
    chunk = schemas["CompletionStreamChunk"] = copy.deepcopy(schemas["CreateCompletionResponse"])
    reason = chunk["properties"]["choices"]["items"]["properties"]["finish_reason"]
    reason["anyOf"] = [{"type": reason.pop("type"), "enum": reason.pop("enum")}, {"type": "null"}]
    for name, fields in EXTENSIONS.items():
        schemas[name]["properties"].update(copy.deepcopy(fields))
    for name in CLOSED:
        _close(schemas[name])
    return spec


@functools.cache
def _load() -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the document is ~3 MB
    with SPEC_PATH.open("rb") as f:
        return _patched(yaml.load(f, Loader=loader))


def spec() -> dict[str, Any]:
    """The parsed, patched document (parsed once per session). Skips when the file is
    missing outside CI; under CI (env CI set) a missing document fails."""
    if not SPEC_PATH.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"OpenAI's OpenAPI document is missing: {SPEC_PATH}")
        pytest.skip(f"OpenAI's OpenAPI document is not at {SPEC_PATH} (shared/ beside the repo)")
    return _load()


@functools.cache
def _openapi() -> Any:
    from openapi_core import Config, OpenAPI

    # The document is OpenAI's: checking the document itself is not this suite's job.
    return OpenAPI.from_dict(spec(), config=Config(spec_validator_cls=None))


@functools.cache
def _schema_validator(name: str) -> Any:
    from openapi_schema_validator import OAS31Validator

    root = {"$ref": f"#/components/schemas/{name}", "components": spec()["components"]}
    return OAS31Validator(root)


def _where(response: httpx.Response) -> str:
    request = response.request
    return f"{request.method} {request.url.path} → {response.status_code}"


def _explain(error: BaseException) -> str:
    lines = [f"{type(error).__name__}: {error}"]
    cause = error.__cause__
    for schema_error in getattr(cause, "schema_errors", None) or []:
        path = "/".join(str(p) for p in schema_error.absolute_path) or "(body)"
        lines.append(f"  at {path}: {schema_error.message}")
    return "\n".join(lines)


def check(response: httpx.Response) -> Any:
    """Validates the response against its operation in OpenAI's document; returns its JSON."""
    from openapi_core.testing import MockRequest, MockResponse

    request = response.request
    content_type = response.headers.get("content-type", "")
    try:
        _openapi().validate_response(
            MockRequest(OPENAI_HOST, request.method, request.url.path,
                        content_type=request.headers.get("content-type", "application/json")),
            MockResponse(response.content, status_code=response.status_code,
                         headers=dict(response.headers), content_type=content_type),
        )
    except Exception as error:  # openapi-core's errors share no base class worth naming
        pytest.fail(f"{_where(response)} does not match OpenAI's spec:\n{_explain(error)}\n"
                    f"body: {response.text[:2000]}")
    return response.json() if content_type.startswith("application/json") else None


def check_schema(value: Any, name: str, where: str = "") -> None:
    """Validates one JSON value against `#/components/schemas/{name}`."""
    errors = sorted(_schema_validator(name).iter_errors(value), key=lambda e: list(e.path))
    if errors:
        detail = "\n".join(f"  at {'/'.join(map(str, e.absolute_path)) or '(value)'}: "
                           f"{e.message}" for e in errors)
        pytest.fail(f"{where} does not match OpenAI's {name}:\n{detail}\n"
                    f"value: {json.dumps(value)[:2000]}")


def check_error(response: httpx.Response, status: int) -> dict[str, Any]:
    """An error: the expected status, JSON, and OpenAI's ErrorResponse envelope (OpenAI's
    document describes the envelope once, not per operation)."""
    assert response.status_code == status, f"{_where(response)}, wanted {status}: {response.text}"
    content_type = response.headers.get("content-type", "")
    assert content_type.startswith("application/json"), f"{_where(response)}: {content_type}"
    body = response.json()
    check_schema(body, "ErrorResponse", _where(response))
    return body  # type: ignore[no-any-return]


def sse_events(response: httpx.Response) -> list[Any]:
    """The JSON `data:` payloads of a Server-Sent Events answer, up to `data: [DONE]`; checks
    the content type and that the stream ends with `[DONE]`."""
    content_type = response.headers.get("content-type", "")
    assert content_type.startswith("text/event-stream"), f"{_where(response)}: {content_type}"
    payloads = [line.removeprefix("data:").strip()
                for line in response.text.splitlines() if line.startswith("data:")]
    assert payloads and payloads[-1] == "[DONE]", f"{_where(response)}: {response.text[-500:]}"
    return [json.loads(p) for p in payloads[:-1]]
