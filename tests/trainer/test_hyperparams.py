"""Resolution of "auto" hyperparameters and of the quantization mode."""

from __future__ import annotations

import pytest

from trainer.hyperparams import (
    ModelShape,
    auto_batch_size,
    auto_n_epochs,
    learning_rate,
    resolve_hyperparameters,
    resolve_quantization,
)
from tuneforge.domain import (
    DpoHyperparameters,
    LoraConfig,
    LrScheduler,
    MethodType,
    OptimizerName,
    Quantization,
    TrainingConfig,
    TuningType,
)
from tuneforge.resolve import expected_steps, held_out_count, resolve_training

GIB = 1024**3


@pytest.mark.parametrize(
    ("n", "epochs"),
    [(1, 10), (10, 10), (20, 5), (33, 4), (34, 3), (1000, 3), (10_000, 2), (10**6, 1)],
)
def test_auto_epochs(n, epochs):
    assert auto_n_epochs(n) == epochs


@pytest.mark.parametrize(("n", "size"), [(10, 1), (63, 1), (64, 2), (128, 4), (256, 8), (10**5, 8)])
def test_auto_batch_size(n, size):
    assert auto_batch_size(n) == size
    assert auto_batch_size(10**5, cap=32) == 32


def test_resolve_auto_and_explicit_values():
    auto = resolve_hyperparameters(DpoHyperparameters(), MethodType.SUPERVISED, 100)
    assert (auto.n_epochs, auto.batch_size, auto.learning_rate_multiplier) == (3, 2, 1.0)
    assert auto.beta is None
    assert learning_rate(auto) == pytest.approx(2e-4)
    dpo = resolve_hyperparameters(DpoHyperparameters(), MethodType.DPO, 100)
    assert dpo.beta == 0.1
    explicit = resolve_hyperparameters(
        DpoHyperparameters(n_epochs=7, batch_size=3, learning_rate_multiplier=0.5, beta=0.3),
        MethodType.DPO,
        100,
    )
    assert (explicit.n_epochs, explicit.batch_size, explicit.beta) == (7, 3, 0.3)
    assert learning_rate(explicit) == pytest.approx(1e-4)


def test_model_shape_reads_the_real_model(model_dir):
    shape = ModelShape.from_dir(model_dir)
    assert shape.n_params == 134_515_008
    assert (shape.hidden_size, shape.n_layers) == (576, 30)


SMALL = ModelShape(
    n_params=135_000_000, hidden_size=576, n_layers=30, vocab_size=49152, intermediate_size=1536
)
BIG = ModelShape(
    n_params=70_000_000_000,
    hidden_size=8192,
    n_layers=80,
    vocab_size=128256,
    intermediate_size=28672,
)


def test_quantization_auto():
    auto = LoraConfig()
    cpu = resolve_quantization(auto, BIG, batch_size=8, max_length=1024, free_bytes=None)
    assert cpu.quantization == Quantization.NONE and "CPU" in cpu.reason
    fits = resolve_quantization(auto, SMALL, batch_size=8, max_length=1024, free_bytes=70 * GIB)
    assert fits.quantization == Quantization.NONE
    big = resolve_quantization(auto, BIG, batch_size=1, max_length=1024, free_bytes=78 * GIB)
    assert big.quantization == Quantization.NF4 and "GiB" in big.reason
    asked = resolve_quantization(
        LoraConfig(quantization="4bit"), SMALL, batch_size=1, max_length=128, free_bytes=None
    )
    assert asked.quantization == Quantization.NF4
    none = resolve_quantization(
        LoraConfig(quantization="none"), BIG, batch_size=1, max_length=128, free_bytes=GIB
    )
    assert none.quantization == Quantization.NONE


def _resolve(training: TrainingConfig, **kwargs):
    args = {"batch_size": 4, "tuning": TuningType.LORA, "tuning_reason": "asked",
            "device": "cpu", "activations_fit": True, "has_validation": False,
            "expected_steps": 100, **kwargs}
    return resolve_training(training, **args)


def test_resolve_training_defaults():
    resolved = _resolve(TrainingConfig())
    assert resolved.lr_scheduler == LrScheduler.COSINE
    assert (resolved.warmup_ratio, resolved.weight_decay) == (0.05, 0.01)
    assert (resolved.gradient_accumulation_steps, resolved.effective_batch_size) == (1, 4)
    assert resolved.optimizer == OptimizerName.ADAMW
    assert resolved.gradient_checkpointing is False
    assert (resolved.max_seq_length, resolved.eval_interval) == (1024, 10)
    assert resolved.spectrum_fraction is None and resolved.early_stopping is None
    assert (resolved.tuning, resolved.tuning_reason) == (TuningType.LORA, "asked")


def test_resolve_training_explicit_values_and_rules():
    asked = TrainingConfig(
        max_seq_length=256, warmup_ratio=0.2, lr_scheduler="constant", weight_decay=0.3,
        gradient_accumulation_steps=3, optimizer="paged_adamw_8bit", gradient_checkpointing="on",
        validation_split=0.2, eval_interval=7, early_stopping={"patience": 2},
    )
    resolved = _resolve(asked)
    assert resolved.max_seq_length == 256
    assert (resolved.warmup_ratio, resolved.weight_decay) == (0.2, 0.3)
    assert resolved.lr_scheduler == LrScheduler.CONSTANT
    assert (resolved.gradient_accumulation_steps, resolved.effective_batch_size) == (3, 12)
    assert resolved.optimizer == OptimizerName.PAGED_ADAMW_8BIT
    assert resolved.gradient_checkpointing is True
    assert (resolved.validation_split, resolved.eval_interval) == (0.2, 7)
    assert resolved.early_stopping.patience == 2
    # A validation file wins over the split; early stopping needs validation data.
    with_file = _resolve(asked.model_copy(update={"validation_split": None}), has_validation=True)
    assert with_file.validation_split is None and with_file.early_stopping is not None
    no_data = _resolve(TrainingConfig(early_stopping={"patience": 2}))
    assert no_data.early_stopping is None
    # Gradient checkpointing "auto": only where activations do not fit, never on CPU.
    assert _resolve(TrainingConfig(), device="cuda", activations_fit=False).gradient_checkpointing
    assert not _resolve(TrainingConfig(), device="cuda").gradient_checkpointing
    assert not _resolve(TrainingConfig(), activations_fit=False).gradient_checkpointing
    spectrum = _resolve(TrainingConfig(tuning="spectrum"), tuning=TuningType.SPECTRUM)
    assert spectrum.spectrum_fraction == 0.25
    assert _resolve(TrainingConfig(), expected_steps=5).eval_interval == 1


def test_expected_steps_and_held_out_counts():
    assert expected_steps(10, 2, 1, 3) == 15
    assert expected_steps(10, 2, 2, 3) == 9  # ceil(10 / 4) per epoch
    assert expected_steps(1, 8, 4, 1) == 1
    assert [held_out_count(n, 0.1) for n in (1, 2, 5, 10, 26)] == [0, 1, 1, 1, 3]
    assert held_out_count(4, 0.5) == 2
    assert learning_rate(resolve_hyperparameters(DpoHyperparameters(), MethodType.SUPERVISED, 10),
                         TuningType.FULL) == pytest.approx(1e-5)
