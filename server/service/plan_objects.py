"""The `fine_tuning.job.plan` object that `POST /v1/fine_tuning/jobs/plan` answers (a TuneForge
extension), as REST sends it and gRPC mirrors it (`proto/tuneforge/v1/plan.proto`)."""

from __future__ import annotations

from typing import Literal

from server.service.objects import ApiObject
from tuneforge.domain import ResolvedTraining


class PlanDataError(ApiObject):
    """One problem of a file, as the job's validation would report it."""

    line: int | None  # None: about the whole file (too few examples)
    code: str  # invalid_training_file, invalid_validation_file or invalid_n_examples
    message: str  # `line N: …`, the validation's message


class PlanTokens(ApiObject):
    """Tokens per example: the whole conversation rendered with the base model's chat
    template (a DPO pair: its longer sequence)."""

    total: int
    min: int
    median: float
    max: int
    max_seq_length: int
    n_over_max_seq_length: int  # truncated to max_seq_length when training
    over_max_seq_length_lines: list[int]  # the first 10


class PlanFile(ApiObject):
    file_id: str
    format: str | None  # openai_chat, openai_preference, alpaca, prompt_completion, …
    n_lines: int
    n_examples: int  # examples that passed every rule
    n_errors: int
    errors: list[PlanDataError]  # the first `planning.max_errors`
    errors_truncated: bool
    tokens: PlanTokens | None  # None: the base model's tokenizer is not available here


class PlanModelShape(ApiObject):
    parameters: int
    hidden_size: int
    layers: int
    vocab_size: int


class PlanHyperparameters(ApiObject):
    omit_if_none = frozenset({"beta"})

    batch_size: int
    learning_rate_multiplier: float
    n_epochs: int
    beta: float | None = None  # DPO only
    learning_rate: float  # the base rate of the tuning type times the multiplier


class PlanDevice(ApiObject):
    """What the worker would do on one kind of device."""

    name: str  # "cpu", "gpu-24gib"
    kind: Literal["cpu", "gpu"]
    memory_bytes: int | None  # free memory planned for (None: a CPU worker's is unknown)
    tuning: str  # lora, qlora, full or spectrum (the decision for "auto")
    quantization: str  # "4bit" (NF4) or "none"
    fits: bool | None  # None: unknown (a CPU worker with no configured memory)
    reason: str
    estimated_peak_memory_bytes: int | None  # None: the base model's files are not here
    hyperparameters: PlanHyperparameters
    training: ResolvedTraining
    training_examples: int
    validation_examples: int
    steps: int  # optimizer steps
    trained_tokens: int | None  # tokens computed over every epoch, after truncation
    estimated_flops: float | None
    estimated_seconds: float | None


class PlanWarning(ApiObject):
    code: str
    message: str


class JobPlanObject(ApiObject):
    """What a job with this body would do, before it exists."""

    omit_if_none = frozenset({"parent_model", "validation_data", "model_shape"})

    object: Literal["fine_tuning.job.plan"] = "fine_tuning.job.plan"
    model: str
    base_model: str
    parent_model: str | None = None  # the `ft:` model or checkpoint the job would continue
    method: str
    valid: bool  # the files pass validation: creating this job would queue it
    training_data: PlanFile
    validation_data: PlanFile | None = None
    model_shape: PlanModelShape | None = None
    devices: list[PlanDevice]
    warnings: list[PlanWarning]
