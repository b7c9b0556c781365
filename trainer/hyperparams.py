"""Resolve "auto" hyperparameters and the quantization mode, the way OpenAI resolves them.

Rules (documented so that users can predict them):

- n_epochs: OpenAI's published heuristic (fine-tuning cookbook): 3 epochs, raised so that small
  files see at least 100 example-passes and lowered so that large files see at most 25,000,
  clamped to 1..10 here (a LoRA adapter on a small model overfits long before 25 epochs).
  `n_epochs = clamp(ceil(100 / n), 1, 10)` if `3n < 100`; `max(1, 25000 // n)` if `3n > 25000`;
  else 3.
- batch_size: about 0.2% of the file like OpenAI, as a power of two:
  `2 ** floor(log2(n / 32))` clamped to 1..cap, where cap is 8 on CPU and, on a GPU, the largest
  power of two (<= 32) whose activations fit in free memory next to the weights.
- learning_rate_multiplier: 1.0, applied to the LoRA base learning rate 2e-4.
- beta (DPO): 0.1.
- quantization "auto": 4-bit NF4 only on CUDA and only when weights + adapter state +
  activations would not fit in 90% of free GPU memory at full precision; never on CPU unless
  the job asks for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tuneforge.domain import (
    DpoHyperparameters,
    LoraConfig,
    MethodType,
    Quantization,
    ResolvedHyperparameters,
)
from tuneforge.memory import (
    MEMORY_HEADROOM,
    ModelShape,
    estimate_training_bytes,
)

BASE_LEARNING_RATE = 2e-4
DEFAULT_BETA = 0.1
MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25_000
TARGET_EPOCHS = 3
MAX_AUTO_EPOCHS = 10
CPU_MAX_BATCH = 8
GPU_MAX_BATCH = 32


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


def gpu_batch_cap(shape: ModelShape, *, rank: int, max_length: int, free_bytes: int) -> int:
    cap = GPU_MAX_BATCH
    while cap > 1:
        need = estimate_training_bytes(
            shape,
            weight_bytes=2,
            rank=rank,
            batch_size=cap,
            max_length=max_length,
            gradient_checkpointing=True,
        )
        if need <= free_bytes * MEMORY_HEADROOM:
            break
        cap //= 2
    return cap


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
    if method == MethodType.DPO:
        beta = DEFAULT_BETA if hp.beta == "auto" else hp.beta
    return ResolvedHyperparameters(
        batch_size=int(batch_size),
        learning_rate_multiplier=float(lr_mult),
        n_epochs=int(n_epochs),
        beta=beta,
    )


def learning_rate(resolved: ResolvedHyperparameters) -> float:
    return BASE_LEARNING_RATE * resolved.learning_rate_multiplier
