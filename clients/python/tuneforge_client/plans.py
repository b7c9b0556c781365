"""The plan of a fine-tuning job (`jobs.plan(...)`, TuneForge extension): typed like the other
objects (`tuneforge_client.types`), the same whichever transport fetched it. Field meanings are
in the server's OpenAPI document (`JobPlanObject`) and `proto/tuneforge/v1/plan.proto`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from tuneforge_client.types import _Object


@dataclass(frozen=True)
class PlanDataError(_Object):
    code: str
    message: str  # "line N: …", as the job's validation reports it
    line: int | None = None  # None: about the whole file


@dataclass(frozen=True)
class PlanTokens(_Object):
    total: int
    min: int
    median: float
    max: int
    max_seq_length: int
    n_over_max_seq_length: int
    over_max_seq_length_lines: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class PlanFile(_Object):
    file_id: str
    n_lines: int
    n_examples: int
    n_errors: int
    errors_truncated: bool
    format: str | None = None
    errors: list[PlanDataError] = field(default_factory=list)
    tokens: PlanTokens | None = None


@dataclass(frozen=True)
class PlanModelShape(_Object):
    parameters: int
    hidden_size: int
    layers: int
    vocab_size: int


@dataclass(frozen=True)
class PlanHyperparameters(_Object):
    _omit_if_none = frozenset({"beta"})

    batch_size: int
    learning_rate_multiplier: float
    n_epochs: int
    learning_rate: float
    beta: float | None = None


@dataclass(frozen=True)
class PlanEarlyStopping(_Object):
    patience: int
    min_delta: float


@dataclass(frozen=True)
class PlanTraining(_Object):
    tuning: str
    tuning_reason: str
    max_seq_length: int
    warmup_ratio: float
    lr_scheduler: str
    weight_decay: float
    gradient_accumulation_steps: int
    effective_batch_size: int
    optimizer: str
    gradient_checkpointing: bool
    eval_interval: int
    spectrum_fraction: float | None = None
    validation_split: float | None = None
    early_stopping: PlanEarlyStopping | None = None


@dataclass(frozen=True)
class PlanDevice(_Object):
    name: str
    kind: Literal["cpu", "gpu"]
    tuning: str
    quantization: str
    reason: str
    hyperparameters: PlanHyperparameters
    training: PlanTraining
    training_examples: int
    validation_examples: int
    steps: int
    memory_bytes: int | None = None
    fits: bool | None = None
    estimated_peak_memory_bytes: int | None = None
    trained_tokens: int | None = None
    estimated_flops: float | None = None
    estimated_seconds: float | None = None


@dataclass(frozen=True)
class PlanWarning(_Object):
    code: str
    message: str


@dataclass(frozen=True)
class JobPlan(_Object):
    """What a job with this request would do; nothing was created."""

    _omit_if_none = frozenset({"parent_model", "validation_data", "model_shape"})

    model: str
    base_model: str
    method: str
    valid: bool
    training_data: PlanFile
    parent_model: str | None = None
    validation_data: PlanFile | None = None
    model_shape: PlanModelShape | None = None
    devices: list[PlanDevice] = field(default_factory=list)
    warnings: list[PlanWarning] = field(default_factory=list)
    object: Literal["fine_tuning.job.plan"] = "fine_tuning.job.plan"
