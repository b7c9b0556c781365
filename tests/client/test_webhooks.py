"""Webhook endpoints through the SDK (gRPC and REST give the same objects), the CLI, and
another organization over gRPC. Deliveries themselves: tests/api/test_webhooks.py."""

from __future__ import annotations

import pytest
from tuneforge_client import TuneForge
from tuneforge_client.errors import BadRequestError, NotFoundError

from tests.client.test_cli import as_json, cli_env, tuneforge  # noqa: F401 - fixture

# Accepted at creation: it does not resolve here, and each delivery checks it again.
URL = "https://hooks.example.com/tuneforge"


def test_sdk_over_both_transports(tf: TuneForge, tf_rest: TuneForge, tf_b: TuneForge) -> None:
    created = tf.webhooks.create(URL, name="grpc", event_types=["fine_tuning.job.failed"])
    assert created.signing_secret and created.signing_secret.startswith("whsec_")
    over_rest = tf_rest.webhooks.get(created.id)
    assert over_rest.signing_secret is None
    assert tf.webhooks.get(created.id).to_dict() == over_rest.to_dict()
    assert created.id in [e.id for e in tf_rest.webhooks.list()]
    assert created.event_types == ["fine_tuning.job.failed"]

    updated = tf.webhooks.update(created.id, name="renamed",
                                 event_types=["fine_tuning.job.succeeded",
                                              "fine_tuning.job.paused"])
    assert updated.name == "renamed" and updated.url == URL
    assert updated.event_types == ["fine_tuning.job.paused", "fine_tuning.job.succeeded"]
    rotated = tf_rest.webhooks.rotate_secret(created.id)
    assert rotated.signing_secret not in (None, created.signing_secret)
    assert tf.webhooks.get(created.id).signing_secret_hint.endswith(rotated.signing_secret[-4:])
    assert tf.webhooks.deliveries(created.id).data == []

    with pytest.raises(BadRequestError) as refused:
        tf.webhooks.create("http://127.0.0.1:9/hook")
    assert refused.value.param == "url"
    with pytest.raises(BadRequestError):
        tf.webhooks.create(URL, event_types=["batch.completed"])

    for call in (lambda: tf_b.webhooks.get(created.id),
                 lambda: tf_b.webhooks.deliveries(created.id),
                 lambda: tf_b.webhooks.delete(created.id)):
        with pytest.raises(NotFoundError):
            call()
    assert created.id not in [e.id for e in tf_b.webhooks.list()]
    assert tf.webhooks.delete(created.id).deleted is True
    with pytest.raises(NotFoundError):
        tf_rest.webhooks.get(created.id)


def test_cli(cli_env: dict[str, str], settings) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    if not settings.effective_database_url.startswith("sqlite"):
        pytest.skip("CLI tests run against the SQLite-backed server only")
    created = as_json(tuneforge(cli_env, "webhooks", "create", URL, "--name", "cli",
                                "--event", "fine_tuning.job.cancelled", "--json"))
    assert created["signing_secret"].startswith("whsec_")
    assert created["event_types"] == ["fine_tuning.job.cancelled"]
    table = tuneforge(cli_env, "webhooks", "list")
    assert table.returncode == 0 and created["id"] in table.stdout
    assert as_json(tuneforge(cli_env, "webhooks", "deliveries", created["id"],
                             "--json"))["data"] == []
    assert as_json(tuneforge(cli_env, "webhooks", "delete", created["id"],
                             "--json"))["deleted"] is True
    missing = tuneforge(cli_env, "webhooks", "get", created["id"], "--json")
    assert missing.returncode == 1 and '"not_found"' in missing.stdout
