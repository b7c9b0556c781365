"""The served OpenAPI document matches what the server does: schemathesis (its CLI, against
the live server) generates requests from the document and checks every response against it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from tests.conftest import ApiServer, Tenant


def test_openapi_document_is_served(api_server: ApiServer) -> None:
    root = api_server.base_url.removesuffix("/v1")
    document = httpx.get(f"{root}/schema/openapi.json", timeout=10).json()
    assert document["openapi"].startswith("3.1")
    for path in ("/v1/files", "/v1/files/{file_id}/content", "/v1/uploads/{upload_id}/parts",
                 "/v1/fine_tuning/jobs", "/v1/fine_tuning/jobs/{job_id}/checkpoints",
                 "/v1/models"):
        assert path in document["paths"], path
    upload = document["paths"]["/v1/files"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in upload


def test_server_conforms_to_its_openapi_document(
    request: pytest.FixtureRequest, api_server: ApiServer, tenant_a: Tenant, tmp_path: Path
) -> None:
    if "postgresql" in request.node.callspec.id:
        pytest.skip("the contract does not depend on the database; checked once, on SQLite")
    root = api_server.base_url.removesuffix("/v1")
    result = subprocess.run(
        [str(Path(sys.executable).parent / "schemathesis"), "run",
         f"{root}/schema/openapi.json", "--url", root,
         "-H", f"Authorization: Bearer {tenant_a.api_key}",
         "--max-examples", "12", "--checks", "not_a_server_error,status_code_conformance,"
         "content_type_conformance,response_schema_conformance",
         "--seed", "7", "--no-color",
         # No vLLM runs in this stack, so inference honestly answers 503 model_not_ready;
         # tests/serving checks those routes against a real vLLM server.
         "--exclude-path-regex", "^/v1/(chat/)?completions$"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


# A 400 for a request the document calls valid means the document under-declares a rule.
# Exempt are the answers that depend on server state no schema can describe: ids of files,
# parts and cursors that do not exist, base models and module names of this deployment.
_HOOKS = textwrap.dedent('''
    import schemathesis

    STATE_DEPENDENT_CODES = {
        "model_not_available", "model_deleted", "checkpoint_not_found", "unsupported_parent",
        "invalid_file_id", "invalid_file_purpose", "invalid_lora_rank",
        "invalid_max_seq_length", "unknown_target_modules", "bytes_mismatch", "md5_mismatch",
        # An uploaded file's bytes (JSONL for `fine-tune`) and its multipart filename are
        # beyond what a schema for a binary part can state.
        "invalid_file_format",
        # A webhook URL whose host is (or resolves to) a non-public address, which the
        # server's `webhooks.allow_private_targets` decides.
        "webhook_target_not_allowed",
        # A W&B key for the organization or an MLflow tracking server: the server's
        # `tracking` settings decide (docs/tracking.md).
        "integration_not_configured",
    }
    # (method, path, param) the document cannot bound yet, each with the change it waits on.
    KNOWN_GAPS: set[tuple[str, str, str]] = set()

    @schemathesis.check
    def no_400_for_schema_valid_requests(ctx, response, case):
        meta = case.meta
        if meta is None or not meta.generation.mode.is_positive:
            return None
        if response.status_code != 400:
            return None
        try:
            error = response.json()["error"]
        except Exception:
            error = {}
        if error.get("code") in STATE_DEPENDENT_CODES:
            return None
        message = str(error.get("message", ""))
        if error.get("param") == "after" or message.startswith("Unknown part id"):
            return None
        # The upload streams: `purpose` must precede `file`, an order OpenAPI cannot state
        # (the document says so in words).
        if error.get("param") == "purpose" and message.startswith("Missing 'purpose'"):
            return None
        if (case.method.upper(), case.path, error.get("param")) in KNOWN_GAPS:
            return None
        raise AssertionError(f"400 for a request the document calls valid: {error}")
''')


def test_schema_valid_requests_are_accepted(
    request: pytest.FixtureRequest, api_server: ApiServer, tenant_a: Tenant, tmp_path: Path
) -> None:
    """Positive data only: no 5xx, and no 400 except for state the document cannot know
    (the document states every limit, enum and unknown-field rule the server enforces)."""
    if "postgresql" in request.node.callspec.id:
        pytest.skip("the contract does not depend on the database; checked once, on SQLite")
    (tmp_path / "tf_schemathesis_hooks.py").write_text(_HOOKS)
    root = api_server.base_url.removesuffix("/v1")
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tf_schemathesis_hooks",
           "PYTHONPATH": str(tmp_path)}
    result = subprocess.run(
        [str(Path(sys.executable).parent / "schemathesis"), "run",
         f"{root}/schema/openapi.json", "--url", root,
         "-H", f"Authorization: Bearer {tenant_a.api_key}",
         "--mode", "positive", "--phases", "examples,coverage,fuzzing",
         "--max-examples", "15", "--seed", "11", "--no-color", "--workers", "2",
         "--checks", "not_a_server_error,no_400_for_schema_valid_requests",
         "--exclude-path-regex", "^/v1/(chat/)?completions$"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env,
    )
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
