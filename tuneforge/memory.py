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

`decide_tuning` is the whole decision for one job on one device (tuning type, how the base is
loaded, peak memory, whether activations need gradient checkpointing, and whether it can run
at all): the worker raises on its `failure`, the plan endpoint reports it per device.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from tuneforge.domain import (
    LoraConfig,
    MethodType,
    OptimizerName,
    Quantization,
    Switch,
    TrainingConfig,
    TuningType,
)
from tuneforge.resolve import DEFAULT_SPECTRUM_FRACTION

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
    frozen_reference: bool = False,
) -> int:
    """Peak memory of full (or Spectrum: `trainable_fraction` < 1) fine-tuning: every weight,
    plus gradients and optimizer state for the trainable share, plus (`frozen_reference`, DPO)
    a frozen fp32 copy of the weights as the reference model."""
    per_trainable = (FULL_BYTES_PER_PARAM_8BIT_ADAM if eight_bit_optimizer
                     else FULL_BYTES_PER_PARAM) - 2.0
    weights = shape.n_params * (weight_bytes + (4.0 if frozen_reference else 0.0))
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
                 gradient_checkpointing: bool = True, frozen_reference: bool = False) -> int:
    """Peak training memory of one tuning type on an accelerator (16-bit compute).
    `frozen_reference`: DPO, whose full-weight tunings keep a reference copy (an adapter's
    reference is its base with the adapter disabled)."""
    if tuning == TuningType.FULL:
        return estimate_full_training_bytes(shape, batch_size=batch_size, max_length=max_length,
                                            gradient_checkpointing=gradient_checkpointing,
                                            frozen_reference=frozen_reference)
    if tuning == TuningType.SPECTRUM:
        return estimate_full_training_bytes(shape, batch_size=batch_size, max_length=max_length,
                                            gradient_checkpointing=gradient_checkpointing,
                                            trainable_fraction=spectrum_fraction,
                                            frozen_reference=frozen_reference)
    weight = BASE_BYTES["4bit"] if tuning == TuningType.QLORA else BASE_BYTES["16bit"]
    return estimate_training_bytes(shape, weight_bytes=weight, rank=rank, batch_size=batch_size,
                                   max_length=max_length,
                                   gradient_checkpointing=gradient_checkpointing)


def choose_tuning(shape: ModelShape, free_bytes: int | None, *, rank: int, batch_size: int,
                  max_length: int, frozen_reference: bool = False) -> TuningChoice:
    """The decision tree of the module docstring. `free_bytes` None means a CPU worker;
    `frozen_reference` (DPO) counts full fine-tuning's reference copy."""
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
                            max_length=max_length, frozen_reference=frozen_reference)
        if need <= budget:
            return TuningChoice(tuning, True, need, (
                f"{tuning.value}: a {size} needs about {need / GIB:.1f} GiB for {tuning.value} "
                f"training, {free_bytes / GIB:.1f} GiB free"))
    return TuningChoice(TuningType.QLORA, False, need, (
        f"does not fit: even QLoRA on the {size} needs about {need / GIB:.1f} GiB, "
        f"{free_bytes / GIB:.1f} GiB free; lower the batch size or the sequence length"))


@dataclass(frozen=True)
class QuantizationChoice:
    quantization: Quantization  # NF4 or NONE, never AUTO
    reason: str


def resolve_quantization(
    lora: LoraConfig,
    shape: ModelShape | None,
    *,
    batch_size: int,
    max_length: int,
    free_bytes: int | None,
) -> QuantizationChoice:
    """4-bit or full precision for a LoRA base. `free_bytes` is free accelerator memory (None:
    CPU): "auto" goes 4-bit only on an accelerator where a bf16 base would not fit."""
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
    if shape is None:
        return QuantizationChoice(Quantization.NONE,
                                  "the model's size is unknown: a full-precision base")
    need = estimate_training_bytes(shape, weight_bytes=BASE_BYTES["16bit"], rank=lora.rank,
                                   batch_size=batch_size, max_length=max_length,
                                   gradient_checkpointing=True)
    if need <= free_bytes * MEMORY_HEADROOM:
        return QuantizationChoice(
            Quantization.NONE,
            f"bf16 base fits: about {need / GIB:.1f} GiB needed, {free_bytes / GIB:.1f} GiB free",
        )
    return QuantizationChoice(
        Quantization.NF4,
        f"4-bit NF4 (QLoRA): a bf16 base needs about {need / GIB:.1f} GiB but only "
        f"{free_bytes / GIB:.1f} GiB of GPU memory is free",
    )


# Why a job cannot run on a device: the worker's error codes (`trainer.errors`).
Failure = Literal["out_of_memory", "unsupported"]


@dataclass(frozen=True)
class TuningDecision:
    """What a job trains on one device and how its base is loaded."""

    tuning: TuningType  # never AUTO
    quantization: Quantization  # NF4 for qlora, or a lora whose base is 4-bit
    reason: str  # one sentence for the job's events and the plan
    estimated_bytes: int | None  # peak memory; None when the model's size is unknown
    fits: bool | None = True  # None: the memory or the model's size is unknown
    failure: Failure | None = None  # set: the worker fails the job at once with `reason`
    checkpointing_needed: bool = False  # activations do not fit without gradient checkpointing
    spectrum_fraction: float | None = None  # spectrum only


@dataclass(frozen=True)
class _Job:
    method: MethodType
    training: TrainingConfig
    lora: LoraConfig
    shape: ModelShape | None
    gpu: bool
    memory_bytes: int | None
    batch_size: int
    max_length: int


def _fits(need: int | None, have: int | None) -> bool | None:
    if need is None or have is None:
        return None
    return need <= have * MEMORY_HEADROOM


def _gib(n: int | None) -> str:
    return f"{n / GIB:.2f} GiB" if n is not None else "an unknown amount"


def decide_tuning(
    method: MethodType,
    training: TrainingConfig,
    lora: LoraConfig,
    shape: ModelShape | None,
    *,
    gpu: bool,
    memory_bytes: int | None,
    batch_size: int,
    max_length: int,
) -> TuningDecision:
    """The decision for a job on a device with `memory_bytes` (free GPU memory, or the RAM a
    CPU worker may use; None: unknown). `shape` None: the model's files are not at hand (the
    plan only)."""
    asked = TuningType(training.tuning)
    if training.optimizer == OptimizerName.PAGED_ADAMW_8BIT and not gpu:
        return TuningDecision(
            TuningType.LORA if asked == TuningType.AUTO else asked, Quantization.NONE,
            "optimizer paged_adamw_8bit needs a CUDA worker (bitsandbytes' paged optimizers "
            "have no CPU implementation); this worker has no GPU: use optimizer 'adamw'",
            None, fits=False, failure="unsupported")
    job = _Job(method, training, lora, shape, gpu, memory_bytes, batch_size, max_length)
    if asked == TuningType.AUTO:
        return _auto(job)
    if asked in (TuningType.LORA, TuningType.QLORA):
        return _adapter(job, asked, "")
    return _full_weights(job, asked)


def _auto(job: _Job) -> TuningDecision:
    if job.shape is None:
        return TuningDecision(TuningType.LORA, Quantization.NONE,
                              "the base model's files are not available to the planner", None,
                              fits=None)
    choice = choose_tuning(job.shape, job.memory_bytes if job.gpu else None,
                           rank=job.lora.rank, batch_size=job.batch_size,
                           max_length=job.max_length,
                           frozen_reference=job.method == MethodType.DPO)
    reason = f"auto → {choice.reason}"
    if not choice.fits:
        return TuningDecision(choice.tuning, Quantization.NF4, reason, choice.estimated_bytes,
                              fits=False, failure="out_of_memory", checkpointing_needed=True)
    if choice.tuning == TuningType.FULL:
        full = _full_weights(job, TuningType.FULL)
        return full if full.failure else replace(full, reason=reason)
    return _adapter(job, choice.tuning, reason)


def _adapter(job: _Job, tuning: TuningType, reason: str) -> TuningDecision:
    """LoRA or QLoRA: how the base is loaded, the peak memory, and whether activations need
    gradient checkpointing (on a GPU; a CPU worker has the RAM it has and always runs)."""
    if tuning == TuningType.QLORA:
        quantization, why = Quantization.NF4, "qlora as requested: LoRA on a 4-bit NF4 base"
    else:
        q = resolve_quantization(job.lora, job.shape, batch_size=job.batch_size,
                                 max_length=job.max_length,
                                 free_bytes=job.memory_bytes if job.gpu else None)
        quantization, why = q.quantization, f"lora as requested; {q.reason}"
    shape = job.shape

    def need(weight_bytes: float, checkpointing: bool) -> int | None:
        if shape is None:
            return None
        return estimate_training_bytes(shape, weight_bytes=weight_bytes, rank=job.lora.rank,
                                       batch_size=job.batch_size, max_length=job.max_length,
                                       gradient_checkpointing=checkpointing)

    weight = (BASE_BYTES["4bit"] if quantization == Quantization.NF4
              else BASE_BYTES["16bit"] if job.gpu else BASE_BYTES["fp32"])
    checkpointing_needed = job.gpu and _fits(need(weight, False), job.memory_bytes) is False
    peak = need(weight, checkpointing_needed)
    fits = _fits(peak, job.memory_bytes) if job.gpu else True
    if fits is False:
        return TuningDecision(
            tuning, quantization,
            f"{tuning.value} does not fit: about {_gib(peak)} needed at "
            f"batch_size={job.batch_size}, max_length={job.max_length}, "
            f"{_gib(job.memory_bytes)} of GPU memory free; lower the batch size or the "
            "sequence length",
            peak, fits=False, failure="out_of_memory", checkpointing_needed=True)
    return TuningDecision(tuning, quantization, reason or why, peak, fits=fits,
                          checkpointing_needed=checkpointing_needed)


def _full_weights(job: _Job, tuning: TuningType) -> TuningDecision:
    """Full fine-tuning or Spectrum: every weight in fp32 on a CPU, mixed precision on a GPU."""
    training, shape = job.training, job.shape
    spectrum = tuning == TuningType.SPECTRUM
    fraction = (training.spectrum_fraction or DEFAULT_SPECTRUM_FRACTION) if spectrum else 1.0
    what = "full fine-tuning" if not spectrum else (
        f"Spectrum ({fraction:g} of the layers trainable)")
    precision = "mixed precision" if job.gpu else "fp32 on CPU"
    kept = fraction if spectrum else None
    if shape is None:
        return TuningDecision(tuning, Quantization.NONE,
                              f"{tuning.value} as requested: {what} in {precision}; the base "
                              "model's files are not available to the planner", None,
                              fits=None, spectrum_fraction=kept)

    def need(checkpointing: bool) -> int:
        return estimate_full_training_bytes(
            shape, batch_size=job.batch_size, max_length=job.max_length,
            gradient_checkpointing=checkpointing, trainable_fraction=fraction,
            eight_bit_optimizer=training.optimizer == OptimizerName.PAGED_ADAMW_8BIT,
            weight_bytes=2.0 if job.gpu else 4.0, frozen_reference=job.method == MethodType.DPO)

    asked = training.gradient_checkpointing
    peak = need(asked == Switch.ON or (job.gpu and asked == Switch.AUTO))
    checkpointing_needed = job.gpu and _fits(need(False), job.memory_bytes) is False
    have, where = job.memory_bytes, "GPU memory free" if job.gpu else "RAM available"
    fits = _fits(peak, have)
    if fits is False:
        return TuningDecision(
            tuning, Quantization.NONE,
            f"{what} of the {shape.n_params / 1e6:.0f}M-parameter model does not fit: it needs "
            f"about {_gib(peak)} (weights, gradients, optimizer state and activations "
            f"at batch_size={job.batch_size}, max_length={job.max_length}) but only "
            f"{_gib(have)} of {where}; use tuning 'lora' or 'qlora', or lower the "
            "batch size or the sequence length",
            peak, fits=False, failure="out_of_memory",
            checkpointing_needed=checkpointing_needed, spectrum_fraction=kept)
    room = f"about {_gib(peak)} needed" + (f", {_gib(have)} of {where}" if have else "")
    return TuningDecision(tuning, Quantization.NONE,
                          f"{tuning.value} as requested: {what} in {precision}; {room}", peak,
                          fits=fits, checkpointing_needed=checkpointing_needed,
                          spectrum_fraction=kept)
