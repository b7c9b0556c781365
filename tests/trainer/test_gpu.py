"""CUDA-only checks: bf16 plan, QLoRA with bitsandbytes NF4 + bf16 compute, auto quantization.

Skipped without a CUDA GPU (the root conftest skips `gpu` tests; the skipif keeps this file
safe when run alone)."""

from __future__ import annotations

import pytest
import torch

from tests.trainer.conftest import Recorder, make_spec
from trainer.device import plan_device
from trainer.samples import arithmetic_chat, write_jsonl
from trainer.train import train
from tuneforge.domain import Quantization

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_cuda_plan_uses_bf16_without_checkpointing_when_memory_allows():
    plan = plan_device(device="cuda", activations_fit=True)
    assert plan.device == "cuda"
    assert plan.bf16 == torch.cuda.is_bf16_supported()
    assert plan.gradient_checkpointing is False
    assert plan_device(device="cuda", activations_fit=False).gradient_checkpointing is True


@pytest.mark.train
@pytest.mark.parametrize("quantization", ["4bit", "auto"])
def test_training_on_cuda(model_dir, tmp_path, quantization):
    train_file = write_jsonl(arithmetic_chat(32, seed=3), tmp_path / "train.jsonl")
    recorder = Recorder()
    spec = make_spec(
        quantization=quantization, n_epochs=2, batch_size=4, learning_rate_multiplier=4
    )
    result = train(
        spec,
        model_dir,
        train_file,
        None,
        tmp_path / "out",
        recorder.callbacks(),
        served_model_name="SmolLM2-135M-Instruct",
        max_length=128,
    )
    assert result.status == "succeeded" and result.device == "cuda"
    expected = Quantization.NF4 if quantization == "4bit" else Quantization.NONE
    assert result.quantization == expected
    losses = recorder.losses()
    assert sum(losses[-3:]) / 3 < 0.6 * sum(losses[:3]) / 3, losses
    assert (result.merged_dir / "model.safetensors").is_file()
