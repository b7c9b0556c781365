"""Early stopping on the validation loss, the best checkpoint, and the validation split, on
the real SmolLM2-135M."""

from __future__ import annotations

import random

import pytest
import torch

from tests.trainer.conftest import Recorder, make_spec
from trainer.samples import arithmetic_chat, write_jsonl
from trainer.train import train

pytestmark = pytest.mark.train

SERVED = "SmolLM2-135M-Instruct"


def _contradicting(n: int, *, seed: int) -> list[dict]:
    """Arithmetic answered in another format than the training data's "ANSWER: n": the more
    the model learns the training format, the worse its loss on these."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(2, 60), rng.randint(2, 60)
        rows.append({"messages": [
            {"role": "user", "content": f"What is {a} plus {b}?"},
            {"role": "assistant", "content": f"Well, {a} plus {b} gives {a + b}, I believe."},
        ]})
    return rows


def _tensors(path):
    from safetensors.torch import load_file

    return load_file(str(path / "adapter_model.safetensors"))


def test_training_stops_when_validation_stops_improving_and_keeps_the_best(model_dir, tmp_path):
    train_file = write_jsonl(arithmetic_chat(16, seed=21), tmp_path / "train.jsonl")
    valid_file = write_jsonl(_contradicting(4, seed=22), tmp_path / "valid.jsonl")
    recorder = Recorder()
    spec = make_spec(
        batch_size=4, n_epochs=4, learning_rate_multiplier=4,
        training={"warmup_ratio": 0, "eval_interval": 1, "max_seq_length": 96,
                  "early_stopping": {"patience": 2, "min_delta": 0.0}},
    )
    result = train(spec, model_dir, train_file, valid_file, tmp_path / "out",
                   recorder.callbacks(), served_model_name=SERVED, merge=False, device="cpu")
    assert result.status == "succeeded"
    assert result.stopped_early and result.step < result.total_steps == 16
    evaluated = {m["step"]: m["valid_loss"] for m in recorder.metrics
                 if m.get("valid_loss") is not None and "full_valid_loss" not in m}
    assert sorted(evaluated) == list(range(1, result.step + 1))  # every step (eval_interval 1)
    best = min(evaluated, key=evaluated.get)
    assert result.best_step == best
    assert result.step == best + 2  # two evaluations in a row without improvement
    message = next(m for m, _ in recorder.messages if m.startswith("Best checkpoint:"))
    assert f"step {best} " in message
    assert "no improvement > 0 for 2 evaluations" in message
    assert f"{evaluated[best]:.4f}" in message

    # The best evaluation was saved as a checkpoint, kept beside the last ones; the job's
    # adapter is its weights, not those of the step training stopped at.
    saved = {step: (path, metrics) for step, path, metrics in recorder.checkpoints}
    best_path, best_metrics = saved[best]
    assert best_metrics["reason"] == "best" and best_path.is_dir()
    adapter = _tensors(result.adapter_dir)
    for name, tensor in _tensors(best_path).items():
        assert torch.equal(adapter[name], tensor), name
    last_path, last_metrics = saved[result.step]
    assert last_metrics["best_step"] == best
    assert any(not torch.equal(adapter[n], t) for n, t in _tensors(last_path).items())
    # The last evaluation measures the weights kept.
    final = recorder.metrics[-1]
    assert final["full_valid_loss"] == pytest.approx(evaluated[best], rel=1e-4)
    assert final["best_step"] == best


def test_validation_split_holds_out_examples_and_reports_valid_loss(model_dir, tmp_path):
    train_file = write_jsonl(arithmetic_chat(12, seed=31), tmp_path / "train.jsonl")
    recorder = Recorder()
    spec = make_spec(batch_size=3, n_epochs=1, learning_rate_multiplier=4,
                     training={"validation_split": 0.25, "max_seq_length": 64})
    result = train(spec, model_dir, train_file, None, tmp_path / "out", recorder.callbacks(),
                   served_model_name=SERVED, merge=False, device="cpu")
    assert result.status == "succeeded"
    messages = [m for m, _ in recorder.messages]
    assert "Validation split: 3 of 12 training examples held out for validation (0.25)" in messages
    assert any(m.startswith("Training data: 9 examples") for m in messages)
    assert "Validation data: 3 examples" in messages
    assert result.step == result.total_steps == 3  # 9 examples, 3 per step
    assert result.training.validation_split == 0.25
    assert result.training.eval_interval == 1  # about 10 evaluations per run, at least 1
    steps = [m for m in recorder.metrics if "full_valid_loss" not in m]
    assert all(m["valid_loss"] is not None and m["valid_mean_token_accuracy"] is not None
               for m in steps)
    assert recorder.metrics[-1]["full_valid_loss"] is not None
    assert result.best_step is None and not result.stopped_early


def test_patience_min_delta_and_best_weights_round_trip(tmp_path):
    from trainer.early_stopping import BEST_FILE, EarlyStopping
    from tuneforge.domain import EarlyStopping as Config

    early = EarlyStopping(Config(patience=2, min_delta=0.1), tmp_path / "best")
    verdicts = [early.update(step, loss) for step, loss in
                [(1, 2.0), (2, 1.8), (3, 1.75), (4, 1.71), (5, 1.5)]]
    assert [(v.improved, v.stop) for v in verdicts] == [
        (True, False), (True, False), (False, False), (False, True), (True, False)]
    assert (early.best_step, early.best_loss) == (5, 1.5)
    assert early.why() == "reached the last step"  # improved again: the stop was not taken
    early.update(6, 1.45)
    early.update(7, 1.9)
    assert early.stopped_early and early.why() == "no improvement > 0.1 for 2 evaluations"
    resumed = EarlyStopping(Config(patience=2, min_delta=0.1), tmp_path / "b2", early.state())
    assert (resumed.best_step, resumed.best_loss, resumed.bad_evaluations) == (5, 1.5, 2)

    # The trainable weights only are kept, travel with a checkpoint, and come back.
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 1))
    model[1].weight.requires_grad_(False)
    early.keep(model)
    kept = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    checkpoint = tmp_path / "checkpoint-9"
    checkpoint.mkdir()
    early.copy_into(checkpoint)
    assert (checkpoint / BEST_FILE).is_file()
    resumed.take_from(checkpoint)
    assert resumed.restore(model)
    for name, p in model.named_parameters():
        frozen = name == "1.weight"
        assert torch.equal(p, kept[name] + 1.0 if frozen else kept[name]), name
