"""The worker's side of resolving a job: free accelerator memory, the batch-size cap it
allows, and the quantization mode. The "auto" rules themselves live in `tuneforge.resolve` and
`tuneforge.memory` (torch-free, shared with the API's plan) and are re-exported here.

- quantization "auto": 4-bit NF4 only on CUDA and only when weights + adapter state +
  activations would not fit in 90% of free GPU memory at full precision; never on CPU unless
  the job asks for it.
"""

from __future__ import annotations

from tuneforge.memory import (
    GPU_MAX_BATCH,
    MEMORY_HEADROOM,
    ModelShape,
    QuantizationChoice,
    estimate_training_bytes,
    gpu_batch_cap,
    resolve_quantization,
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
