"""Progress reporting: the callbacks a caller passes to `train`, and the bridge from
Hugging Face Trainer events (log, step end, save) to them."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from trainer.early_stopping import EarlyStopping
from trainer.errors import NAN_LOSS, TrainingError
from trainer.results import ResultsCsv
from trainer.stop import StopRequest

__all__ = ["ProgressBridge", "RunState", "StopRequest", "TrainCallbacks", "read_run_state"]

STATE_FILE = "tuneforge_state.json"


def _noop_message(message: str, level: str) -> None:
    return None


def _noop_metrics(metrics: dict[str, Any]) -> None:
    return None


def _noop_checkpoint(step: int, path: Path, metrics: dict[str, Any]) -> None:
    return None


def _never_stop() -> StopRequest | None:
    return None


@dataclass
class TrainCallbacks:
    # (message, level 'info' | 'warn' | 'error')
    on_message: Callable[[str, str], None] = _noop_message
    # OpenAI metrics fields: step, total_steps, train_loss, train_mean_token_accuracy,
    # valid_loss, valid_mean_token_accuracy, full_valid_loss, full_valid_mean_token_accuracy
    # (at the end), trained_tokens, estimated_finish (unix seconds)
    on_metrics: Callable[[dict[str, Any]], None] = _noop_metrics
    # (step, checkpoint dir: a PEFT adapter dir with optimizer/scheduler/rng state, metrics)
    on_checkpoint: Callable[[int, Path, dict[str, Any]], None] = _noop_checkpoint
    # polled between steps: None or a StopRequest
    should_stop: Callable[[], StopRequest | None] = _never_stop

    def stop_request(self) -> StopRequest | None:
        value = self.should_stop()
        return StopRequest(value) if value else None


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def set_adapter_base_name(adapter_dir: Path, served_model_name: str) -> None:
    """Point an adapter's `base_model_name_or_path` at the served base model's name."""
    config_path = Path(adapter_dir) / "adapter_config.json"
    if not config_path.is_file():
        return
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = served_model_name
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


@dataclass
class RunState:
    """What the bridge knows about the run; saved with every checkpoint for resume."""

    total_steps: int = 0
    tokens_offset: int = 0  # trained tokens before this process (resume)
    stop_reason: StopRequest | None = None
    last_metrics: dict[str, Any] = field(default_factory=dict)
    last_checkpoint: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class ProgressBridge(TrainerCallback):
    """Turns Trainer events into TrainCallbacks calls, writes results.csv, checks the loss and
    polls for cancel/pause between steps."""

    def __init__(
        self,
        callbacks: TrainCallbacks,
        run: RunState,
        results: ResultsCsv,
        *,
        served_model_name: str,
        valid_every: int,
        evaluator: Any | None = None,
        early_stopping: EarlyStopping | None = None,
    ) -> None:
        self.callbacks = callbacks
        self.run = run
        self.results = results
        self.served_model_name = served_model_name
        self.valid_every = max(1, valid_every)
        self.evaluator = evaluator
        self.early_stopping = early_stopping
        self.trainer: Any = None
        self._t0 = 0.0
        self._step0 = 0

    # -- helpers ------------------------------------------------------------------------------

    def trained_tokens(self) -> int:
        count = getattr(self.trainer, "_total_train_tokens", 0) if self.trainer else 0
        return self.run.tokens_offset + int(count)

    def _estimated_finish(self, step: int) -> int | None:
        done = step - self._step0
        if done <= 0:
            return None
        per_step = (time.time() - self._t0) / done
        return int(time.time() + per_step * max(0, self.run.total_steps - step))

    # -- Trainer events -----------------------------------------------------------------------

    def _evaluates_at(self, step: int) -> bool:
        return self.evaluator is not None and (
            step % self.valid_every == 0 or step >= self.run.total_steps)

    def on_train_begin(self, args, state, control, **kwargs):
        self.run.total_steps = int(state.max_steps)
        self._t0 = time.time()
        self._step0 = int(state.global_step)
        early = self.early_stopping
        if (early is not None and early.best_step == state.global_step
                and not early.weights_file.is_file() and self.trainer is not None):
            early.keep(self.trainer.model)  # resumed from the best checkpoint itself

    def on_step_end(self, args, state, control, **kwargs):
        if self._step0 == state.global_step - 1 and state.global_step > 1:
            # Time resumed runs from their first step on (loading and skipping excluded).
            self._t0 = time.time()
            self._step0 = state.global_step
        if self._evaluates_at(int(state.global_step)):
            control.should_log = True  # evaluations land in a metrics event of their step
        reason = self.callbacks.stop_request()
        if reason == StopRequest.CANCEL:
            self.run.stop_reason = reason
            control.should_training_stop = True
            control.should_save = False
        elif reason == StopRequest.PAUSE:
            self.run.stop_reason = reason
            control.should_training_stop = True
            control.should_save = True
            control.should_log = True
        return control

    def on_epoch_end(self, args, state, control, **kwargs):
        # The Trainer runs its epoch-end save also when a stop request ends the loop early:
        # a cancelled run saves nothing.
        if self.run.stop_reason == StopRequest.CANCEL:
            control.should_save = False
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" not in logs:
            return
        step = int(state.global_step)
        loss = float(logs["loss"])
        grad_norm = logs.get("grad_norm")
        if not math.isfinite(loss) or (grad_norm is not None and not math.isfinite(grad_norm)):
            raise TrainingError(
                NAN_LOSS,
                f"the training loss became {loss} at step {step} (gradient norm {grad_norm}); "
                "try a lower learning_rate_multiplier or check the training data",
            )
        metrics: dict[str, Any] = {
            "step": step,
            "total_steps": self.run.total_steps,
            "train_loss": loss,
            "train_mean_token_accuracy": _finite(logs.get("mean_token_accuracy")),
            "valid_loss": None,
            "valid_mean_token_accuracy": None,
            "learning_rate": _finite(logs.get("learning_rate")),
            "trained_tokens": self.trained_tokens(),
            "estimated_finish": self._estimated_finish(step),
        }
        for key, name in (
            ("rewards/margins", "train_reward_margin"),
            ("rewards/accuracies", "train_reward_accuracy"),
        ):
            if key in logs:
                metrics[name] = _finite(logs[key])
        if self._evaluates_at(step):
            # With early stopping each evaluation decides: the whole set, not one batch.
            early = self.early_stopping
            valid = self.evaluator.full() if early else self.evaluator.next_batch()
            metrics["valid_loss"] = valid["loss"]
            metrics["valid_mean_token_accuracy"] = valid["accuracy"]
            if early is not None:
                self._judge(early, step, valid["loss"], state, control)
        self.run.last_metrics = metrics
        self.results.add(metrics)
        self.results.write()
        self.callbacks.on_metrics(metrics)

    def _judge(self, early: EarlyStopping, step: int, loss: float | None, state, control
               ) -> None:
        verdict = early.update(step, loss)
        if verdict.improved:
            early.keep(self.trainer.model)
            state.best_global_step = step  # the Trainer's rotation keeps this checkpoint
            if self.run.stop_reason != StopRequest.CANCEL:  # a cancelled run saves nothing
                control.should_save = True
        if verdict.stop:
            control.should_training_stop = True

    def on_save(self, args, state, control, **kwargs):
        step = int(state.global_step)
        path = Path(args.output_dir) / f"checkpoint-{step}"
        if not path.is_dir():
            return
        set_adapter_base_name(path, self.served_model_name)
        self.results.write(path / "results.csv")
        payload = {
            "step": step,
            "total_steps": self.run.total_steps,
            "trained_tokens": self.trained_tokens(),
            **self.run.extra,
        }
        early = self.early_stopping
        if early is not None:
            payload["early_stopping"] = early.state()
            if early.best_step != step:
                early.copy_into(path)
        (path / STATE_FILE).write_text(json.dumps(payload, indent=2) + "\n")
        if self.run.last_checkpoint == path:
            return  # saved again at the same step (a pause that ends the epoch loop)
        self.run.last_checkpoint = path
        metrics = {
            **self.run.last_metrics,
            "step": step,
            "epoch": state.epoch,
            "reason": "pause" if self.run.stop_reason == StopRequest.PAUSE else "epoch",
        }
        if early is not None:
            metrics["best_step"] = early.best_step
            if early.best_step == step:
                metrics["reason"] = "best"
        self.callbacks.on_checkpoint(step, path, metrics)


def read_run_state(checkpoint: Path) -> dict[str, Any]:
    path = Path(checkpoint) / STATE_FILE
    if not path.is_file():
        return {}
    return json.loads(path.read_text())
