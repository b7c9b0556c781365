"""The OpenAI objects the API returns, field for field, built from rows.

Both transports (REST and gRPC) serialize these, so the two views of one object are the same
data.
"""

from __future__ import annotations

from typing import Any, ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel, SerializerFunctionWrapHandler, model_serializer

from server.db import models as db
from tuneforge.domain import MethodType, TrainingConfig

T = TypeVar("T")


class ApiObject(BaseModel):
    """An OpenAI object. Fields named in `omit_if_none` are left out rather than sent as null:
    OpenAI's spec types them as object/array/number/string without null (or they are
    TuneForge extensions a user who sets none should not see)."""

    omit_if_none: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _omit_nones(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for name in self.omit_if_none:
            if name in data and data[name] is None:
                del data[name]
        return data


class FileObject(ApiObject):
    omit_if_none = frozenset({"expires_at", "status_details"})

    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    expires_at: int | None = None
    filename: str
    purpose: str
    status: str
    status_details: str | None = None


class FileDeleted(ApiObject):
    id: str
    object: Literal["file"] = "file"
    deleted: bool


class UploadObject(ApiObject):
    id: str
    object: Literal["upload"] = "upload"
    bytes: int
    created_at: int
    expires_at: int
    filename: str
    purpose: str
    status: str
    file: FileObject | None = None


class UploadPartObject(ApiObject):
    id: str
    object: Literal["upload.part"] = "upload.part"
    created_at: int
    upload_id: str


class JobError(ApiObject):
    code: str
    message: str
    param: str | None = None


class HyperparametersObject(ApiObject):
    omit_if_none = frozenset({"batch_size", "learning_rate_multiplier", "n_epochs"})

    batch_size: int | Literal["auto"] | None = None
    learning_rate_multiplier: float | Literal["auto"] | None = None
    n_epochs: int | Literal["auto"] | None = None


class DpoHyperparametersObject(HyperparametersObject):
    omit_if_none = HyperparametersObject.omit_if_none | {"beta"}

    beta: float | Literal["auto"] | None = None


class SupervisedMethodObject(ApiObject):
    hyperparameters: HyperparametersObject


class DpoMethodObject(ApiObject):
    hyperparameters: DpoHyperparametersObject


class MethodObject(ApiObject):
    omit_if_none = frozenset({"supervised", "dpo"})

    type: Literal["supervised", "dpo"]
    supervised: SupervisedMethodObject | None = None
    dpo: DpoMethodObject | None = None


class LoraObject(ApiObject):
    rank: int
    alpha: float
    dropout: float
    target_modules: str | list[str]
    quantization: str


class WandbObject(ApiObject):
    omit_if_none = frozenset({"tags"})  # entity and name are nullable in OpenAI's spec

    project: str
    entity: str | None = None
    name: str | None = None
    tags: list[str] | None = None


class MlflowObject(ApiObject):
    """TuneForge extension: an MLflow tracking server's experiment (`docs/tracking.md`)."""

    omit_if_none = frozenset({"tracking_uri", "run_name", "tags"})

    experiment: str
    tracking_uri: str | None = None
    run_name: str | None = None
    tags: dict[str, str] | None = None


class IntegrationObject(ApiObject):
    """OpenAI's `wandb` integration, or TuneForge's `mlflow` one (each with its settings)."""

    omit_if_none = frozenset({"wandb", "mlflow"})

    type: Literal["wandb", "mlflow"]
    wandb: WandbObject | None = None
    mlflow: MlflowObject | None = None


class TrackingRunObject(ApiObject):
    """TuneForge extension: the tracker run the worker started for one integration."""

    type: Literal["wandb", "mlflow"]
    run_id: str
    url: str | None = None


class EarlyStoppingObject(ApiObject):
    patience: int
    min_delta: float


class TrainingObject(ApiObject):
    """The `training` extension on a job: as requested ("auto" kept) until the worker resolved
    it, then every value as the job trains with it (`tuning_reason`, `effective_batch_size`
    appear then)."""

    omit_if_none = frozenset({"tuning_reason", "spectrum_fraction", "effective_batch_size",
                              "validation_split", "early_stopping"})

    tuning: Literal["auto", "lora", "qlora", "full", "spectrum"]
    tuning_reason: str | None = None
    spectrum_fraction: float | None = None
    max_seq_length: int
    warmup_ratio: float | Literal["auto"]
    lr_scheduler: Literal["auto", "linear", "cosine", "constant"]
    weight_decay: float | Literal["auto"]
    gradient_accumulation_steps: int | Literal["auto"]
    effective_batch_size: int | None = None
    optimizer: Literal["auto", "adamw", "paged_adamw_8bit"]
    gradient_checkpointing: Literal["auto", "on", "off"]
    validation_split: float | None = None
    eval_interval: int | Literal["auto"]
    early_stopping: EarlyStoppingObject | None = None


DEFAULT_MAX_SEQ_LENGTH = 1024  # what the trainer uses when a job does not say


def training_object(requested: dict[str, Any] | None,
                    resolved: dict[str, Any] | None) -> TrainingObject:
    if resolved:
        values = {**resolved}
        values["gradient_checkpointing"] = "on" if resolved.get("gradient_checkpointing") \
            else "off"
        values["tuning_reason"] = resolved.get("tuning_reason") or None
    else:
        values = TrainingConfig(**(requested or {})).model_dump(mode="json")
        if values.get("max_seq_length") is None:
            values["max_seq_length"] = DEFAULT_MAX_SEQ_LENGTH
    return TrainingObject(**{k: v for k, v in values.items()
                             if k in TrainingObject.model_fields})


class FineTuningJobObject(ApiObject):
    omit_if_none = frozenset({"suffix", "base_model", "parent_model", "tracking_runs"})

    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    error: JobError | None = None
    fine_tuned_model: str | None = None
    finished_at: int | None = None
    hyperparameters: HyperparametersObject
    model: str
    organization_id: str
    result_files: list[str]
    seed: int
    status: str
    trained_tokens: int | None = None
    training_file: str
    validation_file: str | None = None
    estimated_finish: int | None = None
    integrations: list[IntegrationObject] | None = None
    metadata: dict[str, str] | None = None
    method: MethodObject
    # TuneForge extensions: the suffix the job was created with (absent when none), the
    # adapter/quantization settings and the training controls the job trains with, and, for a
    # job continuing a fine-tuned model (`model: "ft:…"`), that parent and its base model.
    suffix: str | None = None
    lora: LoraObject
    training: TrainingObject
    base_model: str | None = None
    parent_model: str | None = None
    # The W&B / MLflow runs of `integrations`, once the worker started them.
    tracking_runs: list[TrackingRunObject] | None = None


class JobEventObject(ApiObject):
    omit_if_none = frozenset({"data"})

    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    type: Literal["message", "metrics"] = "message"
    data: dict[str, Any] | None = None


class CheckpointMetrics(ApiObject):
    omit_if_none = frozenset({"step", "train_loss", "train_mean_token_accuracy", "valid_loss",
                              "valid_mean_token_accuracy", "full_valid_loss",
                              "full_valid_mean_token_accuracy"})

    step: float | None = None
    train_loss: float | None = None
    train_mean_token_accuracy: float | None = None
    valid_loss: float | None = None
    valid_mean_token_accuracy: float | None = None
    full_valid_loss: float | None = None
    full_valid_mean_token_accuracy: float | None = None


class CheckpointObject(ApiObject):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: CheckpointMetrics
    step_number: int


BASE_MODEL_CARD_FIELDS = frozenset({
    "architecture", "family", "max_position_embeddings", "context_length", "chat_template",
    "methods", "tunings", "supports_tools", "stop_tokens"})


class ModelObject(ApiObject):
    omit_if_none = frozenset({"base_model", "parent", "tuning"}) | BASE_MODEL_CARD_FIELDS

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    # TuneForge extensions on fine-tuned models and checkpoints: the base model they belong
    # to, how they were tuned, and the model they were trained from (absent: from the base).
    base_model: str | None = None
    tuning: str | None = None
    parent: str | None = None
    # TuneForge extensions on base models: what the model supports (`tuneforge.model_card`;
    # a field that cannot be known is absent).
    architecture: str | None = None
    family: str | None = None
    max_position_embeddings: int | None = None
    context_length: int | None = None
    chat_template: bool | None = None
    methods: list[str] | None = None
    tunings: list[str] | None = None
    supports_tools: bool | None = None
    stop_tokens: list[str] | None = None


class ModelDeleted(ApiObject):
    id: str
    object: Literal["model"] = "model"
    deleted: bool


class ListPage(ApiObject, Generic[T]):
    omit_if_none = frozenset({"first_id", "last_id"})

    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None


def page(items: list[Any], has_more: bool) -> dict[str, Any]:
    # OpenAI's spec requires first_id/last_id as strings on a file list, even an empty one:
    # an empty page says "" (what gRPC's proto3 strings default to), never null.
    return {
        "data": items,
        "has_more": has_more,
        "first_id": items[0].id if items else "",
        "last_id": items[-1].id if items else "",
    }


def file_object(row: db.File) -> FileObject:
    return FileObject(
        id=row.id, bytes=row.bytes, created_at=row.created_at, expires_at=row.expires_at,
        filename=row.filename, purpose=row.purpose, status=row.status,
        status_details=row.status_details,
    )


def upload_object(row: db.Upload, file: db.File | None) -> UploadObject:
    return UploadObject(
        id=row.id, bytes=row.bytes, created_at=row.created_at, expires_at=row.expires_at,
        filename=row.filename, purpose=row.purpose, status=row.status,
        file=file_object(file) if file else None,
    )


def job_object(row: db.Job) -> FineTuningJobObject:
    shown = {**row.hyperparameters, **(row.resolved_hyperparameters or {})}
    common = {k: shown.get(k) for k in ("batch_size", "learning_rate_multiplier", "n_epochs")}
    if row.method == MethodType.DPO:
        method = MethodObject(type="dpo", dpo=DpoMethodObject(
            hyperparameters=DpoHyperparametersObject(**common, beta=shown.get("beta"))))
    else:
        method = MethodObject(type="supervised", supervised=SupervisedMethodObject(
            hyperparameters=HyperparametersObject(**common)))
    return FineTuningJobObject(
        id=row.id, created_at=row.created_at,
        error=JobError(**row.error) if row.error else None,
        fine_tuned_model=row.fine_tuned_model, finished_at=row.finished_at,
        hyperparameters=HyperparametersObject(**common), model=row.model,
        organization_id=row.organization_id, result_files=list(row.result_files or []),
        seed=row.seed, status=row.status, trained_tokens=row.trained_tokens,
        training_file=row.training_file, validation_file=row.validation_file,
        estimated_finish=row.estimated_finish, integrations=row.integrations,
        metadata=row.metadata_, method=method, suffix=row.suffix, lora=LoraObject(**row.lora),
        training=training_object(row.training, row.resolved_training),
        base_model=row.base_model if row.parent and row.base_model != row.model else None,
        parent_model=row.parent["model"] if row.parent else None,
        tracking_runs=[TrackingRunObject(type=r["type"], run_id=r["run_id"], url=r.get("url"))
                       for r in row.tracking_runs] if row.tracking_runs else None,
    )


def event_object(row: db.JobEvent) -> JobEventObject:
    return JobEventObject(
        id=row.id, created_at=row.created_at, level=row.level,  # type: ignore[arg-type]
        message=row.message, type=row.type, data=row.data,  # type: ignore[arg-type]
    )


def checkpoint_object(row: db.JobCheckpoint) -> CheckpointObject:
    return CheckpointObject(
        id=row.id, created_at=row.created_at,
        fine_tuned_model_checkpoint=row.fine_tuned_model_checkpoint,
        fine_tuning_job_id=row.job_id, metrics=CheckpointMetrics(**row.metrics),
        step_number=row.step_number,
    )


class StorageShare(ApiObject):
    count: int
    bytes: int


class StorageUsageObject(ApiObject):
    """TuneForge extension: the object storage an organization uses, by kind."""

    object: Literal["organization.storage"] = "organization.storage"
    files: StorageShare  # uploaded files and results files
    models: StorageShare  # adapters and merged weights of models not deleted
    checkpoints: StorageShare  # stored checkpoints, of any job
    # Weights of deleted models not yet removed (a job still trains from them, or S3 refused).
    pending_deletion: StorageShare
    total_bytes: int
