"""The worker's side of resolving a job: free accelerator memory, the batch-size cap it
allows, and the quantization mode. The "auto" rules themselves live in `tuneforge.resolve`
(torch-free, shared with the API's plan) and are re-exported here.

- quantization "auto": 4-bit NF4 only on CUDA and only when weights + adapter state +
  activations would not fit in 90% of free GPU memory at full precision; never on CPU unless
  the job asks for it.
"""

from __future__ import annotations

from dataclasses import dataclass

from tuneforge.domain import LoraConfig, Quantization
from tuneforge.memory import (
    GPU_MAX_BATCH,
    MEMORY_HEADROOM,
    ModelShape,
    estimate_training_bytes,
    gpu_batch_cap,
)
from tuneforge.resolve import (
    BASE_LEARNING_RATE,
    CPU_MAX_BATCH,
    DEFAULT_BETA,
    auto_batch_size,
    auto_n_epochs,
    expected_steps,
    learning_rate,
    resolve_hyperparameters,
    resolve_training,
)

__all__ = [
    "BASE_LEARNING_RATE",
    "CPU_MAX_BATCH",
    "DEFAULT_BETA",
    "GPU_MAX_BATCH",
    "MEMORY_HEADROOM",
    "ModelShape",
    "QuantizationChoice",
    "auto_batch_size",
    "auto_n_epochs",
    "cuda_free_bytes",
    "estimate_training_bytes",
    "expected_steps",
    "gpu_batch_cap",
    "learning_rate",
    "resolve_hyperparameters",
    "resolve_quantization",
    "resolve_training",
]


def cuda_free_bytes() -> int | None:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a trainer dependency
        return None
    if not torch.cuda.is_available():
        return None
    free, _total = torch.cuda.mem_get_info()
    return int(free)


@dataclass(frozen=True)
class QuantizationChoice:
    quantization: Quantization  # NF4 or NONE, never AUTO
    reason: str


def resolve_quantization(
    lora: LoraConfig,
    shape: ModelShape,
    *,
    batch_size: int,
    max_length: int,
    free_bytes: int | None,
) -> QuantizationChoice:
    """Decide 4-bit or full precision. `free_bytes` is free accelerator memory (None: CPU)."""
    asked = lora.quantization
    if asked == Quantization.NF4:
        return QuantizationChoice(Quantization.NF4, "4-bit NF4 (QLoRA) as requested")
    if asked == Quantization.NONE:
        return QuantizationChoice(Quantization.NONE, "full-precision base as requested")
    if free_bytes is None:
        return QuantizationChoice(
            Quantization.NONE,
            "CPU training: the base stays in full precision (4-bit only on request)",
        )
    need = estimate_training_bytes(
        shape,
        weight_bytes=2,
        rank=lora.rank,
        batch_size=batch_size,
        max_length=max_length,
        gradient_checkpointing=True,
    )
    gib = 1024**3
    if need <= free_bytes * MEMORY_HEADROOM:
        return QuantizationChoice(
            Quantization.NONE,
            f"bf16 base fits: about {need / gib:.1f} GiB needed, {free_bytes / gib:.1f} GiB free",
        )
    return QuantizationChoice(
        Quantization.NF4,
        f"4-bit NF4 (QLoRA): a bf16 base needs about {need / gib:.1f} GiB but only "
        f"{free_bytes / gib:.1f} GiB of GPU memory is free",
    )
