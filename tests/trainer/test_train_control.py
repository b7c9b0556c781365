"""Pause/resume and cancel between steps; reproducibility from the seed."""

from __future__ import annotations

import csv

import pytest

from tests.trainer.conftest import Recorder, make_spec
from trainer.samples import arithmetic_chat, write_jsonl
from trainer.train import train

pytestmark = pytest.mark.train

SERVED = "SmolLM2-135M-Instruct"


def _run(model_dir, train_file, out, recorder, resume_from=None):
    spec = make_spec(n_epochs=2, batch_size=4, learning_rate_multiplier=2, seed=7)
    return train(
        spec,
        model_dir,
        train_file,
        None,
        out,
        recorder.callbacks(),
        served_model_name=SERVED,
        max_length=64,
        merge=False,
        resume_from=resume_from,
    )


def test_pause_then_resume_matches_an_uninterrupted_run(model_dir, tmp_path):
    train_file = write_jsonl(arithmetic_chat(16, seed=5), tmp_path / "train.jsonl")

    full = Recorder()
    uninterrupted = _run(model_dir, train_file, tmp_path / "full", full)
    assert uninterrupted.status == "succeeded" and uninterrupted.step == 8

    first = Recorder(stop_at=3, stop_with="pause")
    paused = _run(model_dir, train_file, tmp_path / "paused", first)
    assert paused.status == "paused"
    assert paused.step == 3
    assert paused.checkpoint_dir is not None and paused.checkpoint_dir.name == "checkpoint-3"
    names = {p.name for p in paused.checkpoint_dir.iterdir()}
    assert {"adapter_model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth"} <= names
    assert [step for step, _, _ in first.checkpoints] == [3]
    assert paused.adapter_dir is None
    # Same seed, same data: the first steps are reproduced exactly.
    assert first.losses() == pytest.approx(full.losses()[:3], rel=1e-4)

    second = Recorder()
    resumed = _run(
        model_dir, train_file, tmp_path / "resumed", second, resume_from=paused.checkpoint_dir
    )
    assert resumed.status == "succeeded"
    assert resumed.step == resumed.total_steps == uninterrupted.total_steps == 8
    assert second.metrics[0]["step"] == 4
    assert second.losses()[-1] == pytest.approx(full.losses()[-1], rel=0.02)
    assert resumed.trained_tokens == pytest.approx(uninterrupted.trained_tokens, rel=0.01)
    with open(resumed.results_csv) as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == list(range(1, 9))


def test_cancel_returns_between_steps(model_dir, tmp_path):
    train_file = write_jsonl(arithmetic_chat(16, seed=6), tmp_path / "train.jsonl")
    recorder = Recorder(stop_at=2, stop_with="cancel")
    result = _run(model_dir, train_file, tmp_path / "out", recorder)
    assert result.status == "cancelled"
    assert result.step == 2
    assert result.adapter_dir is None and result.merged_dir is None
    assert recorder.checkpoints == []


def test_cancel_before_training_starts(model_dir, tmp_path):
    train_file = write_jsonl(arithmetic_chat(4, seed=6), tmp_path / "train.jsonl")
    recorder = Recorder(stop_at=0, stop_with="cancel")
    result = _run(model_dir, train_file, tmp_path / "out", recorder)
    assert result.status == "cancelled" and result.step == 0
