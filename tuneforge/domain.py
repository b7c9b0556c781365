"""Domain types shared by the API server, the worker and serving.

This module sits at the bottom of the import graph: it imports nothing of ours and nothing
heavy (no torch), so every side can use it.
"""

from __future__ import annotations

import secrets
import time
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, WithJsonSchema


def new_id(prefix: str) -> str:
    """An OpenAI-style id: `prefix-` plus 24 url-safe random characters."""
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return prefix + "".join(secrets.choice(alphabet) for _ in range(24))


def now() -> int:
    return int(time.time())


class FilePurpose(StrEnum):
    FINE_TUNE = "fine-tune"
    FINE_TUNE_RESULTS = "fine-tune-results"
    ASSISTANTS = "assistants"
    BATCH = "batch"
    VISION = "vision"
    USER_DATA = "user_data"
    EVALS = "evals"


# Purposes a client may upload with; `fine-tune-results` is written by the service only.
UPLOADABLE_PURPOSES = frozenset(p.value for p in FilePurpose) - {FilePurpose.FINE_TUNE_RESULTS}


class JobStatus(StrEnum):
    VALIDATING_FILES = "validating_files"
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
# Ended without a model: nothing the job uploaded or asked to serve will ever be published.
UNPUBLISHED_STATUSES = frozenset({JobStatus.FAILED, JobStatus.CANCELLED})
# Jobs a worker should be holding or about to pick up.
ACTIVE_STATUSES = frozenset({JobStatus.VALIDATING_FILES, JobStatus.QUEUED, JobStatus.RUNNING})


class UploadStatus(StrEnum):
    PENDING = "pending"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


class EventLevel(StrEnum):
    INFO = "info"
    WARN = "warn"
    ERROR = "error"


class EventType(StrEnum):
    MESSAGE = "message"
    METRICS = "metrics"


class MethodType(StrEnum):
    SUPERVISED = "supervised"
    DPO = "dpo"


class Quantization(StrEnum):
    """TuneForge extension: how the base model is loaded for training."""

    AUTO = "auto"  # 4-bit when the model would not fit in the device's memory otherwise
    NF4 = "4bit"  # QLoRA: 4-bit NF4 base, bf16 compute (bitsandbytes)
    NONE = "none"  # plain LoRA on a full-precision base


Auto = Literal["auto"]


def auto_or(kind: type[int] | type[float], *, low: float, high: float,
            low_inclusive: bool = True) -> Any:
    """OpenAI's `"auto"`-or-number hyperparameter, validated as one value so that an error
    names the field itself and the bound it broke."""

    def check(value: object) -> object:
        if value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"must be 'auto' or a number, got {value!r}")
        if kind is int and not float(value).is_integer():
            raise ValueError(f"must be 'auto' or a whole number, got {value!r}")
        number = kind(value)
        too_low = number < low if low_inclusive else number <= low
        if too_low or number > high:
            bracket = "[" if low_inclusive else "("
            raise ValueError(f"must be 'auto' or in {bracket}{low:g}, {high:g}], got {value!r}")
        return number

    number_schema: dict[str, Any] = {"type": "integer" if kind is int else "number",
                                     "maximum": high}
    number_schema["minimum" if low_inclusive else "exclusiveMinimum"] = low
    return Annotated[
        Auto | kind,
        PlainValidator(check),
        WithJsonSchema({"anyOf": [{"const": "auto"}, number_schema]}),
    ]


class Hyperparameters(BaseModel):
    """OpenAI's hyperparameters: each value is a number or the string "auto"."""

    model_config = ConfigDict(extra="forbid")

    batch_size: auto_or(int, low=1, high=256) = "auto"  # type: ignore[valid-type]
    learning_rate_multiplier: auto_or(  # type: ignore[valid-type]
        float, low=0, high=10, low_inclusive=False) = "auto"
    n_epochs: auto_or(int, low=1, high=50) = "auto"  # type: ignore[valid-type]


class DpoHyperparameters(Hyperparameters):
    beta: auto_or(float, low=0, high=2, low_inclusive=False) = "auto"  # type: ignore[valid-type]


# A module name or dotted suffix of one: non-empty dot-separated parts without whitespace.
TARGET_MODULE_PATTERN = r"^[^.\s]+(?:\.[^.\s]+)*$"


class LoraConfig(BaseModel):
    """TuneForge extension (`lora` in the job request): adapter and quantization settings.

    Defaults are the safe default for small-data SFT: r=16, alpha=16, no dropout, every
    linear layer adapted.
    """

    model_config = ConfigDict(extra="forbid")

    rank: Annotated[int, Field(ge=1, le=256)] = 16
    alpha: Annotated[float, Field(gt=0, le=1024)] = 16
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    # PEFT's "all-linear" preset, or module names (PEFT matches a name or a dotted suffix of
    # one; the server checks them against the base model at job creation).
    target_modules: Literal["all-linear"] | Annotated[list[str], Field(json_schema_extra={
        "minItems": 1, "items": {"type": "string", "pattern": TARGET_MODULE_PATTERN}},
    )] = "all-linear"
    quantization: Quantization = Quantization.AUTO


class TuningType(StrEnum):
    """TuneForge extension (`training.tuning`): which weights a job trains."""

    AUTO = "auto"  # tuneforge/memory.py:choose_tuning: memory x model size
    LORA = "lora"  # a LoRA adapter on a frozen base (4-bit base only when it would not fit)
    QLORA = "qlora"  # a LoRA adapter on a 4-bit NF4 base
    FULL = "full"  # every weight
    SPECTRUM = "spectrum"  # only the layers with the highest signal-to-noise ratio


ADAPTER_TUNINGS = frozenset({TuningType.LORA, TuningType.QLORA})
FULL_WEIGHT_TUNINGS = frozenset({TuningType.FULL, TuningType.SPECTRUM})


class LrScheduler(StrEnum):
    AUTO = "auto"  # cosine
    LINEAR = "linear"
    COSINE = "cosine"
    CONSTANT = "constant"


class OptimizerName(StrEnum):
    AUTO = "auto"  # AdamW (fused on CUDA)
    ADAMW = "adamw"
    PAGED_ADAMW_8BIT = "paged_adamw_8bit"  # bitsandbytes, CUDA workers only


class Switch(StrEnum):
    AUTO = "auto"
    ON = "on"
    OFF = "off"


class EarlyStopping(BaseModel):
    """Stop when the validation loss has not improved by more than `min_delta` for `patience`
    evaluations in a row; the job's model is then the best checkpoint."""

    model_config = ConfigDict(extra="forbid")

    patience: Annotated[int, Field(ge=1, le=100)] = 3
    min_delta: Annotated[float, Field(ge=0, le=10)] = 0.0


class TrainingConfig(BaseModel):
    """TuneForge extension (`training` in the job request): tuning type and training controls.

    Every field defaults to what a job without the extension gets; `"auto"` values are
    resolved by the worker and written back to the job (`ResolvedTraining`)."""

    model_config = ConfigDict(extra="forbid")

    tuning: TuningType = TuningType.LORA
    # Spectrum: the fraction of each kind of weight matrix to unfreeze (default 0.25).
    spectrum_fraction: Annotated[float, Field(gt=0, le=1)] | None = None
    # Longest example in tokens (default 1024); at most what the inference servers serve.
    max_seq_length: Annotated[int, Field(ge=32, le=131072)] | None = None
    warmup_ratio: auto_or(float, low=0, high=0.5) = "auto"  # type: ignore[valid-type]
    lr_scheduler: LrScheduler = LrScheduler.AUTO
    weight_decay: auto_or(float, low=0, high=1) = "auto"  # type: ignore[valid-type]
    # Examples per optimizer step = batch_size x gradient_accumulation_steps.
    gradient_accumulation_steps: auto_or(int, low=1, high=256) = "auto"  # type: ignore[valid-type]
    optimizer: OptimizerName = OptimizerName.AUTO
    gradient_checkpointing: Switch = Switch.AUTO
    # Fraction of the training file held out for validation when no validation_file is given.
    validation_split: Annotated[float, Field(gt=0, le=0.5)] | None = None
    # Optimizer steps between evaluations on the validation set.
    eval_interval: auto_or(int, low=1, high=1_000_000) = "auto"  # type: ignore[valid-type]
    early_stopping: EarlyStopping | None = None


class ResolvedTraining(BaseModel):
    """`TrainingConfig` with every choice made, as the worker ran it."""

    tuning: TuningType
    tuning_reason: str = ""
    spectrum_fraction: float | None = None
    max_seq_length: int
    warmup_ratio: float
    lr_scheduler: LrScheduler
    weight_decay: float
    gradient_accumulation_steps: int
    effective_batch_size: int
    optimizer: OptimizerName
    gradient_checkpointing: bool
    validation_split: float | None = None
    eval_interval: int
    early_stopping: EarlyStopping | None = None


class ParentModel(BaseModel):
    """The caller's own fine-tuned model (or one of its checkpoints) a job starts from."""

    model: str  # `ft:…` or `ft:…:ckpt-step-N`, as the caller named it
    job_id: str
    step: int | None = None  # the checkpoint's step; None: the final model
    tuning: TuningType = TuningType.LORA
    weights_prefix: str  # S3 prefix of the PEFT adapter directory to start from


class ResolvedHyperparameters(BaseModel):
    """Concrete values after "auto" is resolved by the worker."""

    batch_size: int
    learning_rate_multiplier: float
    n_epochs: int
    beta: float | None = None


class IntegrationType(StrEnum):
    WANDB = "wandb"  # OpenAI's Weights & Biases integration
    MLFLOW = "mlflow"  # TuneForge extension: an MLflow tracking server


class WandbIntegration(BaseModel):
    """OpenAI's `wandb` integration settings."""

    project: str
    entity: str | None = None
    name: str | None = None
    tags: list[str] | None = None


class MlflowIntegration(BaseModel):
    """TuneForge's `mlflow` integration settings: the run goes to `experiment` on
    `tracking_uri` (default: the worker's `tracking.mlflow_tracking_uri`)."""

    experiment: str
    tracking_uri: str | None = None
    run_name: str | None = None
    tags: dict[str, str] | None = None


class Integration(BaseModel):
    """One entry of a job's `integrations`, as the worker honours it."""

    type: IntegrationType
    wandb: WandbIntegration | None = None
    mlflow: MlflowIntegration | None = None


class TrackingRun(BaseModel):
    """The tracker run of one integration (`index` into the job's `integrations`): its id,
    and its URL when the tracker has one (an offline W&B run has none)."""

    index: int
    type: IntegrationType
    run_id: str
    url: str | None = None


class JobSpec(BaseModel):
    """Everything a worker needs to train one job; built by the server, read by the worker."""

    job_id: str
    organization_id: str
    model: str
    method: MethodType
    training_file: str
    validation_file: str | None = None
    hyperparameters: DpoHyperparameters
    lora: LoraConfig = Field(default_factory=LoraConfig)
    seed: int
    suffix: str | None = None
    # The served base model the result belongs to: `model` itself, or the base of the parent.
    base_model: str = ""
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    parent: ParentModel | None = None
    # Experiment trackers to log the run to, and the runs a previous run of the job started
    # (a resumed job continues them).
    integrations: list[Integration] = Field(default_factory=list)
    tracking_runs: list[TrackingRun] = Field(default_factory=list)

    def model_post_init(self, context: Any, /) -> None:
        if not self.base_model:
            self.base_model = self.model


def fine_tuned_model_name(base: str, organization_id: str, suffix: str | None, job_id: str) -> str:
    """`ft:{base}:{org}:{suffix}:{id}` as OpenAI names fine-tuned models."""
    short_id = job_id.removeprefix("ftjob-")
    return f"ft:{base}:{organization_id}:{suffix or ''}:{short_id}"


def checkpoint_model_name(fine_tuned_model: str, step: int) -> str:
    return f"{fine_tuned_model}:ckpt-step-{step}"
