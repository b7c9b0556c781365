"""The `training` extension and `ft:` continuation over gRPC: the same objects as REST, and the
same refusals with the same `param`."""

from __future__ import annotations

from typing import Any

import grpc
import httpx
import pytest
from tuneforge_client import TuneForge
from tuneforge_client._pb.jsonmap import to_message
from tuneforge_client._pb.tuneforge.v1 import fine_tuning_pb2 as ft_pb2
from tuneforge_client._pb.tuneforge.v1 import models_pb2

from tests.api.test_training_extension import make_parent
from tests.grpc.conftest import MODEL, Stubs, error_of
from tests.grpc.test_parity import same_but_ids
from tuneforge.domain import checkpoint_model_name

TRAINING: dict[str, Any] = {
    "tuning": "qlora", "max_seq_length": 256, "warmup_ratio": 0.1, "lr_scheduler": "constant",
    "weight_decay": "auto", "gradient_accumulation_steps": 4, "optimizer": "adamw",
    "gradient_checkpointing": "off", "validation_split": 0.25, "eval_interval": "auto",
    "early_stopping": {"patience": 2, "min_delta": 0.5},
}


async def test_training_and_lineage_are_the_same_over_both_transports(
        arest: httpx.AsyncClient, tf: TuneForge, services: Any, tenant_a: Any,
        training_file: str) -> None:
    body = {"model": MODEL, "training_file": training_file, "training": TRAINING}
    over_rest = (await arest.post("/fine_tuning/jobs", json=body)).json()
    over_grpc = tf.jobs.create(**body).to_dict()  # type: ignore[arg-type]
    assert over_grpc["training"] == TRAINING
    same_but_ids(over_rest, over_grpc)
    assert tf.jobs.get(over_grpc["id"]).to_dict() == \
        (await arest.get(f"/fine_tuning/jobs/{over_grpc['id']}")).json()

    parent = await make_parent(services, tenant_a, steps=(3,), stored_steps=(3,))
    for model in (parent, checkpoint_model_name(parent, 3)):
        body = {"model": model, "training_file": training_file,
                "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1}}}}
        over_rest = (await arest.post("/fine_tuning/jobs", json=body)).json()
        over_grpc = tf.jobs.create(**body).to_dict()
        assert over_grpc["parent_model"] == model and over_grpc["base_model"] == MODEL
        same_but_ids(over_rest, over_grpc)
    for model in (parent, checkpoint_model_name(parent, 3)):
        assert tf.models.get(model).to_dict() == (await arest.get(f"/models/{model}")).json()
    assert tf.models.get(parent).tuning == "lora"


def test_typed_training_message(stubs: Stubs, training_file: str) -> None:
    job = stubs(stubs.jobs.Create, ft_pb2.CreateJobRequest(
        model=MODEL, training_file=training_file, training=ft_pb2.Training(
            tuning="spectrum", spectrum_fraction=0.5,
            warmup_ratio=ft_pb2.AutoDouble(number=0.2),
            eval_interval=ft_pb2.AutoInt(number=7), validation_split=0.1,
            early_stopping=ft_pb2.EarlyStopping(patience=4))))
    training = job.training
    assert (training.tuning, training.spectrum_fraction) == ("spectrum", 0.5)
    assert training.warmup_ratio.number == pytest.approx(0.2)
    assert training.eval_interval.number == 7 and training.weight_decay.auto
    assert training.max_seq_length == 1024  # the default, shown
    assert (training.early_stopping.patience, training.early_stopping.min_delta) == (4, 0.0)
    assert not job.HasField("base_model") and not job.HasField("parent_model")
    base = stubs(stubs.models.Get, models_pb2.GetModelRequest(model=MODEL))
    assert not base.HasField("tuning") and not base.HasField("parent")


@pytest.mark.parametrize(("extra", "param"), [
    ({"training": {"warmup_ratio": 0.7}}, "training.warmup_ratio"),
    ({"training": {"early_stopping": {"patience": 2}}}, "training.early_stopping"),
    ({"training": {"tuning": "lora", "spectrum_fraction": 0.2}}, "training.spectrum_fraction"),
    ({"training": {"tuning": "full"}, "lora": {"rank": 4}}, "lora"),
    ({"training": {"tuning": "qlora"}, "lora": {"quantization": "none"}}, "lora.quantization"),
    ({"model": "ft:nobody:org-x::abc"}, "model"),
])
async def test_refusals_match_rest(arest: httpx.AsyncClient, tf: TuneForge, stubs: Stubs,
                                   training_file: str, extra: dict[str, Any],
                                   param: str) -> None:
    body = {"model": MODEL, "training_file": training_file, **extra}
    over_rest = await arest.post("/fine_tuning/jobs", json=body)
    assert over_rest.status_code == 400
    request = to_message(body, ft_pb2.CreateJobRequest)
    with pytest.raises(grpc.RpcError) as err:
        stubs(stubs.jobs.Create, request)
    code, error = error_of(err.value)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert error["param"] == over_rest.json()["error"]["param"] == param
    assert error["code"] == over_rest.json()["error"]["code"]
