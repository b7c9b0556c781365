"""The API's objects as typed, immutable dataclasses, the same whichever transport fetched them.

Field names and values are OpenAI's JSON ones; `to_dict()` gives back exactly the JSON object the
REST API returns, and `from_dict()` reads it.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from types import UnionType
from typing import (
    Any,
    ClassVar,
    Generic,
    Literal,
    Self,
    TypedDict,
    TypeVar,
    Union,
    get_args,
    get_origin,
    get_type_hints,
)

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


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _decode(hint: Any, value: Any) -> Any:
    """A JSON value as the type a field is annotated with: objects (also in lists) become
    their classes; everything else is JSON already."""
    if value is None:
        return None
    options = get_args(hint) if get_origin(hint) in (Union, UnionType) else (hint,)
    for option in options:
        if isinstance(option, type) and issubclass(option, _Object) and isinstance(value, dict):
            return option.from_dict(value)
        if get_origin(option) is list and isinstance(value, list):
            return [_decode(get_args(option)[0], v) for v in value]
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

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        """The object from the REST API's JSON (fields this version does not know are
        ignored)."""
        hints = _hints(cls)
        return cls(**{f.name: _decode(hints[f.name], d[f.name])
                      for f in dataclasses.fields(cls)  # type: ignore[arg-type]
                      if f.name in d})


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


@dataclass(frozen=True)
class FileDeleted(_Object):
    id: str
    deleted: bool
    object: Literal["file"] = "file"


@dataclass(frozen=True)
class Hyperparameters(_Object):
    _omit_if_none = frozenset({"batch_size", "learning_rate_multiplier", "n_epochs"})

    batch_size: int | Auto | None = None
    learning_rate_multiplier: float | Auto | None = None
    n_epochs: int | Auto | None = None


@dataclass(frozen=True)
class DpoHyperparameters(Hyperparameters):
    _omit_if_none = Hyperparameters._omit_if_none | {"beta"}

    beta: float | Auto | None = None


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


@dataclass(frozen=True)
class Lora(_Object):
    """TuneForge extension: the adapter and quantization settings of a job."""

    rank: int
    alpha: float
    dropout: float
    target_modules: str | list[str]
    quantization: str


TuningType = Literal["auto", "lora", "qlora", "full", "spectrum"]


class EarlyStoppingParams(TypedDict, total=False):
    patience: int  # evaluations without improvement before stopping, 1 to 100 (default 3)
    min_delta: float  # the least decrease of the validation loss that counts (default 0)


class TrainingParams(TypedDict, total=False):
    """TuneForge extension `training` of `jobs.create`: every key optional, defaults as a job
    without it gets (see the README's "Training practice")."""

    tuning: TuningType
    spectrum_fraction: float
    max_seq_length: int
    warmup_ratio: float | Auto
    lr_scheduler: Literal["auto", "linear", "cosine", "constant"]
    weight_decay: float | Auto
    gradient_accumulation_steps: int | Auto
    optimizer: Literal["auto", "adamw", "paged_adamw_8bit"]
    gradient_checkpointing: Literal["auto", "on", "off"]
    validation_split: float
    eval_interval: int | Auto
    early_stopping: EarlyStoppingParams


@dataclass(frozen=True)
class EarlyStopping(_Object):
    patience: int
    min_delta: float


@dataclass(frozen=True)
class Training(_Object):
    """TuneForge extension: a job's training controls, as requested ("auto" kept) until the
    worker resolved them, then as the job trains (with `tuning_reason` and
    `effective_batch_size`)."""

    _omit_if_none = frozenset({"tuning_reason", "spectrum_fraction", "effective_batch_size",
                               "validation_split", "early_stopping"})

    tuning: str
    max_seq_length: int
    warmup_ratio: float | Auto
    lr_scheduler: str
    weight_decay: float | Auto
    gradient_accumulation_steps: int | Auto
    optimizer: str
    gradient_checkpointing: str
    eval_interval: int | Auto
    tuning_reason: str | None = None
    spectrum_fraction: float | None = None
    effective_batch_size: int | None = None
    validation_split: float | None = None
    early_stopping: EarlyStopping | None = None


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
class Mlflow(_Object):
    """TuneForge extension: the MLflow experiment a job logs its run to."""

    _omit_if_none = frozenset({"tracking_uri", "run_name", "tags"})

    experiment: str
    tracking_uri: str | None = None
    run_name: str | None = None
    tags: dict[str, str] | None = None


@dataclass(frozen=True)
class Integration(_Object):
    _omit_if_none = frozenset({"wandb", "mlflow"})

    type: Literal["wandb", "mlflow"]
    wandb: Wandb | None = None
    mlflow: Mlflow | None = None


@dataclass(frozen=True)
class TrackingRun(_Object):
    """TuneForge extension: the W&B / MLflow run the worker started for an integration."""

    type: Literal["wandb", "mlflow"]
    run_id: str
    url: str | None = None


@dataclass(frozen=True)
class FineTuningJob(_Object):
    _omit_if_none = frozenset({"suffix", "training", "base_model", "parent_model",
                               "tracking_runs"})

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
    training: Training | None = None
    # Set when the job continues a fine-tuned model: its base model and that parent.
    base_model: str | None = None
    parent_model: str | None = None
    # The W&B / MLflow runs of `integrations`, once the worker started them.
    tracking_runs: list[TrackingRun] | None = None
    object: Literal["fine_tuning.job"] = "fine_tuning.job"

    @property
    def done(self) -> bool:
        """Whether the job has ended (succeeded, failed or cancelled)."""
        return self.status in TERMINAL_STATUSES


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


class CheckpointMetrics(_Object):
    """A checkpoint's metrics by name, as the server reported them: OpenAI's `step`,
    `train_loss`, `train_mean_token_accuracy`, `valid_loss`, ... A metric that was not
    reported reads as None, and `to_dict()` leaves it out, as the REST API does."""

    def __init__(self, **metrics: float | None) -> None:
        object.__setattr__(self, "_metrics",
                           {name: value for name, value in metrics.items() if value is not None})

    def __getattr__(self, name: str) -> float | None:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._metrics.get(name)  # type: ignore[no-any-return]

    def __setattr__(self, name: str, value: Any) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CheckpointMetrics) and self._metrics == other._metrics

    def __hash__(self) -> int:
        return hash(frozenset(self._metrics.items()))

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={value!r}" for name, value in self._metrics.items())
        return f"CheckpointMetrics({shown})"

    def to_dict(self) -> dict[str, Any]:
        return dict(self._metrics)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        return cls(**d)


@dataclass(frozen=True)
class FineTuningJobCheckpoint(_Object):
    id: str
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: CheckpointMetrics
    step_number: int
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"


@dataclass(frozen=True)
class Model(_Object):
    _omit_if_none = frozenset({
        "base_model", "tuning", "parent", "architecture", "family", "max_position_embeddings",
        "context_length", "chat_template", "methods", "tunings", "supports_tools",
        "stop_tokens"})

    id: str
    created: int
    owned_by: str
    # TuneForge extensions on fine-tuned models and checkpoints: the base model, how it was
    # tuned, and the model it was trained from (None: from the base model).
    base_model: str | None = None
    tuning: str | None = None
    parent: str | None = None
    # TuneForge extensions on base models: what the model supports (None: not known).
    architecture: str | None = None  # e.g. "LlamaForCausalLM"
    family: str | None = None  # config.json model_type, e.g. "llama", "qwen2"
    max_position_embeddings: int | None = None  # the longest context the model was built for
    # The longest context a request can use (at most the inference servers' max_model_len).
    context_length: int | None = None
    chat_template: bool | None = None
    methods: list[str] | None = None  # "supervised", "dpo"
    tunings: list[str] | None = None  # "lora", "qlora", "full", "spectrum"
    supports_tools: bool | None = None  # the chat template renders tools and tool calls
    stop_tokens: list[str] | None = None  # what generation stops on
    object: Literal["model"] = "model"


@dataclass(frozen=True)
class ModelDeleted(_Object):
    id: str
    deleted: bool
    object: Literal["model"] = "model"


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

    @classmethod
    def of(cls, d: dict[str, Any], item: Callable[[dict[str, Any]], T]) -> Page[T]:
        """The page from the REST API's JSON, each item read by `item`."""
        return cls(data=[item(x) for x in d.get("data") or []],
                   has_more=bool(d.get("has_more")), first_id=d.get("first_id"),
                   last_id=d.get("last_id"))


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
