"""DPO with LoRA (reference = the base with the adapter disabled) on the real model."""

from __future__ import annotations

import math

import pytest

from tests.trainer.conftest import Recorder, make_spec
from trainer.samples import preference_pairs, write_jsonl
from trainer.train import train

pytestmark = pytest.mark.train


def test_dpo_loss_falls_from_log2_and_margins_grow(model_dir, tmp_path):
    train_file = write_jsonl(preference_pairs(8, seed=1), tmp_path / "train.jsonl")
    recorder = Recorder()
    spec = make_spec("dpo", n_epochs=2, batch_size=4, learning_rate_multiplier=2)
    result = train(
        spec,
        model_dir,
        train_file,
        None,
        tmp_path / "out",
        recorder.callbacks(),
        served_model_name="SmolLM2-135M-Instruct",
        max_length=64,
        merge=False,
    )
    assert result.status == "succeeded"
    assert result.hyperparameters.beta == 0.1  # "auto"
    assert result.step == result.total_steps == 4
    losses = recorder.losses()
    # The adapter starts as a no-op, so policy == reference and the loss is log(2).
    assert losses[0] == pytest.approx(math.log(2), abs=1e-3)
    assert losses[-1] < 0.6
    margins = [m["train_reward_margin"] for m in recorder.metrics if "train_reward_margin" in m]
    assert margins[0] == pytest.approx(0.0, abs=1e-3) and margins[-1] > 0.2
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()
    assert result.merged_dir is None
