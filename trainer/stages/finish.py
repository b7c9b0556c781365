"""Stage 5: what a run leaves. Paused or cancelled: the checkpoint to resume from. Otherwise:
the best weights put back (early stopping), the whole validation set evaluated once more, and
the artifacts saved through `trainer.tuning.save_model`."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from trainer.planning import JobPlan
from trainer.progress import StopRequest, TrainCallbacks
from trainer.stages.build import Session
from trainer.tuning import save_model
from tuneforge.domain import (
    JobSpec,
    Quantization,
    ResolvedHyperparameters,
    ResolvedTraining,
    TuningType,
)

Status = Literal["succeeded", "paused", "cancelled"]
Say = Callable[..., None]


@dataclass
class TrainResult:
    status: Status
    hyperparameters: ResolvedHyperparameters
    total_steps: int
    step: int  # optimizer steps done
    trained_tokens: int
    metrics: dict[str, Any] = field(default_factory=dict)  # the last metrics event
    adapter_dir: Path | None = None  # succeeded, lora/qlora
    merged_dir: Path | None = None  # succeeded: merged adapter (merge=True) or full weights
    checkpoint_dir: Path | None = None  # paused: resume from here
    results_csv: Path | None = None
    quantization: Quantization = Quantization.NONE
    quantization_reason: str = ""
    device: str = "cpu"
    warnings: list[str] = field(default_factory=list)
    tuning: TuningType = TuningType.LORA
    tuning_reason: str = ""
    training: ResolvedTraining | None = None  # every control as run (written back to the job)
    best_step: int | None = None  # early stopping: the step whose weights were saved
    stopped_early: bool = False


def release(trainer: Any) -> None:
    trainer.model = None
    trainer.model_wrapped = None
    if getattr(trainer, "ref_model", None) is not None:
        trainer.ref_model = None
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def stopped(session: Session, say: Say) -> dict[str, Any]:
    """A paused or cancelled run: what it did and, paused, where it resumes."""
    trainer, run = session.trainer, session.run
    step = int(trainer.state.global_step)
    tokens = session.bridge.trained_tokens()
    release(trainer)
    paused = run.stop_reason == StopRequest.PAUSE
    saved = run.last_checkpoint.name.removeprefix("checkpoint-") if run.last_checkpoint else None
    say(
        f"Training paused at step {step}; it resumes from checkpoint step-{saved}"
        if paused and saved
        else f"Training paused at step {step}"
        if paused
        else f"Training cancelled at step {step}"
    )
    return {
        "status": "paused" if paused else "cancelled",
        "step": step,
        "trained_tokens": tokens,
        "metrics": run.last_metrics,
        "checkpoint_dir": run.last_checkpoint if paused else None,
        "results_csv": session.results.write(),
    }


def _best_weights(session: Session, step: int, say: Say) -> int | None:
    early = session.early_stopping
    if early is None or early.best_step is None:
        return None
    if early.best_step != step:
        early.restore(session.trainer.model)
    say(f"Best checkpoint: step {early.best_step} (validation loss {early.best_loss:.4f}); "
        f"training stopped at step {step}: {early.why()}")
    return early.best_step


def finish(
    session: Session,
    spec: JobSpec,
    plan: JobPlan,
    *,
    tokenizer: Any,
    base_model_dir: Path,
    output_dir: Path,
    served_model_name: str,
    merge: bool,
    callbacks: TrainCallbacks,
    say: Say,
    started: float,
) -> dict[str, Any]:
    trainer, run, bridge, results = session.trainer, session.run, session.bridge, session.results
    if run.stop_reason is not None:
        return stopped(session, say)
    step = int(trainer.state.global_step)
    tokens = bridge.trained_tokens()
    best_step = _best_weights(session, step, say)
    final = {**run.last_metrics, "step": step, "total_steps": run.total_steps,
             "trained_tokens": tokens}
    if best_step is not None:
        final["best_step"] = best_step
    if bridge.evaluator is not None:
        full = bridge.evaluator.full()
        final["full_valid_loss"] = full["loss"]
        final["full_valid_mean_token_accuracy"] = full["accuracy"]
        results.add({"step": step, "valid_loss": full["loss"],
                     "valid_mean_token_accuracy": full["accuracy"]})
    results_csv = results.write()
    final["estimated_finish"] = int(time.time())
    callbacks.on_metrics(final)
    saved = save_model(trainer.model, plan.decision, tokenizer, base_model_dir, output_dir,
                       served_model_name, merge=merge)
    release(trainer)
    say(f"Training finished: {step} steps, {tokens} tokens in {time.time() - started:.0f} s")
    return {
        "status": "succeeded",
        "step": step,
        "trained_tokens": tokens,
        "metrics": final,
        "adapter_dir": saved.adapter_dir,
        "merged_dir": saved.merged_dir,
        "results_csv": results_csv,
        "best_step": best_step,
        "stopped_early": bool(session.early_stopping and session.early_stopping.stopped_early),
    }
