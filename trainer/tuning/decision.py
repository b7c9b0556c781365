"""`decide_tuning`: which weights a job trains and how its base is loaded, decided before
any weight is read.

- "auto": `tuneforge.memory.choose_tuning` (the same tree the API's plan endpoint uses); on a
  CPU worker that is LoRA.
- "lora": a full-precision base unless `lora.quantization` (auto/4bit) says otherwise
  (`trainer.hyperparams.resolve_quantization`).
- "qlora": a 4-bit NF4 base.
- "full" / "spectrum": estimated with `tuneforge.memory.estimate_full_training_bytes`
  against free accelerator memory, or on a CPU worker against the RAM the kernel reports
  available (MemAvailable), where weights and optimizer state are fp32. When the estimate does
  not fit in 90% of it, the job fails at once with both numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from trainer.errors import OUT_OF_MEMORY, UNSUPPORTED, TrainingError
from trainer.hyperparams import resolve_quantization
from tuneforge.domain import JobSpec, MethodType, OptimizerName, Quantization, TuningType
from tuneforge.memory import (
    GIB,
    MEMORY_HEADROOM,
    ModelShape,
    choose_tuning,
    estimate_full_training_bytes,
)
from tuneforge.resolve import DEFAULT_SPECTRUM_FRACTION, base_learning_rate

# The learning-rate rule (a base rate per tuning type, times the multiplier) and
# the Spectrum default are `tuneforge.resolve`'s, shared with the API's plan.
__all__ = [
    "DEFAULT_SPECTRUM_FRACTION",
    "TuningDecision",
    "available_ram_bytes",
    "base_learning_rate",
    "decide_tuning",
]


@dataclass(frozen=True)
class TuningDecision:
    """What to train and how the base is loaded."""

    tuning: TuningType  # never AUTO
    quantization: Quantization  # NF4 only for qlora (or lora whose base did not fit)
    reason: str  # one sentence for the events
    estimated_bytes: int | None
    spectrum_fraction: float | None = None  # spectrum only


def available_ram_bytes() -> int | None:
    """RAM the kernel could give this process now (MemAvailable in /proc/meminfo)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def spectrum_fraction(spec: JobSpec) -> float:
    return spec.training.spectrum_fraction or DEFAULT_SPECTRUM_FRACTION


def decide_tuning(
    spec: JobSpec,
    shape: ModelShape,
    free_bytes: int | None,
    *,
    batch_size: int,
    max_length: int,
    ram_bytes: int | None = None,
) -> TuningDecision:
    """The decision for `spec` on a worker with `free_bytes` of free accelerator memory (None:
    a CPU worker). `ram_bytes` is the memory a CPU worker may use (default: MemAvailable).
    Raises `TrainingError(OUT_OF_MEMORY)` when the asked tuning cannot fit and
    `TrainingError(UNSUPPORTED)` for a CUDA-only optimizer on a CPU worker."""
    training = spec.training
    if training.optimizer == OptimizerName.PAGED_ADAMW_8BIT and free_bytes is None:
        raise TrainingError(
            UNSUPPORTED,
            "optimizer paged_adamw_8bit needs a CUDA worker (bitsandbytes' paged optimizers "
            "have no CPU implementation); this worker has no GPU: use optimizer 'adamw'",
        )
    asked = TuningType(training.tuning)
    if asked == TuningType.AUTO:
        choice = choose_tuning(
            shape, free_bytes, rank=spec.lora.rank, batch_size=batch_size, max_length=max_length
        )
        if not choice.fits:
            raise TrainingError(OUT_OF_MEMORY, choice.reason)
        if choice.tuning in (TuningType.FULL, TuningType.SPECTRUM):
            return TuningDecision(choice.tuning, Quantization.NONE, f"auto → {choice.reason}",
                                  choice.estimated_bytes)
        quantization = Quantization.NF4 if choice.tuning == TuningType.QLORA else Quantization.NONE
        if choice.tuning == TuningType.LORA and free_bytes is None:
            quantization = resolve_quantization(
                spec.lora, shape, batch_size=batch_size, max_length=max_length, free_bytes=None
            ).quantization
        return TuningDecision(choice.tuning, quantization, f"auto → {choice.reason}",
                              choice.estimated_bytes)
    if asked == TuningType.QLORA:
        return TuningDecision(TuningType.QLORA, Quantization.NF4,
                              "qlora as requested: LoRA on a 4-bit NF4 base", None)
    if asked == TuningType.LORA:
        q = resolve_quantization(
            spec.lora, shape, batch_size=batch_size, max_length=max_length, free_bytes=free_bytes
        )
        return TuningDecision(TuningType.LORA, q.quantization, f"lora as requested; {q.reason}",
                              None)
    return _full_weights(spec, asked, shape, free_bytes, ram_bytes,
                         batch_size=batch_size, max_length=max_length)


def _full_weights(
    spec: JobSpec,
    tuning: TuningType,
    shape: ModelShape,
    free_bytes: int | None,
    ram_bytes: int | None,
    *,
    batch_size: int,
    max_length: int,
) -> TuningDecision:
    from tuneforge.domain import Switch

    cpu = free_bytes is None
    fraction = spectrum_fraction(spec) if tuning == TuningType.SPECTRUM else 1.0
    checkpointing = spec.training.gradient_checkpointing == Switch.ON or (
        not cpu and spec.training.gradient_checkpointing == Switch.AUTO
    )
    need = estimate_full_training_bytes(
        shape,
        batch_size=batch_size,
        max_length=max_length,
        gradient_checkpointing=checkpointing,
        trainable_fraction=fraction,
        eight_bit_optimizer=spec.training.optimizer == OptimizerName.PAGED_ADAMW_8BIT,
        weight_bytes=4.0 if cpu else 2.0,
    )
    if spec.method == MethodType.DPO:  # the frozen reference: an fp32 copy of the weights
        need += shape.n_params * 4
    where = "RAM available" if cpu else "GPU memory free"
    have = (ram_bytes if ram_bytes is not None else available_ram_bytes()) if cpu else free_bytes
    what = "full fine-tuning" if tuning == TuningType.FULL else (
        f"Spectrum ({fraction:g} of the layers trainable)")
    size = f"{shape.n_params / 1e6:.0f}M-parameter model"
    if have is not None and need > have * MEMORY_HEADROOM:
        raise TrainingError(
            OUT_OF_MEMORY,
            f"{what} of the {size} needs about {need / GIB:.2f} GiB (weights, gradients, "
            f"optimizer state and activations at batch_size={batch_size}, "
            f"max_length={max_length}) but only {have / GIB:.2f} GiB of {where}; use "
            "tuning 'lora' or 'qlora', or lower the batch size or the sequence length",
        )
    precision = "fp32 on CPU" if cpu else "mixed precision"
    fits = (f"about {need / GIB:.2f} GiB needed, {have / GIB:.2f} GiB of {where}"
            if have is not None else f"about {need / GIB:.2f} GiB needed")
    return TuningDecision(
        tuning,
        Quantization.NONE,
        f"{tuning.value} as requested: {what} in {precision}; {fits}",
        need,
        fraction if tuning == TuningType.SPECTRUM else None,
    )
