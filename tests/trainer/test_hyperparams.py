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
from tuneforge.domain import DpoHyperparameters, LoraConfig, MethodType, Quantization

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
