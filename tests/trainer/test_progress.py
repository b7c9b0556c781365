"""The bridge from Trainer events: NaN loss fails clearly, stop requests, results.csv."""

from __future__ import annotations

import csv
import math
from types import SimpleNamespace

import pytest

from trainer.errors import NAN_LOSS, TrainingError
from trainer.progress import ProgressBridge, RunState, StopRequest, TrainCallbacks
from trainer.results import ResultsCsv


def _bridge(tmp_path, stop=None, events=None):
    callbacks = TrainCallbacks(
        on_metrics=(events.append if events is not None else lambda m: None),
        should_stop=stop or (lambda: None),
    )
    return ProgressBridge(
        callbacks,
        RunState(total_steps=10),
        ResultsCsv(tmp_path / "results.csv"),
        served_model_name="m",
        valid_every=5,
    )


@pytest.mark.parametrize("loss", [math.nan, math.inf])
def test_nan_loss_raises_training_error(tmp_path, loss):
    bridge = _bridge(tmp_path)
    with pytest.raises(TrainingError) as info:
        bridge.on_log(None, SimpleNamespace(global_step=3), None, logs={"loss": loss})
    assert info.value.code == NAN_LOSS
    assert "step 3" in info.value.message


def test_metrics_event_and_results_csv(tmp_path):
    events: list[dict] = []
    bridge = _bridge(tmp_path, events=events)
    state = SimpleNamespace(global_step=1, max_steps=10)
    bridge.on_train_begin(None, state, None)
    bridge.on_log(None, state, None, logs={"loss": 2.5, "mean_token_accuracy": 0.4})
    assert events[0]["train_loss"] == 2.5 and events[0]["train_mean_token_accuracy"] == 0.4
    assert events[0]["total_steps"] == 10
    with open(tmp_path / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows == [
        {
            "step": "1",
            "train_loss": "2.5",
            "train_accuracy": "0.4",
            "valid_loss": "",
            "valid_mean_token_accuracy": "",
        }
    ]


@pytest.mark.parametrize(("reason", "save"),
                         [(StopRequest.PAUSE, True), (StopRequest.CANCEL, False)])
def test_stop_requests(tmp_path, reason, save):
    bridge = _bridge(tmp_path, stop=lambda: reason)
    control = SimpleNamespace(should_training_stop=False, should_save=False, should_log=False)
    bridge.on_step_end(None, SimpleNamespace(global_step=2), control)
    assert control.should_training_stop is True
    assert control.should_save is save
    assert bridge.run.stop_reason == reason


def test_out_of_memory_is_recognised():
    import torch

    from trainer.train import _is_oom

    assert _is_oom(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert _is_oom(MemoryError())
    assert _is_oom(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried 1 GB"))
    assert not _is_oom(RuntimeError("shape mismatch"))
