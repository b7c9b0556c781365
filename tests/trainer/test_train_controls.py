"""The training controls (`training` extension) reach the TRL trainer, its optimizer and its
scheduler, on the real SmolLM2-135M: built through the same stages `train` runs, and one short
real run for what only training shows (steps, tokens, logged learning rates)."""

from __future__ import annotations

import itertools
import math
import re

import pytest
import torch

from tests.trainer.conftest import Recorder, make_spec
from trainer.encode import ChatFormatter
from trainer.errors import UNSUPPORTED, TrainingError
from trainer.progress import RunState
from trainer.samples import arithmetic_chat, write_jsonl
from trainer.stages.build import build_session
from trainer.stages.execute import execute_training
from trainer.stages.finish import release
from trainer.stages.load_data import load_data
from trainer.stages.plan import plan_run
from trainer.train import train
from tuneforge.domain import LrScheduler, OptimizerName

pytestmark = pytest.mark.train

SERVED = "SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def train_file(tmp_path_factory):
    return write_jsonl(arithmetic_chat(8, seed=11, explain=True),
                       tmp_path_factory.mktemp("controls") / "train.jsonl")


def _session(model_dir, tokenizer, train_file, out, *, training, max_steps=None, **hp):
    """Stages 1-3 of `train` (data, plan, build) without training."""
    spec = make_spec(training=training, **{"batch_size": 2, "n_epochs": 1, **hp})
    said: list[str] = []

    def say(message, level="info"):
        said.append(message)

    data = load_data(spec, ChatFormatter.for_tokenizer(tokenizer), train_file, None,
                     spec.training.max_seq_length or 1024, say, None)
    plan = plan_run(spec, model_dir, data, say=say, has_validation_file=False,
                    max_length=spec.training.max_seq_length or 1024, max_steps=max_steps,
                    device="cpu", cpu_threads=1)
    session = build_session(
        spec, plan, data, tokenizer=tokenizer, base_model_dir=model_dir, parent_dir=None,
        output_dir=out, callbacks=Recorder().callbacks(), run=RunState(plan.expected_steps),
        served_model_name=SERVED, resume_from=None, prior={}, max_steps=max_steps, say=say)
    return session, plan, said


def _schedule(trainer, steps: int) -> list[float]:
    trainer.create_optimizer_and_scheduler(num_training_steps=steps)
    rates = []
    for _ in range(steps):
        rates.append(trainer.lr_scheduler.get_last_lr()[0])
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
    return rates


def test_schedule_warmup_weight_decay_and_optimizer(model_dir, tokenizer, train_file, tmp_path):
    cosine, plan, said = _session(
        model_dir, tokenizer, train_file, tmp_path / "cosine",
        training={"warmup_ratio": 0.2, "weight_decay": 0.3}, learning_rate_multiplier=2)
    peak = 4e-4
    assert plan.learning_rate == pytest.approx(peak)
    rates = _schedule(cosine.trainer, 10)
    # 2 warmup steps (20% of 10), then cosine decay towards 0.
    assert rates[:3] == pytest.approx([0, peak / 2, peak])
    assert all(a > b for a, b in itertools.pairwise(rates[2:]))
    assert rates[6] == pytest.approx(peak * 0.5 * (1 + math.cos(math.pi * 4 / 8)))
    optimizer = cosine.trainer.optimizer
    assert isinstance(optimizer, torch.optim.AdamW)
    decayed = [g for g in optimizer.param_groups if g["params"] and g["weight_decay"] == 0.3]
    assert decayed and all(p.requires_grad for g in decayed for p in g["params"])
    assert any("cosine schedule, warmup_ratio=0.2, weight_decay=0.3" in m for m in said)
    release(cosine.trainer)

    constant, plan, _ = _session(
        model_dir, tokenizer, train_file, tmp_path / "constant",
        training={"lr_scheduler": "constant", "warmup_ratio": 0.2})
    rates = _schedule(constant.trainer, 10)
    assert rates[:3] == pytest.approx([0, 1e-4, 2e-4])
    assert rates[2:] == pytest.approx([2e-4] * 8)  # flat after the warmup
    assert plan.training.weight_decay == 0.01  # the default
    assert {g["weight_decay"] for g in constant.trainer.optimizer.param_groups
            if g["params"]} >= {0.01}
    release(constant.trainer)

    linear, _, _ = _session(model_dir, tokenizer, train_file, tmp_path / "linear",
                            training={"lr_scheduler": "linear", "warmup_ratio": 0})
    rates = _schedule(linear.trainer, 4)
    assert rates == pytest.approx([2e-4, 1.5e-4, 1e-4, 0.5e-4])
    release(linear.trainer)


@pytest.mark.parametrize("switch", ["on", "off"])
def test_gradient_checkpointing_switch_reaches_the_model(model_dir, tokenizer, train_file,
                                                         tmp_path, switch):
    session, plan, _ = _session(model_dir, tokenizer, train_file, tmp_path,
                                training={"gradient_checkpointing": switch,
                                          "max_seq_length": 64}, max_steps=1)
    assert plan.training.gradient_checkpointing is (switch == "on")
    assert session.trainer.args.gradient_checkpointing is (switch == "on")
    execute_training(session, plan, None)
    model = session.trainer.model.get_base_model()
    assert model.is_gradient_checkpointing is (switch == "on")
    assert session.trainer.state.global_step == 1
    release(session.trainer)


def test_paged_adamw_8bit_on_cpu_is_refused_before_loading(model_dir, train_file, tmp_path):
    spec = make_spec(training={"optimizer": "paged_adamw_8bit"}, batch_size=2, n_epochs=1)
    with pytest.raises(TrainingError) as info:
        train(spec, model_dir, train_file, None, tmp_path, Recorder().callbacks(),
              served_model_name=SERVED, device="cpu")
    assert info.value.code == UNSUPPORTED
    assert "paged_adamw_8bit" in info.value.message and "CUDA" in info.value.message


def test_accumulation_sequence_length_and_resolved_values(model_dir, train_file, tmp_path):
    recorder = Recorder()
    spec = make_spec(
        batch_size=2, n_epochs=2, learning_rate_multiplier=2,
        training={"gradient_accumulation_steps": 2, "max_seq_length": 64,
                  "lr_scheduler": "constant", "warmup_ratio": 0.25},
    )
    result = train(spec, model_dir, train_file, None, tmp_path / "out", recorder.callbacks(),
                   served_model_name=SERVED, merge=False, device="cpu")
    assert result.status == "succeeded"
    # 8 examples, 2 per batch, 2 batches per optimizer step: 2 steps an epoch.
    assert result.step == result.total_steps == 4
    resolved = result.training
    assert (resolved.gradient_accumulation_steps, resolved.effective_batch_size) == (2, 4)
    assert resolved.max_seq_length == 64 and resolved.lr_scheduler == LrScheduler.CONSTANT
    assert (resolved.warmup_ratio, resolved.weight_decay) == (0.25, 0.01)
    assert resolved.optimizer == OptimizerName.ADAMW and resolved.gradient_checkpointing is False
    assert (resolved.tuning.value, result.tuning.value) == ("lora", "lora")
    # Every example is cut to 64 tokens, and each epoch sees each of them once.
    messages = [m for m, _ in recorder.messages]
    data_event = next(m for m in messages if m.startswith("Training data:"))
    tokens = int(re.search(r"(\d+) tokens after truncation to 64", data_event).group(1))
    assert tokens <= 8 * 64
    assert any("truncated to 64 tokens" in m for m in messages)
    assert result.trained_tokens == 2 * tokens
    hyper = next(m for m in messages if m.startswith("Hyperparameters:"))
    assert "gradient_accumulation_steps=2 (effective batch 4)" in hyper
    assert "constant schedule" in hyper and "max_seq_length=64" in hyper
    # The logged learning rates: one warmup step, then flat at the peak.
    rates = {m["step"]: m["learning_rate"] for m in recorder.metrics}
    assert [rates[s] for s in (1, 2, 3, 4)] == pytest.approx([0, 4e-4, 4e-4, 4e-4])
    losses = recorder.losses()
    assert losses[-1] < losses[0]
