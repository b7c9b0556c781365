"""The resource plan of one job: hyperparameters, tuning type and quantization, device,
training controls, batch split, reporting intervals. Pure decisions, no model loading."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.device import DevicePlan, plan_device
from trainer.hyperparams import (
    CPU_MAX_BATCH,
    ModelShape,
    cuda_free_bytes,
    gpu_batch_cap,
    learning_rate,
    resolve_hyperparameters,
)
from trainer.tuning import TuningDecision, decide_tuning
from tuneforge.domain import (
    JobSpec,
    MethodType,
    ResolvedHyperparameters,
    ResolvedTraining,
    TuningType,
)
from tuneforge.resolve import expected_steps as count_steps
from tuneforge.resolve import resolve_training

CPU_TOKENS_PER_MICRO_BATCH = 8192
GPU_TOKENS_PER_MICRO_BATCH = 32768
MAX_METRICS_EVENTS = 500


@dataclass(frozen=True)
class JobPlan:
    hp: ResolvedHyperparameters
    decision: TuningDecision
    training: ResolvedTraining
    device: DevicePlan
    micro_batch: int  # examples per forward pass; batch_size = micro_batch * memory_split
    expected_steps: int
    metrics_every: int
    valid_every: int

    @property
    def accumulation(self) -> int:
        """Forward passes per optimizer step: the memory split of a batch times the asked
        gradient accumulation."""
        return self.hp.batch_size // self.micro_batch * self.training.gradient_accumulation_steps

    @property
    def tuning(self) -> TuningType:
        return self.decision.tuning

    @property
    def learning_rate(self) -> float:
        return learning_rate(self.hp, self.decision.tuning)

    def describe_hyperparameters(self) -> str:
        hp, t = self.hp, self.training
        text = (
            f"n_epochs={hp.n_epochs} batch_size={hp.batch_size} "
            f"learning_rate_multiplier={hp.learning_rate_multiplier:g} "
            f"(learning rate {self.learning_rate:.2g})"
        )
        if hp.beta is not None:
            text += f" beta={hp.beta:g}"
        text += (
            f"; {t.lr_scheduler.value} schedule, warmup_ratio={t.warmup_ratio:g}, "
            f"weight_decay={t.weight_decay:g}, optimizer={t.optimizer.value}, "
            f"gradient_accumulation_steps={t.gradient_accumulation_steps} "
            f"(effective batch {t.effective_batch_size}), max_seq_length={t.max_seq_length}, "
            f"gradient checkpointing {'on' if t.gradient_checkpointing else 'off'}"
        )
        if t.early_stopping is not None:
            text += (f", early stopping (patience {t.early_stopping.patience}, "
                     f"min_delta {t.early_stopping.min_delta:g})")
        return text + f"; about {self.expected_steps} steps"


def micro_batch(batch_size: int, max_length: int, token_budget: int) -> int:
    """The largest divisor of `batch_size` whose batches stay within `token_budget` tokens."""
    best = 1
    for candidate in range(1, batch_size + 1):
        if batch_size % candidate == 0 and candidate * max_length <= token_budget:
            best = candidate
    return best


def plan_job(
    spec: JobSpec,
    base_model_dir: Path,
    n_train_examples: int,
    *,
    max_length: int,
    has_validation_file: bool = False,
    max_steps: int | None = None,
    device: str | None = None,
    cpu_threads: int | None = None,
    metrics_every: int | None = None,
    valid_every: int | None = None,
    prior: dict[str, Any] | None = None,
) -> JobPlan:
    """Decide everything about how the job runs. `prior` is the state saved with a checkpoint
    (a resumed job keeps the hyperparameters it started with). Raises `TrainingError` when the
    asked tuning cannot fit or an option cannot run on this device."""
    method = MethodType(spec.method)
    shape = ModelShape.from_dir(base_model_dir)
    free = cuda_free_bytes() if device != "cpu" else None
    cap = CPU_MAX_BATCH
    if free is not None:
        cap = gpu_batch_cap(shape, rank=spec.lora.rank, max_length=max_length, free_bytes=free)
    if prior and "hyperparameters" in prior:
        hp = ResolvedHyperparameters(**prior["hyperparameters"])
    else:
        hp = resolve_hyperparameters(spec.hyperparameters, method, n_train_examples, batch_cap=cap)
    decision = decide_tuning(spec, shape, free, batch_size=hp.batch_size, max_length=max_length)
    activations_fit = not decision.checkpointing_needed
    device_name = device or ("cuda" if free is not None else "cpu")
    accumulation = (1 if spec.training.gradient_accumulation_steps == "auto"
                    else int(spec.training.gradient_accumulation_steps))
    expected = max_steps or count_steps(n_train_examples, hp.batch_size, accumulation,
                                        hp.n_epochs)
    training = resolve_training(
        spec.training,
        batch_size=hp.batch_size,
        tuning=decision.tuning,
        tuning_reason=decision.reason,
        device=device_name,
        activations_fit=activations_fit,
        has_validation=has_validation_file,
        expected_steps=expected,
    ).model_copy(update={"max_seq_length": max_length})
    if valid_every is not None:
        training = training.model_copy(update={"eval_interval": valid_every})
    device_plan = plan_device(device=device_name, activations_fit=activations_fit,
                              cpu_threads=cpu_threads)
    device_plan = dataclasses.replace(
        device_plan, gradient_checkpointing=training.gradient_checkpointing)
    budget = (
        CPU_TOKENS_PER_MICRO_BATCH if device_plan.device == "cpu" else GPU_TOKENS_PER_MICRO_BATCH
    )
    return JobPlan(
        hp=hp,
        decision=decision,
        training=training,
        device=device_plan,
        micro_batch=micro_batch(hp.batch_size, max_length, budget),
        expected_steps=expected,
        metrics_every=metrics_every or max(1, math.ceil(expected / MAX_METRICS_EVENTS)),
        valid_every=training.eval_interval,
    )
