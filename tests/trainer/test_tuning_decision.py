"""One tuning decision (`tuneforge.memory.decide_tuning`): the worker fails a job exactly where
the plan reports that it cannot run, with the same reason, on every kind of device."""

from __future__ import annotations

import pytest

from server.service.plan_devices import Device, JobData, plan_device
from tests.trainer.conftest import make_spec
from trainer.errors import TrainingError
from trainer.tuning import decide_tuning
from tuneforge.domain import DpoHyperparameters, MethodType, TuningType
from tuneforge.memory import GIB, ModelShape

SEVEN_B = ModelShape(n_params=7_000_000_000, hidden_size=4096, n_layers=32, vocab_size=32000,
                     intermediate_size=11008)


@pytest.mark.parametrize("method", ["supervised", "dpo"])
@pytest.mark.parametrize("tuning", ["auto", "lora", "qlora", "full", "spectrum"])
@pytest.mark.parametrize("gib", [12, 40, 141])
def test_the_worker_fails_where_the_plan_says_it_would(method: str, tuning: str,
                                                       gib: int) -> None:
    spec = make_spec(method, quantization="auto", batch_size=8,
                     training={"tuning": tuning, "max_seq_length": 1024})
    job = JobData(method=MethodType(method), hyperparameters=DpoHyperparameters(batch_size=8),
                  lora=spec.lora, training=spec.training, shape=SEVEN_B, n_examples=2000,
                  n_validation_file_examples=None, train_tokens=None,
                  validation_file_tokens=None)
    planned = plan_device(job, Device("gpu", "gpu", gib * GIB, 100e12))
    try:
        decided = decide_tuning(spec, SEVEN_B, gib * GIB, batch_size=8, max_length=1024)
    except TrainingError as error:
        assert planned.fits is False and error.message == planned.reason
        return
    assert planned.fits is True
    assert (decided.tuning.value, decided.quantization.value, decided.reason) == (
        planned.tuning, planned.quantization, planned.reason)


def test_dpo_counts_the_full_weight_reference_copy() -> None:
    """A 7B model fully fine-tunes on 141 GiB, but not with DPO's frozen fp32 reference next
    to it: "auto" picks LoRA there instead of a full fine-tune that cannot fit."""
    sft = decide_tuning(make_spec(training={"tuning": "auto"}), SEVEN_B, 141 * GIB,
                        batch_size=1, max_length=128)
    dpo = decide_tuning(make_spec("dpo", training={"tuning": "auto"}), SEVEN_B, 141 * GIB,
                        batch_size=1, max_length=128)
    assert (sft.tuning, dpo.tuning) == (TuningType.FULL, TuningType.LORA)
