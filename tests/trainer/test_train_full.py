"""Full fine-tuning on the real SmolLM2-135M: every weight trains, the output is a plain model
directory, and a job that cannot fit fails before any weight is loaded."""

from __future__ import annotations

import time

import pytest

from tests.trainer.conftest import Recorder, make_spec
from tests.trainer.tuning_helpers import (
    SERVED,
    answered_in_format,
    answers,
    changed_tensors,
    load_weights,
)
from trainer.errors import OUT_OF_MEMORY, UNSUPPORTED, TrainingError
from trainer.samples import arithmetic_chat, heldout_prompts, write_jsonl
from trainer.train import train
from trainer.tuning import decide_tuning
from tuneforge.domain import Quantization, TuningType
from tuneforge.memory import ModelShape

pytestmark = pytest.mark.train

MiB = 1024**2


@pytest.fixture(scope="module")
def full_run(model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("full")
    train_file = write_jsonl(arithmetic_chat(24, seed=1), root / "train.jsonl")
    recorder = Recorder()
    # 6 steps at 1e-5 x 10 = 1e-4, a flat rate: enough for a 135M model to take up the format.
    spec = make_spec(n_epochs=1, batch_size=4, learning_rate_multiplier=10,
                     training={"tuning": "full", "lr_scheduler": "constant", "warmup_ratio": 0,
                               "weight_decay": 0})
    result = train(spec, model_dir, train_file, None, root / "out", recorder.callbacks(),
                   served_model_name=SERVED, max_length=48)
    return result, recorder


def test_full_fine_tuning_trains_every_weight_and_learns_the_format(full_run, model_dir,
                                                                    tokenizer):
    result, recorder = full_run
    assert result.status == "succeeded"
    assert result.tuning == TuningType.FULL
    assert result.adapter_dir is None
    messages = " | ".join(m for m, _ in recorder.messages)
    assert "full fine-tuning" in messages and "fp32 on CPU" in messages
    losses = recorder.losses()
    assert sum(losses[-2:]) / 2 < 0.5 * sum(losses[:2]) / 2
    merged = result.merged_dir
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {
        p.name for p in merged.iterdir()}
    assert not (merged / "adapter_config.json").exists()
    base, tuned = load_weights(model_dir), load_weights(merged)
    changed = changed_tensors(base, tuned)
    # Every decoder matrix moved (embeddings too; the norms may barely move in 6 steps).
    assert sum(".layers." in n and n.endswith("proj.weight") for n in changed) == 30 * 7
    # The base never answers "ANSWER: …" (test_train_sft checks it); the tuned model does.
    assert answered_in_format(answers(merged, tokenizer, heldout_prompts(4))) >= 3


def test_full_checkpoints_are_full_model_checkpoints(full_run):
    _, recorder = full_run
    assert recorder.checkpoints
    _, path, _ = recorder.checkpoints[-1]
    names = {p.name for p in path.iterdir()}
    assert "model.safetensors" in names and "adapter_config.json" not in names


def test_full_that_cannot_fit_fails_at_once_with_the_estimate(model_dir):
    shape = ModelShape.from_dir(model_dir)
    spec = make_spec(training={"tuning": "full"})
    started = time.monotonic()
    with pytest.raises(TrainingError) as caught:
        decide_tuning(spec, shape, None, batch_size=4, max_length=1024, ram_bytes=256 * MiB)
    assert time.monotonic() - started < 1
    error = caught.value
    assert error.code == OUT_OF_MEMORY
    assert "needs about" in error.message and "0.25 GiB of RAM available" in error.message
    # On a GPU with 1 GiB free: same check, against free GPU memory.
    with pytest.raises(TrainingError, match="GPU memory free"):
        decide_tuning(spec, shape, 1024 * MiB, batch_size=32, max_length=4096)
    # With room, it is decided and the estimate travels with the decision.
    decision = decide_tuning(spec, shape, None, batch_size=4, max_length=128,
                             ram_bytes=64 * 1024 * MiB)
    assert decision.tuning == TuningType.FULL and decision.quantization == Quantization.NONE
    assert decision.estimated_bytes and decision.estimated_bytes > shape.n_params * 4


def test_auto_and_adapter_decisions(model_dir):
    shape = ModelShape.from_dir(model_dir)
    cpu_auto = decide_tuning(make_spec(training={"tuning": "auto"}), shape, None,
                             batch_size=4, max_length=128)
    assert cpu_auto.tuning == TuningType.LORA and "CPU" in cpu_auto.reason
    gpu_auto = decide_tuning(make_spec(training={"tuning": "auto"}), shape, 80 * 1024 * MiB,
                             batch_size=4, max_length=128)
    assert gpu_auto.tuning == TuningType.FULL  # a 135M model fits anywhere
    qlora = decide_tuning(make_spec(training={"tuning": "qlora"}), shape, None,
                          batch_size=4, max_length=128)
    assert qlora.quantization == Quantization.NF4
    with pytest.raises(TrainingError) as caught:
        decide_tuning(make_spec(training={"optimizer": "paged_adamw_8bit"}), shape, None,
                      batch_size=4, max_length=128)
    assert caught.value.code == UNSUPPORTED and "paged_adamw_8bit" in caught.value.message
