"""Request bodies, validated before anything is stored. Field errors name their `param`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from server.service.objects import IntegrationObject
from tuneforge.domain import DpoHyperparameters, Hyperparameters, LoraConfig

SUFFIX_PATTERN = r"^[A-Za-z0-9._-]*$"


class SupervisedMethodRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)


class DpoMethodRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hyperparameters: DpoHyperparameters = Field(default_factory=DpoHyperparameters)


class MethodRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["supervised", "dpo", "reinforcement"]
    supervised: SupervisedMethodRequest | None = None
    dpo: DpoMethodRequest | None = None
    reinforcement: dict[str, object] | None = None


class JobCreateRequest(BaseModel):
    """`POST /v1/fine_tuning/jobs`: OpenAI's parameters plus TuneForge's `lora` extension."""

    model_config = ConfigDict(extra="forbid")

    model: Annotated[str, Field(min_length=1, max_length=256)]
    training_file: Annotated[str, Field(min_length=1)]
    validation_file: str | None = None
    suffix: Annotated[str, Field(max_length=64, pattern=SUFFIX_PATTERN)] | None = None
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = None
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = None
    integrations: list[IntegrationObject] | None = None
    method: MethodRequest | None = None
    hyperparameters: Hyperparameters | None = None  # legacy form of method.supervised
    lora: LoraConfig | None = None

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
    model_config = ConfigDict(extra="forbid")

    bytes: int
    filename: Annotated[str, Field(min_length=1, max_length=1024)]
    mime_type: Annotated[str, Field(min_length=1, max_length=256)]
    purpose: str
    expires_after: ExpiresAfter | None = None


class ExpiresAfter(BaseModel):
    anchor: Literal["created_at"]
    seconds: int


class UploadCompleteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    part_ids: list[str]
    md5: str | None = None


UploadCreateRequest.model_rebuild()
