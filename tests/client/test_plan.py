"""`jobs.plan(...)` in the SDK over gRPC and REST (the same plan, field for field, as the raw
REST JSON), and `tuneforge jobs plan` in the command line."""

from __future__ import annotations

import httpx
import pytest
from tuneforge_client import BadRequestError, JobPlan, TuneForge

from tests.api.data import chat_jsonl
from tests.client.test_cli import as_json, cli_env, tuneforge  # noqa: F401 - fixture
from tests.conftest import MODEL_CACHE
from tests.grpc.conftest import MODEL


@pytest.fixture(scope="module", autouse=True)
def _model_dir() -> None:
    """The converted base model where the API server looks for its tokenizer."""
    from tuneforge.base_models import EMBEDDED_MODEL_NAME, prepare_base_model

    prepare_base_model(EMBEDDED_MODEL_NAME, "", MODEL_CACHE)


def _bad_file() -> bytes:
    lines = chat_jsonl(12).decode().splitlines()
    lines[3] = '{"messages": [{"role": "user", "content": "no answer"}]}'
    lines[7] = '{"instruction": "wrong format", "output": "x"}'
    return ("\n".join(lines) + "\n").encode()


def test_sdk_plan_is_the_same_over_grpc_and_rest(tf: TuneForge, tf_rest: TuneForge,
                                                 rest: httpx.Client) -> None:
    training = tf.files.upload(_bad_file(), filename="train.jsonl").id
    validation = tf.files.upload(chat_jsonl(3), filename="valid.jsonl").id
    request = {
        "model": MODEL, "training_file": training, "validation_file": validation,
        "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}},
        "training": {"tuning": "auto", "max_seq_length": 256,
                     "early_stopping": {"patience": 2}},
    }
    over_grpc = tf.jobs.plan(**request)  # type: ignore[arg-type]
    over_rest = tf_rest.jobs.plan(**request)  # type: ignore[arg-type]
    assert isinstance(over_grpc, JobPlan)
    assert over_grpc == over_rest
    assert over_rest.to_dict() == rest.post("/fine_tuning/jobs/plan", json=request).json()

    assert over_grpc.valid is False
    assert [(e.line, e.code) for e in over_grpc.training_data.errors] == [
        (4, "invalid_training_file"), (8, "invalid_training_file")]
    assert over_grpc.training_data.n_examples == 10
    assert over_grpc.validation_data is not None
    assert over_grpc.validation_data.n_examples == 3 and not over_grpc.validation_data.errors
    cpu = over_grpc.devices[0]
    assert (cpu.name, cpu.tuning, cpu.hyperparameters.n_epochs) == ("cpu", "lora", 2)
    assert cpu.validation_examples == 3 and cpu.training.early_stopping is not None
    assert cpu.estimated_seconds and cpu.estimated_seconds > 0
    assert {d.tuning for d in over_grpc.devices[1:]} == {"full"}
    assert [w.code for w in over_grpc.warnings][:2] == ["invalid_data", "few_examples"]


def test_sdk_plan_errors_are_create_errors(tf: TuneForge, tf_rest: TuneForge,
                                           training_file: str) -> None:
    for client in (tf, tf_rest):
        with pytest.raises(BadRequestError) as caught:
            client.jobs.plan(model=MODEL, training_file=training_file,
                             training={"validation_split": 0.9})  # type: ignore[typeddict-item]
        assert caught.value.param == "training.validation_split"
        with pytest.raises(BadRequestError) as caught:
            client.jobs.plan(model=MODEL, training_file="file-nope")
        assert caught.value.param == "training_file"


def test_cli_plan(cli_env: dict[str, str], training_file: str,  # noqa: F811
                  settings) -> None:  # type: ignore[no-untyped-def]
    if not settings.effective_database_url.startswith("sqlite"):
        pytest.skip("CLI tests run against the SQLite-backed server only (as tests/client/"
                    "test_cli.py)")
    plan = as_json(tuneforge(cli_env, "jobs", "plan", "--model", MODEL, "--training-file",
                             training_file, "--n-epochs", "1", "--batch-size", "4",
                             "--tuning", "auto", "--max-seq-length", "64", "--json"))
    assert plan["object"] == "fine_tuning.job.plan" and plan["valid"] is True
    cpu = plan["devices"][0]
    assert cpu["steps"] == 3 and cpu["training"]["max_seq_length"] == 64
    assert [w["code"] for w in plan["warnings"]] == ["few_examples", "few_steps"]

    shown = tuneforge(cli_env, "jobs", "plan", "--model", MODEL, "--training-file",
                      training_file, "--n-epochs", "1", "--batch-size", "4")
    assert shown.returncode == 0, shown.stderr
    for text in ("openai_chat", "12 example(s)", "gpu-80gib", "lora", "warning:",
                 "optimizer step"):
        assert text in shown.stdout, shown.stdout

    refused = tuneforge(cli_env, "jobs", "plan", "--model", MODEL, "--training-file",
                        training_file, "--validation-split", "0.9", "--json")
    assert refused.returncode == 1
    assert '"param": "training.validation_split"' in refused.stdout
