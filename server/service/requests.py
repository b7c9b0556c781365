"""Request bodies, validated before anything is stored. Field errors name their `param`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from server.service.objects import WandbObject
from tuneforge.domain import (
    UPLOADABLE_PURPOSES,
    DpoHyperparameters,
    Hyperparameters,
    LoraConfig,
    TrainingConfig,
)

SUFFIX_PATTERN = r"^[A-Za-z0-9._-]*$"
# No control characters (C0, DEL, C1) in a filename; the multipart upload refuses them too.
FILENAME_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*$"

# The JSON Schema below (served in the OpenAPI document) also states the rules the service
# checks across fields, so that a request the document calls valid is one the server takes.


def _method_schema(schema: dict[str, Any]) -> None:
    # `reinforcement` is accepted by the model (OpenAI's enum) but refused by the service.
    schema["properties"]["type"]["enum"] = ["supervised", "dpo"]
    schema["oneOf"] = [
        {"properties": {"type": {"const": "supervised"}, "dpo": {"type": "null"}}},
        {"properties": {"type": {"const": "dpo"}, "supervised": {"type": "null"}}},
    ]


def _training_with(**properties: Any) -> dict[str, Any]:
    """`training` is an object that has each of `properties` matching its schema."""
    return {"type": "object", "required": sorted(properties), "properties": properties}


_GIVEN_FILE = {"type": "string", "minLength": 1}


def _job_create_schema(schema: dict[str, Any]) -> None:
    # The deprecated top-level `hyperparameters` and `method` are not both given.
    schema["not"] = {"required": ["method", "hyperparameters"], "properties": {
        "method": {"type": "object"}, "hyperparameters": {"type": "object"}}}
    schema["allOf"] = [
        # training.validation_split holds out part of the training file: no validation_file.
        {"not": {"required": ["training", "validation_file"], "properties": {
            "validation_file": _GIVEN_FILE,
            "training": _training_with(validation_split={"type": "number"})}}},
        # training.early_stopping needs validation data.
        {"if": {"required": ["training"], "properties": {
            "training": _training_with(early_stopping={"type": "object"})}},
         "then": {"anyOf": [
             {"required": ["validation_file"], "properties": {"validation_file": _GIVEN_FILE}},
             {"properties": {"training": _training_with(validation_split={"type": "number"})}},
         ]}},
        # training.spectrum_fraction only with tuning "spectrum".
        {"if": {"required": ["training"], "properties": {
            "training": _training_with(spectrum_fraction={"type": "number"})}},
         "then": {"properties": {"training": _training_with(tuning={"const": "spectrum"})}}},
        # `lora` configures an adapter: not with the full-weight tunings.
        {"not": {"required": ["lora", "training"], "properties": {
            "lora": {"type": "object"},
            "training": _training_with(tuning={"enum": ["full", "spectrum"]})}}},
        # QLoRA trains on a 4-bit base.
        {"not": {"required": ["lora", "training"], "properties": {
            "lora": {"type": "object", "required": ["quantization"],
                     "properties": {"quantization": {"const": "none"}}},
            "training": _training_with(tuning={"const": "qlora"})}}},
    ]


def _upload_create_schema(schema: dict[str, Any]) -> None:
    # A fine-tuning file must be JSONL.
    schema["if"] = {"properties": {"purpose": {"const": "fine-tune"}}, "required": ["purpose"]}
    schema["then"] = {"properties": {"filename": {"pattern": r"\.[jJ][sS][oO][nN][lL]$"}}}


def _integration_schema(schema: dict[str, Any]) -> None:
    # Each type carries its own settings object and not the other's.
    schema["properties"]["type"] = {"type": "string", "enum": ["wandb", "mlflow"]}
    schema["oneOf"] = [
        {"required": ["wandb"], "properties": {"type": {"const": "wandb"},
                                               "wandb": {"type": "object"},
                                               "mlflow": {"type": "null"}}},
        {"required": ["mlflow"], "properties": {"type": {"const": "mlflow"},
                                                "mlflow": {"type": "object"},
                                                "wandb": {"type": "null"}}},
    ]


# MLflow tag keys are also file names on its side: no '/', no leading '.'.
MLFLOW_TAG_KEY_PATTERN = r"^[A-Za-z0-9_-][A-Za-z0-9_. -]*$"


def _tag_keys_schema(schema: dict[str, Any]) -> None:
    # pydantic states a key pattern as patternProperties, which leaves other keys allowed.
    for pattern, values in schema.pop("patternProperties", {}).items():
        schema["propertyNames"] = {**schema.get("propertyNames", {}), "pattern": pattern}
        schema["additionalProperties"] = values


class MlflowRequest(BaseModel):
    """TuneForge's `mlflow` integration: the experiment on the operator's tracking server
    (`tracking.mlflow_tracking_uri`), or on `tracking_uri` where the server allows one."""

    model_config = ConfigDict(extra="forbid")

    experiment: Annotated[str, Field(min_length=1, max_length=500)]
    tracking_uri: Annotated[str, Field(max_length=2048, pattern=r"^https?://[^\s/?#]+")] \
        | None = None
    run_name: Annotated[str, Field(min_length=1, max_length=250)] | None = None
    tags: Annotated[dict[
        Annotated[str, Field(min_length=1, max_length=250, pattern=MLFLOW_TAG_KEY_PATTERN)],
        Annotated[str, Field(max_length=8000)]],
        Field(max_length=50, json_schema_extra=_tag_keys_schema)] | None = None


class IntegrationRequest(BaseModel):
    """One of `integrations`: OpenAI's `wandb`, or TuneForge's `mlflow`. The service refuses
    one that cannot be honoured (no W&B key, no MLflow server) with a 400 naming it."""

    model_config = ConfigDict(json_schema_extra=_integration_schema)

    type: str
    wandb: WandbObject | None = None
    mlflow: MlflowRequest | None = None


class SupervisedMethodRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)


class DpoMethodRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hyperparameters: DpoHyperparameters = Field(default_factory=DpoHyperparameters)


class MethodRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_method_schema)
    type: Literal["supervised", "dpo", "reinforcement"]
    supervised: SupervisedMethodRequest | None = None
    dpo: DpoMethodRequest | None = None
    reinforcement: dict[str, object] | None = None


class JobCreateRequest(BaseModel):
    """`POST /v1/fine_tuning/jobs`: OpenAI's parameters plus TuneForge's `lora` and `training`
    extensions. `model` is a base model or the caller's own `ft:` model or checkpoint."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_job_create_schema)

    model: Annotated[str, Field(min_length=1, max_length=256, description=(
        "A base model, or one of your own fine-tuned models (`ft:…`) or checkpoints "
        "(`ft:…:ckpt-step-N`) to continue training (its LoRA adapter, on its base model)."))]
    training_file: Annotated[str, Field(min_length=1)]
    validation_file: str | None = None
    suffix: Annotated[str, Field(max_length=64, pattern=SUFFIX_PATTERN)] | None = None
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = None
    metadata: Annotated[dict[str, Annotated[str, Field(max_length=512)]], Field(
        json_schema_extra={"maxProperties": 16, "propertyNames": {"maxLength": 64}},
    )] | None = None
    integrations: Annotated[list[IntegrationRequest], Field(max_length=5)] | None = None
    method: MethodRequest | None = None
    hyperparameters: Hyperparameters | None = None  # legacy form of method.supervised
    lora: LoraConfig | None = None
    training: TrainingConfig | None = None

    @field_validator("metadata")
    @classmethod
    def _metadata_limits(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is not None:
            if len(value) > 16:
                raise ValueError("metadata may hold at most 16 key-value pairs")
            if any(len(k) > 64 for k in value):
                raise ValueError("metadata keys may be at most 64 characters")
        return value


class UploadCreateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_upload_create_schema)

    # The largest size is the server's `max_upload_bytes` (413 above it).
    bytes: Annotated[int, Field(json_schema_extra={"minimum": 1})]
    filename: Annotated[str, Field(min_length=1, max_length=1024, pattern=FILENAME_PATTERN)]
    mime_type: Annotated[str, Field(min_length=1, max_length=256)]
    purpose: Annotated[str, Field(json_schema_extra={"enum": sorted(UPLOADABLE_PURPOSES)})]
    expires_after: ExpiresAfter | None = None


class ExpiresAfter(BaseModel):
    anchor: Literal["created_at"]
    seconds: Annotated[int, Field(json_schema_extra={"minimum": 3600, "maximum": 2592000})]


class UploadCompleteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    part_ids: Annotated[list[str], Field(json_schema_extra={"minItems": 1,
                                                            "uniqueItems": True})]
    md5: str | None = None


UploadCreateRequest.model_rebuild()
