"""Training memory: a model's shape read from its files, the peak memory each tuning type
needs, and the decision tree that picks the tuning type from free memory and model size.

Torch-free on purpose: the API's plan endpoint and the worker make the same decision from the
same numbers (the worker with the GPU's real free memory, the plan for each configured size).

The decision (`choose_tuning`, for `training.tuning: "auto"`), largest first:

1. full fine-tuning, when weights, gradients, AdamW state and activations fit in 90% of free
   memory (mixed precision: about 16 bytes per parameter before activations);
2. LoRA on a 16-bit base, when the base, the adapter's state and activations fit;
3. QLoRA (4-bit NF4 base), when that fits;
4. nothing fits: the job cannot run on that device (the estimate is in the message).

Without an accelerator (CPU workers) the answer is LoRA: full fine-tuning a model on CPU is
only done on request.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

from tuneforge.domain import TuningType

MEMORY_HEADROOM = 0.9
GIB = 1024**3
# Bytes per parameter of the frozen base by how it is loaded.
BASE_BYTES = {"16bit": 2.0, "4bit": 0.6, "fp32": 4.0}
# Full fine-tuning in mixed precision: bf16 weights and gradients, fp32 master weights and
# AdamW's two moments (2 + 2 + 4 + 8); paged 8-bit AdamW keeps the moments in 2 bytes.
FULL_BYTES_PER_PARAM = 16.0
FULL_BYTES_PER_PARAM_8BIT_ADAM = 10.0
# The largest batch "auto" picks on a GPU (a power of two).
GPU_MAX_BATCH = 32


@dataclass(frozen=True)
class ModelShape:
    """What memory estimates need to know about a model, read from its files."""

    n_params: int
    hidden_size: int
    n_layers: int
    vocab_size: int
    intermediate_size: int

    @classmethod
    def from_dir(cls, model_dir: Path) -> ModelShape:
        config = json.loads((Path(model_dir) / "config.json").read_text())
        config = config.get("text_config", config)
        hidden = int(config.get("hidden_size", 1024))
        layers = int(config.get("num_hidden_layers", 24))
        vocab = int(config.get("vocab_size", 32000))
        inter = int(config.get("intermediate_size", 4 * hidden))
        return cls(
            n_params=count_parameters(model_dir)
            or (vocab * hidden + layers * (4 * hidden * hidden + 3 * hidden * inter)),
            hidden_size=hidden,
            n_layers=layers,
            vocab_size=vocab,
            intermediate_size=inter,
        )


def safetensors_header(path: Path) -> dict[str, dict]:
    """The tensor table of a safetensors file (name → dtype, shape, offsets); no weights read."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    header.pop("__metadata__", None)
    return header


def count_parameters(model_dir: Path) -> int:
    """Parameter count from the safetensors headers; 0 if the model has none."""
    total = 0
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        for tensor in safetensors_header(f).values():
            total += math.prod(tensor["shape"])
    return total


def lora_parameters(shape: ModelShape, rank: int) -> int:
    """LoRA parameters on every linear layer of a decoder block (q, k, v, o, gate, up, down)."""
    h, i = shape.hidden_size, shape.intermediate_size
    per_layer = rank * (4 * (h + h) + 3 * (h + i))
    return shape.n_layers * per_layer


def activation_bytes(shape: ModelShape, *, batch_size: int, max_length: int,
                     gradient_checkpointing: bool) -> int:
    """Activations kept for the backward pass plus the fp32 logits and their gradient."""
    tokens = batch_size * max_length
    h, i = shape.hidden_size, shape.intermediate_size
    per_layer = tokens * (10 * h + 3 * i) * 2
    if gradient_checkpointing:
        activations = tokens * h * 2 * shape.n_layers + per_layer
    else:
        activations = per_layer * shape.n_layers
    logits = min(tokens, 4096) * shape.vocab_size * 4 * 2
    return int(activations + logits)


def estimate_training_bytes(
    shape: ModelShape,
    *,
    weight_bytes: float,
    rank: int,
    batch_size: int,
    max_length: int,
    gradient_checkpointing: bool,
) -> int:
    """Peak memory of LoRA training: frozen base weights + adapter (weights, grads, AdamW
    state in fp32) + activations + logits."""
    weights = shape.n_params * weight_bytes
    adapter = lora_parameters(shape, rank) * 4 * 4
    return int(weights + adapter + activation_bytes(
        shape, batch_size=batch_size, max_length=max_length,
        gradient_checkpointing=gradient_checkpointing))


def estimate_full_training_bytes(
    shape: ModelShape,
    *,
    batch_size: int,
    max_length: int,
    gradient_checkpointing: bool,
    trainable_fraction: float = 1.0,
    eight_bit_optimizer: bool = False,
    weight_bytes: float = 2.0,
) -> int:
    """Peak memory of full (or Spectrum: `trainable_fraction` < 1) fine-tuning: every weight,
    plus gradients and optimizer state for the trainable share."""
    per_trainable = (FULL_BYTES_PER_PARAM_8BIT_ADAM if eight_bit_optimizer
                     else FULL_BYTES_PER_PARAM) - 2.0
    weights = shape.n_params * weight_bytes
    trainable = shape.n_params * trainable_fraction * per_trainable
    return int(weights + trainable + activation_bytes(
        shape, batch_size=batch_size, max_length=max_length,
        gradient_checkpointing=gradient_checkpointing))


def gpu_batch_cap(shape: ModelShape, *, rank: int, max_length: int, free_bytes: int) -> int:
    """The largest power of two (<= GPU_MAX_BATCH) whose LoRA activations fit in free memory
    next to the 16-bit weights."""
    cap = GPU_MAX_BATCH
    while cap > 1:
        need = estimate_training_bytes(shape, weight_bytes=BASE_BYTES["16bit"], rank=rank,
                                       batch_size=cap, max_length=max_length,
                                       gradient_checkpointing=True)
        if need <= free_bytes * MEMORY_HEADROOM:
            break
        cap //= 2
    return cap


@dataclass(frozen=True)
class TuningChoice:
    tuning: TuningType  # never AUTO
    fits: bool
    estimated_bytes: int
    reason: str

    def as_dict(self) -> dict[str, object]:
        return {"tuning": self.tuning.value, "fits": self.fits,
                "estimated_peak_memory_bytes": self.estimated_bytes, "reason": self.reason}


def estimate_for(tuning: TuningType, shape: ModelShape, *, rank: int, batch_size: int,
                 max_length: int, spectrum_fraction: float = 0.25,
                 gradient_checkpointing: bool = True) -> int:
    """Peak training memory of one tuning type on an accelerator (16-bit compute)."""
    if tuning == TuningType.FULL:
        return estimate_full_training_bytes(shape, batch_size=batch_size, max_length=max_length,
                                            gradient_checkpointing=gradient_checkpointing)
    if tuning == TuningType.SPECTRUM:
        return estimate_full_training_bytes(shape, batch_size=batch_size, max_length=max_length,
                                            gradient_checkpointing=gradient_checkpointing,
                                            trainable_fraction=spectrum_fraction)
    weight = BASE_BYTES["4bit"] if tuning == TuningType.QLORA else BASE_BYTES["16bit"]
    return estimate_training_bytes(shape, weight_bytes=weight, rank=rank, batch_size=batch_size,
                                   max_length=max_length,
                                   gradient_checkpointing=gradient_checkpointing)


def choose_tuning(shape: ModelShape, free_bytes: int | None, *, rank: int, batch_size: int,
                  max_length: int) -> TuningChoice:
    """The decision tree of the module docstring. `free_bytes` None means a CPU worker."""
    if free_bytes is None:
        need = estimate_for(TuningType.LORA, shape, rank=rank, batch_size=batch_size,
                            max_length=max_length)
        return TuningChoice(TuningType.LORA, True, need,
                            "CPU worker: LoRA on a full-precision base (full fine-tuning on a "
                            "CPU only on request)")
    budget = free_bytes * MEMORY_HEADROOM
    size = f"{shape.n_params / 1e9:.2g}B-parameter model"
    for tuning in (TuningType.FULL, TuningType.LORA, TuningType.QLORA):
        need = estimate_for(tuning, shape, rank=rank, batch_size=batch_size,
                            max_length=max_length)
        if need <= budget:
            return TuningChoice(tuning, True, need, (
                f"{tuning.value}: a {size} needs about {need / GIB:.1f} GiB for {tuning.value} "
                f"training, {free_bytes / GIB:.1f} GiB free"))
    return TuningChoice(TuningType.QLORA, False, need, (
        f"does not fit: even QLoRA on the {size} needs about {need / GIB:.1f} GiB, "
        f"{free_bytes / GIB:.1f} GiB free; lower the batch size or the sequence length"))
