"""The resource plan of one job: hyperparameters, quantization, device, batch split, reporting
intervals. Pure decisions, no model loading."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.device import DevicePlan, plan_device
from trainer.hyperparams import (
    CPU_MAX_BATCH,
    MEMORY_HEADROOM,
    ModelShape,
    QuantizationChoice,
    cuda_free_bytes,
    estimate_training_bytes,
    gpu_batch_cap,
    learning_rate,
    resolve_hyperparameters,
    resolve_quantization,
)
from tuneforge.domain import JobSpec, MethodType, Quantization, ResolvedHyperparameters

CPU_TOKENS_PER_MICRO_BATCH = 8192
GPU_TOKENS_PER_MICRO_BATCH = 32768
MAX_METRICS_EVENTS = 500
VALID_EVENTS = 10


@dataclass(frozen=True)
class JobPlan:
    hp: ResolvedHyperparameters
    quantization: QuantizationChoice
    device: DevicePlan
    micro_batch: int  # examples per forward pass; batch_size = micro_batch * accumulation
    expected_steps: int
    metrics_every: int
    valid_every: int

    @property
    def accumulation(self) -> int:
        return self.hp.batch_size // self.micro_batch

    def describe_hyperparameters(self) -> str:
        hp = self.hp
        text = (
            f"n_epochs={hp.n_epochs} batch_size={hp.batch_size} "
            f"learning_rate_multiplier={hp.learning_rate_multiplier:g} "
            f"(learning rate {learning_rate(hp):.2g})"
        )
        if hp.beta is not None:
            text += f" beta={hp.beta:g}"
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
    max_steps: int | None = None,
    device: str | None = None,
    cpu_threads: int | None = None,
    metrics_every: int | None = None,
    valid_every: int | None = None,
    prior: dict[str, Any] | None = None,
) -> JobPlan:
    """Decide everything about how the job runs. `prior` is the state saved with a checkpoint
    (a resumed job keeps the hyperparameters it started with)."""
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
    choice = resolve_quantization(
        spec.lora, shape, batch_size=hp.batch_size, max_length=max_length, free_bytes=free
    )
    activations_fit = True
    if free is not None:
        need = estimate_training_bytes(
            shape,
            weight_bytes=0.6 if choice.quantization == Quantization.NF4 else 2,
            rank=spec.lora.rank,
            batch_size=hp.batch_size,
            max_length=max_length,
            gradient_checkpointing=False,
        )
        activations_fit = need <= free * MEMORY_HEADROOM
    device_plan = plan_device(
        device=device or ("cuda" if free is not None else "cpu"),
        activations_fit=activations_fit,
        cpu_threads=cpu_threads,
    )
    budget = (
        CPU_TOKENS_PER_MICRO_BATCH if device_plan.device == "cpu" else GPU_TOKENS_PER_MICRO_BATCH
    )
    steps_per_epoch = max(1, math.ceil(n_train_examples / hp.batch_size))
    expected = max_steps or steps_per_epoch * hp.n_epochs
    metrics_every = metrics_every or max(1, expected // MAX_METRICS_EVENTS)
    return JobPlan(
        hp=hp,
        quantization=choice,
        device=device_plan,
        micro_batch=micro_batch(hp.batch_size, max_length, budget),
        expected_steps=expected,
        metrics_every=metrics_every,
        valid_every=valid_every or max(metrics_every, expected // VALID_EVENTS),
    )
