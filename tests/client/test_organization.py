"""`client.organization.storage()` over gRPC and REST, and `tuneforge storage`: the same figures
as REST's `/v1/organization/storage`, for the caller's organization only."""

from __future__ import annotations

import pytest
from tuneforge_client import TuneForge

from tests.api.data import chat_jsonl
from tests.client.test_cli import as_json, cli_env, tuneforge  # noqa: F401 - fixture


def test_storage_over_both_transports(tf: TuneForge, tf_rest: TuneForge, tf_b: TuneForge) -> None:
    before = tf.organization.storage()
    other = tf_b.organization.storage()
    tf.files.upload(chat_jsonl(), filename="t.jsonl")
    after = tf_rest.organization.storage()
    assert after.files.count == before.files.count + 1
    assert after.files.bytes == before.files.bytes + len(chat_jsonl())
    assert tf.organization.storage().to_dict() == after.to_dict()
    assert after.total_bytes == sum(s.bytes for s in (after.files, after.models,
                                                      after.checkpoints, after.pending_deletion))
    assert tf_b.organization.storage() == other


def test_cli(cli_env: dict[str, str], settings) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    if not settings.effective_database_url.startswith("sqlite"):
        pytest.skip("CLI tests run against the SQLite-backed server only")
    usage = as_json(tuneforge(cli_env, "storage", "--json"))
    assert usage["object"] == "organization.storage" and usage["total_bytes"] >= 0
    table = tuneforge(cli_env, "storage")
    assert table.returncode == 0 and "checkpoints" in table.stdout and "total" in table.stdout
