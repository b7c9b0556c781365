"""Resolve every "auto" of a job the way the worker runs it: OpenAI's hyperparameters and the
TuneForge training controls. Torch-free, so that the API's plan and the worker agree.

Hyperparameters (documented so that users can predict them):

- n_epochs: OpenAI's published heuristic (fine-tuning cookbook): 3 epochs, raised so that small
  files see at least 100 example-passes and lowered so that large files see at most 25,000,
  clamped to 1..10 here (a LoRA adapter on a small model overfits long before 25 epochs).
  `n_epochs = clamp(ceil(100 / n), 1, 10)` if `3n < 100`; `max(1, 25000 // n)` if `3n > 25000`;
  else 3. `n` counts the examples that train (after a validation split).
- batch_size: about 0.2% of the file like OpenAI, as a power of two:
  `2 ** floor(log2(n / 32))` clamped to 1..cap, where cap is 8 on CPU and, on a GPU, the largest
  power of two (<= 32) whose activations fit in free memory next to the weights.
- learning_rate_multiplier: 1.0, applied to the base learning rate of the tuning type: 2e-4 for
  a LoRA/QLoRA adapter, 1e-5 for full fine-tuning and Spectrum (every trained weight moves).
- beta (DPO): 0.1.

Training controls (`training` extension; the seeds' safe starting defaults where "auto" leaves
a value open):

- lr_scheduler: cosine (decay to 0 after warmup); "constant" keeps the rate flat after warmup.
- warmup_ratio: 0.05 of the optimizer steps. weight_decay: 0.01 (AdamW's decoupled decay).
- gradient_accumulation_steps: 1. One optimizer step sees `batch_size x accumulation`
  examples (the effective batch); the worker may split each batch into micro-batches to fit
  memory, which changes neither.
- optimizer: AdamW (the fused kernel on CUDA); `paged_adamw_8bit` (bitsandbytes) only on CUDA.
- gradient_checkpointing: on only when activations would not fit in memory without it (never
  on a CPU worker, where memory is not the limit and recomputation costs ~30%).
- max_seq_length: 1024 tokens; longer examples are truncated.
- validation_split: as asked, and only when no validation file is given.
- eval_interval: about 10 evaluations per run (`expected_steps // 10`, at least 1).
- spectrum_fraction: 0.25 of each kind of weight matrix, for Spectrum jobs only.
- early_stopping: as asked, when the job has validation data (a file or a split).
"""

from __future__ import annotations

import math

from tuneforge.domain import (
    FULL_WEIGHT_TUNINGS,
    DpoHyperparameters,
    LrScheduler,
    MethodType,
    OptimizerName,
    ResolvedHyperparameters,
    ResolvedTraining,
    Switch,
    TrainingConfig,
    TuningType,
)

BASE_LEARNING_RATE = 2e-4  # LoRA / QLoRA adapters
FULL_LEARNING_RATE = 1e-5  # full fine-tuning and Spectrum (arXiv:2406.06623 §4)
DEFAULT_BETA = 0.1
MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25_000
TARGET_EPOCHS = 3
MAX_AUTO_EPOCHS = 10
CPU_MAX_BATCH = 8

DEFAULT_MAX_SEQ_LENGTH = 1024
DEFAULT_WARMUP_RATIO = 0.05
DEFAULT_WEIGHT_DECAY = 0.01
DEFAULT_LR_SCHEDULER = LrScheduler.COSINE
DEFAULT_SPECTRUM_FRACTION = 0.25
EVALUATIONS_PER_RUN = 10


def auto_n_epochs(n_examples: int) -> int:
    n = max(1, n_examples)
    if n * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_AUTO_EPOCHS, max(1, math.ceil(MIN_TARGET_EXAMPLES / n)))
    if n * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(1, MAX_TARGET_EXAMPLES // n)
    return TARGET_EPOCHS


def auto_batch_size(n_examples: int, cap: int = CPU_MAX_BATCH) -> int:
    ratio = max(1.0, n_examples / 32)
    size = 2 ** math.floor(math.log2(ratio))
    return max(1, min(cap, size))


def resolve_hyperparameters(
    hp: DpoHyperparameters,
    method: MethodType,
    n_examples: int,
    *,
    batch_cap: int = CPU_MAX_BATCH,
) -> ResolvedHyperparameters:
    """Concrete values for every "auto" in `hp`."""
    batch_size = (
        auto_batch_size(n_examples, batch_cap) if hp.batch_size == "auto" else hp.batch_size
    )
    n_epochs = auto_n_epochs(n_examples) if hp.n_epochs == "auto" else hp.n_epochs
    lr_mult = 1.0 if hp.learning_rate_multiplier == "auto" else hp.learning_rate_multiplier
    beta = None
    if MethodType(method) == MethodType.DPO:
        beta = DEFAULT_BETA if hp.beta == "auto" else hp.beta
    return ResolvedHyperparameters(
        batch_size=int(batch_size),
        learning_rate_multiplier=float(lr_mult),
        n_epochs=int(n_epochs),
        beta=beta,
    )


def base_learning_rate(tuning: TuningType = TuningType.LORA) -> float:
    return FULL_LEARNING_RATE if tuning in FULL_WEIGHT_TUNINGS else BASE_LEARNING_RATE


def learning_rate(resolved: ResolvedHyperparameters,
                  tuning: TuningType = TuningType.LORA) -> float:
    return base_learning_rate(tuning) * resolved.learning_rate_multiplier


def expected_steps(n_examples: int, batch_size: int, accumulation: int, n_epochs: int) -> int:
    """Optimizer steps of a run: ceil(examples / effective batch) per epoch."""
    per_step = max(1, batch_size) * max(1, accumulation)
    return max(1, math.ceil(max(1, n_examples) / per_step)) * max(1, n_epochs)


def held_out_count(n_examples: int, fraction: float) -> int:
    """Examples a validation split holds out: round(n x fraction), at least 1, leaving at
    least 1 to train on (0 when the file has a single example)."""
    if n_examples < 2:
        return 0
    return min(n_examples - 1, max(1, round(n_examples * fraction)))


def resolve_training(
    training: TrainingConfig,
    *,
    batch_size: int,
    tuning: TuningType,
    tuning_reason: str,
    device: str,
    activations_fit: bool,
    has_validation: bool,
    expected_steps: int,
) -> ResolvedTraining:
    """Every control of `training` as the worker runs it (rules in the module docstring).

    `has_validation`: the job has a validation file (then `validation_split` does not apply);
    `expected_steps`: optimizer steps of the run, for the evaluation interval."""
    accumulation = (1 if training.gradient_accumulation_steps == "auto"
                    else int(training.gradient_accumulation_steps))
    if training.gradient_checkpointing == Switch.AUTO:
        checkpointing = device != "cpu" and not activations_fit
    else:
        checkpointing = training.gradient_checkpointing == Switch.ON
    split = None if has_validation else training.validation_split
    evaluates = has_validation or split is not None
    interval = (max(1, expected_steps // EVALUATIONS_PER_RUN)
                if training.eval_interval == "auto" else int(training.eval_interval))
    spectrum = None
    if tuning == TuningType.SPECTRUM:
        spectrum = training.spectrum_fraction or DEFAULT_SPECTRUM_FRACTION
    return ResolvedTraining(
        tuning=tuning,
        tuning_reason=tuning_reason,
        spectrum_fraction=spectrum,
        max_seq_length=training.max_seq_length or DEFAULT_MAX_SEQ_LENGTH,
        warmup_ratio=(DEFAULT_WARMUP_RATIO if training.warmup_ratio == "auto"
                      else float(training.warmup_ratio)),
        lr_scheduler=(DEFAULT_LR_SCHEDULER if training.lr_scheduler == LrScheduler.AUTO
                      else training.lr_scheduler),
        weight_decay=(DEFAULT_WEIGHT_DECAY if training.weight_decay == "auto"
                      else float(training.weight_decay)),
        gradient_accumulation_steps=accumulation,
        effective_batch_size=batch_size * accumulation,
        optimizer=(OptimizerName.ADAMW if training.optimizer == OptimizerName.AUTO
                   else training.optimizer),
        gradient_checkpointing=checkpointing,
        validation_split=split,
        eval_interval=interval,
        early_stopping=training.early_stopping if evaluates else None,
    )
