"""What the worker would decide on each planned device: the tuning type and quantization, the
resolved hyperparameters and training controls, peak memory, optimizer steps and duration.

The decisions are the worker's (`trainer/tuning/decision.py:decide_tuning`, which uses
`tuneforge.memory` and `tuneforge.resolve`), made here from the same torch-free rules with the
device's memory instead of the GPU's real free memory:

- "auto": `tuneforge.memory.choose_tuning` (full, else LoRA, else QLoRA; LoRA on a CPU);
- "lora": a 16-bit base, or a 4-bit one when `lora.quantization` says so or ("auto") when the
  16-bit base would not fit; "qlora": a 4-bit base;
- "full"/"spectrum": `estimate_full_training_bytes` (fp32 on a CPU, mixed precision on a GPU)
  against 90% of the memory; it does not fit → the worker fails the job at once.

Duration is a FLOPs model (see `tuneforge.settings.PlanningSettings`): trained tokens x FLOPs
per token / the device's effective throughput; evaluation passes add 2·N per validation token.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from server.service.plan_objects import PlanDevice, PlanHyperparameters
from tuneforge.domain import (
    DpoHyperparameters,
    LoraConfig,
    MethodType,
    OptimizerName,
    Quantization,
    Switch,
    TrainingConfig,
    TuningType,
)
from tuneforge.memory import (
    BASE_BYTES,
    GIB,
    GPU_MAX_BATCH,
    MEMORY_HEADROOM,
    ModelShape,
    choose_tuning,
    estimate_full_training_bytes,
    estimate_training_bytes,
    gpu_batch_cap,
)
from tuneforge.resolve import (
    CPU_MAX_BATCH,
    DEFAULT_MAX_SEQ_LENGTH,
    DEFAULT_SPECTRUM_FRACTION,
    expected_steps,
    held_out_count,
    learning_rate,
    resolve_hyperparameters,
    resolve_training,
)
from tuneforge.settings import PlanningSettings


@dataclass(frozen=True)
class Device:
    name: str
    kind: str  # "cpu" | "gpu"
    memory_bytes: int | None
    flops_per_second: float


def configured_devices(planning: PlanningSettings) -> list[Device]:
    devices = []
    if planning.cpu_worker:
        ram = int(planning.cpu_memory_gib * GIB) or None
        devices.append(Device("cpu", "cpu", ram, planning.cpu_effective_gflops * 1e9))
    for gib, tflops in zip(planning.gpu_memory_gib, planning.gpu_effective_tflops, strict=True):
        devices.append(Device(f"gpu-{gib:g}gib", "gpu", int(gib * GIB), tflops * 1e12))
    return devices


@dataclass(frozen=True)
class JobData:
    """What the plan knows of the job's data and model."""

    method: MethodType
    hyperparameters: DpoHyperparameters
    lora: LoraConfig
    training: TrainingConfig
    shape: ModelShape | None
    n_examples: int  # training file examples
    n_validation_file_examples: int | None  # None: no validation file
    train_tokens: int | None  # one pass over the training file, after truncation
    validation_file_tokens: int | None  # one pass over the validation file

    @property
    def max_length(self) -> int:
        return self.training.max_seq_length or DEFAULT_MAX_SEQ_LENGTH


@dataclass(frozen=True)
class Decision:
    tuning: TuningType
    quantization: Quantization
    fits: bool | None
    reason: str
    estimated_bytes: int | None
    checkpointing_needed: bool  # activations would not fit without gradient checkpointing


def _fits(need: int | None, have: int | None) -> bool | None:
    if need is None or have is None:
        return None
    return need <= have * MEMORY_HEADROOM


def _gib(n: int | None) -> str:
    return f"{n / GIB:.2f} GiB" if n is not None else "an unknown amount"


def _adapter(job: JobData, device: Device, tuning: TuningType, batch: int,
             reason: str) -> Decision:
    """LoRA or QLoRA: the quantization, memory and whether activations need checkpointing."""
    shape, cpu = job.shape, device.kind == "cpu"
    asked = job.lora.quantization
    quantization = Quantization.NF4 if tuning == TuningType.QLORA else Quantization.NONE

    def need(weight_bytes: float, checkpointing: bool) -> int | None:
        if shape is None:
            return None
        return estimate_training_bytes(shape, weight_bytes=weight_bytes, rank=job.lora.rank,
                                       batch_size=batch, max_length=job.max_length,
                                       gradient_checkpointing=checkpointing)

    if tuning == TuningType.LORA:
        if asked == Quantization.NF4:
            quantization, reason = Quantization.NF4, reason or "4-bit NF4 base as requested"
        elif asked == Quantization.AUTO and not cpu and \
                _fits(need(BASE_BYTES["16bit"], True), device.memory_bytes) is False:
            quantization = Quantization.NF4
            reason = reason or "4-bit NF4 (QLoRA): a bf16 base does not fit"
    weight = (BASE_BYTES["4bit"] if quantization == Quantization.NF4
              else BASE_BYTES["fp32"] if cpu else BASE_BYTES["16bit"])
    without = need(weight, False)
    checkpointing_needed = not cpu and _fits(without, device.memory_bytes) is False
    peak = need(weight, checkpointing_needed) if not cpu else without
    fits = True if cpu else _fits(peak, device.memory_bytes)
    if not reason:
        reason = (f"{tuning.value} as requested; "
                  + ("full-precision base on CPU" if cpu and quantization == Quantization.NONE
                     else f"about {_gib(peak)} needed, {_gib(device.memory_bytes)} free"))
    return Decision(tuning, quantization, fits, reason, peak, checkpointing_needed)


def _full_weights(job: JobData, device: Device, tuning: TuningType, batch: int) -> Decision:
    shape, cpu = job.shape, device.kind == "cpu"
    fraction = (job.training.spectrum_fraction or DEFAULT_SPECTRUM_FRACTION
                if tuning == TuningType.SPECTRUM else 1.0)
    asked = job.training.gradient_checkpointing

    def need(checkpointing: bool) -> int | None:
        if shape is None:
            return None
        return estimate_full_training_bytes(
            shape, batch_size=batch, max_length=job.max_length,
            gradient_checkpointing=checkpointing, trainable_fraction=fraction,
            eight_bit_optimizer=job.training.optimizer == OptimizerName.PAGED_ADAMW_8BIT,
            weight_bytes=4.0 if cpu else 2.0)

    checkpointing = asked == Switch.ON or (not cpu and asked == Switch.AUTO)
    peak = need(checkpointing)
    fits = _fits(peak, device.memory_bytes)
    what = "full fine-tuning" if tuning == TuningType.FULL else (
        f"Spectrum ({fraction:g} of the layers trainable)")
    where = "RAM" if cpu else "GPU memory"
    if fits is False:
        reason = (f"does not fit: {what} needs about {_gib(peak)}, {_gib(device.memory_bytes)} "
                  f"of {where}; the worker would fail the job at once")
    else:
        reason = f"{what} in {'fp32 on CPU' if cpu else 'mixed precision'}; about {_gib(peak)}"
        reason += f" needed, {_gib(device.memory_bytes)} of {where}" \
            if device.memory_bytes else " needed"
    checkpointing_needed = not cpu and _fits(need(False), device.memory_bytes) is False
    return Decision(tuning, Quantization.NONE, fits, reason, peak, checkpointing_needed)


def decide(job: JobData, device: Device, batch: int) -> Decision:
    asked = job.training.tuning
    cpu = device.kind == "cpu"
    if job.training.optimizer == OptimizerName.PAGED_ADAMW_8BIT and cpu:
        tuning = TuningType.LORA if asked == TuningType.AUTO else asked
        return Decision(tuning, Quantization.NONE, False,
                        "optimizer paged_adamw_8bit needs a CUDA worker", None, False)
    if asked == TuningType.AUTO:
        if job.shape is None:
            return Decision(TuningType.LORA, Quantization.NONE, None,
                            "the base model's files are not available to the planner", None,
                            False)
        choice = choose_tuning(job.shape, None if cpu else device.memory_bytes,
                               rank=job.lora.rank, batch_size=batch, max_length=job.max_length)
        reason = f"auto → {choice.reason}"
        if choice.tuning == TuningType.FULL:  # the worker's event names the tree's reason
            return replace(_full_weights(job, device, TuningType.FULL, batch), reason=reason)
        if not choice.fits:
            return Decision(choice.tuning, Quantization.NF4, False, reason,
                            choice.estimated_bytes, True)
        return _adapter(job, device, choice.tuning, batch, reason)
    if asked in (TuningType.LORA, TuningType.QLORA):
        return _adapter(job, device, asked, batch, "")
    return _full_weights(job, device, asked, batch)


def plan_device(job: JobData, device: Device) -> PlanDevice:
    cap = CPU_MAX_BATCH
    if device.kind == "gpu":
        cap = GPU_MAX_BATCH
        if job.shape is not None and device.memory_bytes is not None:
            cap = gpu_batch_cap(job.shape, rank=job.lora.rank, max_length=job.max_length,
                                free_bytes=device.memory_bytes)
    has_validation_file = job.n_validation_file_examples is not None
    split = None if has_validation_file else job.training.validation_split
    held_out = held_out_count(job.n_examples, split) if split else 0
    n_train = job.n_examples - held_out
    hp = resolve_hyperparameters(job.hyperparameters, job.method, n_train, batch_cap=cap)
    decision = decide(job, device, hp.batch_size)
    accumulation = (1 if job.training.gradient_accumulation_steps == "auto"
                    else int(job.training.gradient_accumulation_steps))
    steps = expected_steps(n_train, hp.batch_size, accumulation, hp.n_epochs)
    resolved = resolve_training(
        job.training, batch_size=hp.batch_size, tuning=decision.tuning,
        tuning_reason=decision.reason, device="cpu" if device.kind == "cpu" else "cuda",
        activations_fit=not decision.checkpointing_needed,
        has_validation=has_validation_file, expected_steps=steps)
    n_valid = job.n_validation_file_examples if has_validation_file else held_out
    trained, flops, seconds = _duration(job, device, decision, resolved.gradient_checkpointing,
                                        n_train=n_train, held_out=held_out, steps=steps,
                                        n_epochs=hp.n_epochs,
                                        eval_interval=resolved.eval_interval)
    return PlanDevice(
        name=device.name, kind=device.kind,  # type: ignore[arg-type]
        memory_bytes=device.memory_bytes, tuning=decision.tuning.value,
        quantization=decision.quantization.value, fits=decision.fits, reason=decision.reason,
        estimated_peak_memory_bytes=decision.estimated_bytes,
        hyperparameters=PlanHyperparameters(
            batch_size=hp.batch_size, learning_rate_multiplier=hp.learning_rate_multiplier,
            n_epochs=hp.n_epochs, beta=hp.beta,
            learning_rate=learning_rate(hp, decision.tuning)),
        training=resolved, training_examples=n_train, validation_examples=n_valid or 0,
        steps=steps, trained_tokens=trained, estimated_flops=flops, estimated_seconds=seconds)


def flops_per_token(tuning: TuningType, method: MethodType, *, spectrum_fraction: float,
                    checkpointing: bool) -> float:
    """Training FLOPs per trained token, in units of N (the parameter count)."""
    if tuning == TuningType.FULL:
        factor = 6.0
    elif tuning == TuningType.SPECTRUM:
        factor = 4.0 + 2.0 * spectrum_fraction
    else:
        factor = 4.0
    if method == MethodType.DPO:
        factor += 2.0  # the reference model's forward pass
    if checkpointing:
        factor += 2.0  # activations recomputed in the backward pass
    return factor


def _duration(job: JobData, device: Device, decision: Decision, checkpointing: bool, *,
              n_train: int, held_out: int, steps: int, n_epochs: int, eval_interval: int
              ) -> tuple[int | None, float | None, float | None]:
    if job.train_tokens is None or job.shape is None:
        return None, None, None
    total = job.n_examples or 1
    per_epoch = job.train_tokens * n_train / total
    trained = int(per_epoch * n_epochs)
    fraction = job.training.spectrum_fraction or DEFAULT_SPECTRUM_FRACTION
    n = job.shape.n_params
    flops = trained * n * flops_per_token(decision.tuning, job.method,
                                          spectrum_fraction=fraction, checkpointing=checkpointing)
    valid_tokens = (job.validation_file_tokens if job.n_validation_file_examples is not None
                    else job.train_tokens * held_out / total)
    if valid_tokens:
        evaluations = max(1, steps // max(1, eval_interval))
        flops += evaluations * valid_tokens * 2 * n
    return trained, float(flops), flops / device.flops_per_second
