"""`decide_tuning`: the worker's side of `tuneforge.memory.decide_tuning` (the one decision,
shared with the API's plan endpoint): which weights a job trains and how its base is loaded,
decided before any weight is read, against free accelerator memory or, on a CPU worker, the
RAM the kernel reports available (MemAvailable). A job that cannot run fails at once.
"""

from __future__ import annotations

from trainer.errors import TrainingError
from tuneforge.domain import JobSpec, MethodType
from tuneforge.memory import ModelShape, TuningDecision
from tuneforge.memory import decide_tuning as decide_on_device
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
    Raises `TrainingError(OUT_OF_MEMORY)` when the job cannot fit and
    `TrainingError(UNSUPPORTED)` for a CUDA-only optimizer on a CPU worker."""
    gpu = free_bytes is not None
    memory = free_bytes if gpu else (ram_bytes if ram_bytes is not None
                                     else available_ram_bytes())
    decision = decide_on_device(MethodType(spec.method), spec.training, spec.lora, shape,
                                gpu=gpu, memory_bytes=memory, batch_size=batch_size,
                                max_length=max_length)
    if decision.failure is not None:
        raise TrainingError(decision.failure, decision.reason)
    return decision
