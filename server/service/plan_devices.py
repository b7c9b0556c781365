"""What the worker would decide on each planned device: the tuning type and quantization, the
resolved hyperparameters and training controls, peak memory, optimizer steps and duration.

The tuning decision is the worker's own (`tuneforge.memory.decide_tuning`, which the worker
raises on), made here with the device's configured memory instead of the GPU's real free
memory; a decision the worker would fail is reported with `fits: false` and its reason.

Duration is a FLOPs model (see `tuneforge.settings.PlanningSettings`): trained tokens x FLOPs
per token / the device's effective throughput; evaluation passes add 2·N per validation token.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.service.plan_objects import PlanDevice, PlanHyperparameters
from tuneforge.domain import (
    DpoHyperparameters,
    LoraConfig,
    MethodType,
    TrainingConfig,
    TuningType,
)
from tuneforge.memory import (
    GIB,
    GPU_MAX_BATCH,
    ModelShape,
    TuningDecision,
    decide_tuning,
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
    decision = decide_tuning(job.method, job.training, job.lora, job.shape,
                             gpu=device.kind == "gpu", memory_bytes=device.memory_bytes,
                             batch_size=hp.batch_size, max_length=job.max_length)
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


def _duration(job: JobData, device: Device, decision: TuningDecision, checkpointing: bool, *,
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
