"""Stage 2: the plan (hyperparameters, tuning, device, training controls), told as events."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainer.planning import JobPlan, plan_job
from trainer.stages.load_data import TrainingData
from tuneforge.domain import JobSpec, Quantization

Say = Callable[..., None]


def plan_run(spec: JobSpec, base_model_dir: Path, data: TrainingData, *, say: Say,
             has_validation_file: bool, **options: Any) -> JobPlan:
    """`options` are `plan_job`'s keywords (max_length, max_steps, device, …)."""
    plan = plan_job(spec, base_model_dir, data.n_train,
                    has_validation_file=has_validation_file, **options)
    say(f"Tuning: {plan.decision.reason}")
    say("Quantization: " + ("4-bit NF4 base (QLoRA)"
                            if plan.decision.quantization == Quantization.NF4
                            else "full-precision base"))
    say(f"Device: {plan.device.describe()}")
    say(f"Hyperparameters: {plan.describe_hyperparameters()}")
    if spec.training.validation_split is not None and has_validation_file:
        say("training.validation_split is not used: the job has a validation_file", "warn")
    if spec.training.early_stopping is not None and data.valid is None:
        say("early stopping needs validation data (a validation_file or "
            "training.validation_split); it is off for this job", "warn")
    return plan
