"""`training=` of the SDK's `jobs.create` (both transports) and the CLI's Training flags reach
the job the worker runs; lineage reads back through the SDK."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tuneforge_client import BadRequestError, TrainingParams, TuneForge

from tests.api.test_training_extension import make_parent
from tests.client.test_cli import as_json, cli_env, tuneforge  # noqa: F401 - fixture
from tests.grpc.conftest import MODEL
from tuneforge.domain import EarlyStopping, TrainingConfig


@pytest.mark.parametrize("transport", ["grpc", "rest"])
async def test_sdk_training_reaches_the_job(tf: TuneForge, tf_rest: TuneForge, services: Any,
                                            training_file: str, transport: str) -> None:
    client = tf if transport == "grpc" else tf_rest
    training: TrainingParams = {"tuning": "auto", "max_seq_length": 384,
                                "lr_scheduler": "linear", "weight_decay": 0.05,
                                "validation_split": 0.2, "eval_interval": 3,
                                "early_stopping": {"patience": 2}}
    job = client.jobs.create(model=MODEL, training_file=training_file, training=training)
    assert job.training is not None and job.training.tuning == "auto"
    assert job.training.early_stopping is not None and job.training.early_stopping.patience == 2
    spec = await services.protocol.spec(job.id)
    assert spec.training == TrainingConfig(**training)  # type: ignore[arg-type]

    with pytest.raises(BadRequestError) as err:
        client.jobs.create(model=MODEL, training_file=training_file,
                           training={"spectrum_fraction": 0.5})
    assert err.value.param == "training.spectrum_fraction"


async def test_sdk_continues_a_fine_tuned_model(tf: TuneForge, services: Any, tenant_a: Any,
                                                training_file: str) -> None:
    parent = await make_parent(services, tenant_a)
    job = tf.jobs.create(model=parent, training_file=training_file,
                         method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1}}})
    assert (job.model, job.base_model, job.parent_model) == (parent, MODEL, parent)
    model = tf.models.get(parent)
    assert (model.base_model, model.tuning, model.parent) == (MODEL, "lora", None)


async def test_cli_training_flags_reach_the_job(cli_env: dict[str, str],  # noqa: F811
                                                services: Any, settings: Any,
                                                training_file: str) -> None:
    if not settings.effective_database_url.startswith("sqlite"):
        pytest.skip("CLI tests run against the SQLite-backed server only")
    job = as_json(tuneforge(
        cli_env, "jobs", "create", "--model", MODEL, "--training-file", training_file,
        "--tuning", "spectrum", "--spectrum-fraction", "0.4", "--max-seq-length", "512",
        "--warmup-ratio", "0.1", "--lr-scheduler", "constant", "--weight-decay", "auto",
        "--gradient-accumulation-steps", "2", "--optimizer", "adamw",
        "--gradient-checkpointing", "on", "--validation-split", "0.2", "--eval-interval", "5",
        "--early-stopping-patience", "3", "--early-stopping-min-delta", "0.01", "--json"))
    spec = await services.protocol.spec(job["id"])
    assert spec.training == TrainingConfig(
        tuning="spectrum", spectrum_fraction=0.4, max_seq_length=512, warmup_ratio=0.1,
        lr_scheduler="constant", weight_decay="auto", gradient_accumulation_steps=2,
        optimizer="adamw", gradient_checkpointing="on", validation_split=0.2, eval_interval=5,
        early_stopping=EarlyStopping(patience=3, min_delta=0.01))
    assert job["training"]["spectrum_fraction"] == 0.4

    refused = tuneforge(cli_env, "jobs", "create", "--model", MODEL, "--training-file",
                        training_file, "--early-stopping-patience", "2", "--json")
    assert refused.returncode == 1
    assert json.loads(refused.stdout)["error"]["param"] == "training.early_stopping"
