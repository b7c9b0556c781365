"""The API's objects as typed, immutable dataclasses, the same whichever transport fetched them.

Field names and values are OpenAI's JSON ones; `to_dict()` gives back exactly the JSON object the
REST API returns, and `from_dict()` reads it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Literal, TypeVar

T = TypeVar("T")

Auto = Literal["auto"]
JobStatus = Literal["validating_files", "queued", "running", "paused", "succeeded", "failed",
                    "cancelled"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


def _json(value: Any) -> Any:
    if isinstance(value, _Object):
        return value.to_dict()
    if isinstance(value, list):
        return [_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    return value


class _Object:
    # Fields the REST API leaves out, rather than sending null, when they have no value.
    _omit_if_none: ClassVar[frozenset[str]] = frozenset()

    def to_dict(self) -> dict[str, Any]:
        """The object as the REST API's JSON."""
        return {f.name: _json(value)
                for f in dataclasses.fields(self)  # type: ignore[arg-type]
                if (value := getattr(self, f.name)) is not None
                or f.name not in self._omit_if_none}


@dataclass(frozen=True)
class FileObject(_Object):
    _omit_if_none = frozenset({"expires_at", "status_details"})

    id: str
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: str
    expires_at: int | None = None
    status_details: str | None = None
    object: Literal["file"] = "file"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FileObject:
        return cls(id=d["id"], bytes=d["bytes"], created_at=d["created_at"],
                   filename=d["filename"], purpose=d["purpose"], status=d["status"],
                   expires_at=d.get("expires_at"), status_details=d.get("status_details"))


@dataclass(frozen=True)
class FileDeleted(_Object):
    id: str
    deleted: bool
    object: Literal["file"] = "file"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FileDeleted:
        return cls(id=d["id"], deleted=d["deleted"])


@dataclass(frozen=True)
class Hyperparameters(_Object):
    _omit_if_none = frozenset({"batch_size", "learning_rate_multiplier", "n_epochs"})

    batch_size: int | Auto | None = None
    learning_rate_multiplier: float | Auto | None = None
    n_epochs: int | Auto | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Hyperparameters:
        return cls(batch_size=d.get("batch_size"),
                   learning_rate_multiplier=d.get("learning_rate_multiplier"),
                   n_epochs=d.get("n_epochs"))


@dataclass(frozen=True)
class DpoHyperparameters(_Object):
    _omit_if_none = frozenset({"batch_size", "learning_rate_multiplier", "n_epochs", "beta"})

    batch_size: int | Auto | None = None
    learning_rate_multiplier: float | Auto | None = None
    n_epochs: int | Auto | None = None
    beta: float | Auto | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DpoHyperparameters:
        return cls(batch_size=d.get("batch_size"),
                   learning_rate_multiplier=d.get("learning_rate_multiplier"),
                   n_epochs=d.get("n_epochs"), beta=d.get("beta"))


@dataclass(frozen=True)
class SupervisedMethod(_Object):
    hyperparameters: Hyperparameters


@dataclass(frozen=True)
class DpoMethod(_Object):
    hyperparameters: DpoHyperparameters


@dataclass(frozen=True)
class Method(_Object):
    _omit_if_none = frozenset({"supervised", "dpo"})

    type: Literal["supervised", "dpo"]
    supervised: SupervisedMethod | None = None
    dpo: DpoMethod | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Method:
        supervised, dpo = d.get("supervised"), d.get("dpo")
        return cls(
            type=d["type"],
            supervised=SupervisedMethod(Hyperparameters.from_dict(
                supervised.get("hyperparameters") or {})) if supervised else None,
            dpo=DpoMethod(DpoHyperparameters.from_dict(
                dpo.get("hyperparameters") or {})) if dpo else None,
        )


@dataclass(frozen=True)
class Lora(_Object):
    """TuneForge extension: the adapter and quantization settings of a job."""

    rank: int
    alpha: float
    dropout: float
    target_modules: str | list[str]
    quantization: str

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Lora:
        return cls(rank=d["rank"], alpha=d["alpha"], dropout=d["dropout"],
                   target_modules=d["target_modules"], quantization=d["quantization"])


@dataclass(frozen=True)
class JobError(_Object):
    code: str
    message: str
    param: str | None = None


@dataclass(frozen=True)
class Wandb(_Object):
    _omit_if_none = frozenset({"tags"})

    project: str
    entity: str | None = None
    name: str | None = None
    tags: list[str] | None = None


@dataclass(frozen=True)
class Integration(_Object):
    type: Literal["wandb"]
    wandb: Wandb

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Integration:
        return cls(type=d["type"], wandb=Wandb(**d["wandb"]))


@dataclass(frozen=True)
class FineTuningJob(_Object):
    _omit_if_none = frozenset({"suffix"})

    id: str
    created_at: int
    hyperparameters: Hyperparameters
    model: str
    organization_id: str
    seed: int
    status: JobStatus
    training_file: str
    method: Method
    lora: Lora
    result_files: list[str] = field(default_factory=list)
    error: JobError | None = None
    fine_tuned_model: str | None = None
    finished_at: int | None = None
    trained_tokens: int | None = None
    validation_file: str | None = None
    estimated_finish: int | None = None
    integrations: list[Integration] | None = None
    metadata: dict[str, str] | None = None
    suffix: str | None = None
    object: Literal["fine_tuning.job"] = "fine_tuning.job"

    @property
    def done(self) -> bool:
        """Whether the job has ended (succeeded, failed or cancelled)."""
        return self.status in TERMINAL_STATUSES

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FineTuningJob:
        error = d.get("error")
        integrations = d.get("integrations")
        return cls(
            id=d["id"], created_at=d["created_at"],
            hyperparameters=Hyperparameters.from_dict(d.get("hyperparameters") or {}),
            model=d["model"], organization_id=d["organization_id"], seed=d["seed"],
            status=d["status"], training_file=d["training_file"],
            method=Method.from_dict(d["method"]), lora=Lora.from_dict(d["lora"]),
            result_files=list(d.get("result_files") or []),
            error=JobError(**error) if error else None,
            fine_tuned_model=d.get("fine_tuned_model"), finished_at=d.get("finished_at"),
            trained_tokens=d.get("trained_tokens"), validation_file=d.get("validation_file"),
            estimated_finish=d.get("estimated_finish"),
            integrations=[Integration.from_dict(i) for i in integrations]
            if integrations is not None else None,
            metadata=d.get("metadata"), suffix=d.get("suffix"),
        )


@dataclass(frozen=True)
class FineTuningJobEvent(_Object):
    _omit_if_none = frozenset({"data"})

    id: str
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    type: Literal["message", "metrics"] = "message"
    data: dict[str, Any] | None = None
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FineTuningJobEvent:
        return cls(id=d["id"], created_at=d["created_at"], level=d["level"],
                   message=d["message"], type=d.get("type", "message"), data=d.get("data"))


@dataclass(frozen=True)
class CheckpointMetrics(_Object):
    _omit_if_none = frozenset({"step", "train_loss", "train_mean_token_accuracy", "valid_loss",
                               "valid_mean_token_accuracy", "full_valid_loss",
                               "full_valid_mean_token_accuracy"})

    step: float | None = None
    train_loss: float | None = None
    train_mean_token_accuracy: float | None = None
    valid_loss: float | None = None
    valid_mean_token_accuracy: float | None = None
    full_valid_loss: float | None = None
    full_valid_mean_token_accuracy: float | None = None


@dataclass(frozen=True)
class FineTuningJobCheckpoint(_Object):
    id: str
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: CheckpointMetrics
    step_number: int
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FineTuningJobCheckpoint:
        return cls(id=d["id"], created_at=d["created_at"],
                   fine_tuned_model_checkpoint=d["fine_tuned_model_checkpoint"],
                   fine_tuning_job_id=d["fine_tuning_job_id"],
                   metrics=CheckpointMetrics(**(d.get("metrics") or {})),
                   step_number=d["step_number"])


@dataclass(frozen=True)
class Model(_Object):
    id: str
    created: int
    owned_by: str
    object: Literal["model"] = "model"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Model:
        return cls(id=d["id"], created=d["created"], owned_by=d["owned_by"])


@dataclass(frozen=True)
class ModelDeleted(_Object):
    id: str
    deleted: bool
    object: Literal["model"] = "model"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelDeleted:
        return cls(id=d["id"], deleted=d["deleted"])


@dataclass(frozen=True)
class Page(_Object, Generic[T]):
    """OpenAI's list envelope. Iterating a page iterates its `data`."""

    _omit_if_none = frozenset({"first_id", "last_id"})

    data: list[T]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None
    object: Literal["list"] = "list"

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class ChatCompletion:
    """A `chat.completion` object; `raw` is the whole JSON answer."""

    id: str
    model: str
    choices: list[dict[str, Any]]
    usage: dict[str, Any] | None
    raw: dict[str, Any]

    @property
    def content(self) -> str:
        """The first choice's message text."""
        if not self.choices:
            return ""
        return str((self.choices[0].get("message") or {}).get("content") or "")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ChatCompletion:
        return cls(id=d.get("id", ""), model=d.get("model", ""), choices=d.get("choices") or [],
                   usage=d.get("usage"), raw=d)


@dataclass(frozen=True)
class ChatCompletionChunk:
    """One `chat.completion.chunk` of a streamed answer; `raw` is the whole JSON chunk."""

    id: str
    model: str
    choices: list[dict[str, Any]]
    raw: dict[str, Any]

    @property
    def text(self) -> str:
        """The first choice's new text (empty when this chunk adds none)."""
        if not self.choices:
            return ""
        return str((self.choices[0].get("delta") or {}).get("content") or "")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ChatCompletionChunk:
        return cls(id=d.get("id", ""), model=d.get("model", ""), choices=d.get("choices") or [],
                   raw=d)
