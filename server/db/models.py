"""Tables. Every listable table has an integer `seq` primary key (insertion order, used as the
pagination cursor) and a public string `id`."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from tuneforge.domain import now

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
SeqType = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


def seq_column() -> Mapped[int]:
    return mapped_column(SeqType, primary_key=True, autoincrement=True)


class Organization(Base):
    __tablename__ = "organizations"

    seq: Mapped[int] = seq_column()
    id: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)


class ApiKey(Base):
    __tablename__ = "api_keys"

    seq: Mapped[int] = seq_column()
    id: Mapped[str] = mapped_column(String(64), unique=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    name: Mapped[str] = mapped_column(String(256), default="")
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger)


class File(Base):
    __tablename__ = "files"

    seq: Mapped[int] = seq_column()
    id: Mapped[str] = mapped_column(String(64), unique=True)
    organization_id: Mapped[str] = mapped_column(String(64), index=True)
    filename: Mapped[str] = mapped_column(String(1024))
    purpose: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), default="processed")
    status_details: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)
    expires_at: Mapped[int | None] = mapped_column(BigInteger)


class Upload(Base):
    __tablename__ = "uploads"

    seq: Mapped[int] = seq_column()
    id: Mapped[str] = mapped_column(String(64), unique=True)
    organization_id: Mapped[str] = mapped_column(String(64), index=True)
    filename: Mapped[str] = mapped_column(String(1024))
    purpose: Mapped[str] = mapped_column(String(32))
    mime_type: Mapped[str] = mapped_column(String(256))
    bytes: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)
    expires_at: Mapped[int] = mapped_column(BigInteger)
    file_id: Mapped[str | None] = mapped_column(String(64))


class UploadPart(Base):
    __tablename__ = "upload_parts"

    seq: Mapped[int] = seq_column()
    id: Mapped[str] = mapped_column(String(64), unique=True)
    upload_id: Mapped[str] = mapped_column(ForeignKey("uploads.id"), index=True)
    bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)


class Job(Base):
    __tablename__ = "jobs"

    seq: Mapped[int] = seq_column()
    id: Mapped[str] = mapped_column(String(64), unique=True)
    organization_id: Mapped[str] = mapped_column(String(64), index=True)
    model: Mapped[str] = mapped_column(String(256))
    method: Mapped[str] = mapped_column(String(16))
    training_file: Mapped[str] = mapped_column(String(64))
    validation_file: Mapped[str | None] = mapped_column(String(64))
    suffix: Mapped[str | None] = mapped_column(String(64))
    seed: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(32), index=True)
    # As requested ("auto" kept); `resolved_hyperparameters` is filled in by the worker.
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(JSON)
    resolved_hyperparameters: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    lora: Mapped[dict[str, Any]] = mapped_column(JSON)
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)
    integrations: Mapped[list[Any] | None] = mapped_column(JSON)
    # The tracker runs the worker started for `integrations` (`tuneforge.domain.TrackingRun`).
    tracking_runs: Mapped[list[Any] | None] = mapped_column(JSON)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    fine_tuned_model: Mapped[str | None] = mapped_column(String(512))
    result_files: Mapped[list[Any]] = mapped_column(JSON, default=list)
    trained_tokens: Mapped[int | None] = mapped_column(BigInteger)
    estimated_finish: Mapped[int | None] = mapped_column(BigInteger)
    finished_at: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)
    updated_at: Mapped[int] = mapped_column(BigInteger, default=now, onupdate=now)
    # Each enqueue (create, resume, re-enqueue after a lost queue) uses this arq job id.
    queue_job_id: Mapped[str | None] = mapped_column(String(128))
    # The worker holding the job, and until when (renewed by its heartbeat).
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[int | None] = mapped_column(BigInteger)
    # The API request that created the job and its trace (W3C `traceparent`, when tracing is
    # on): the worker's and the serving plane's log lines and spans for the job carry them.
    request_id: Mapped[str | None] = mapped_column(String(128))
    traceparent: Mapped[str | None] = mapped_column(String(128))
    # TuneForge's `training` extension as requested, and as the worker resolved it.
    training: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    resolved_training: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # The served base model of the result (== model unless the job starts from an ft: model)
    # and, when it does, that parent (`tuneforge.domain.ParentModel`).
    base_model: Mapped[str | None] = mapped_column(String(256))
    parent: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class JobEvent(Base):
    __tablename__ = "job_events"
    __table_args__ = (Index("ix_job_events_job_seq", "job_id", "seq"),)

    seq: Mapped[int] = seq_column()
    id: Mapped[str] = mapped_column(String(64), unique=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)
    level: Mapped[str] = mapped_column(String(8))
    type: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class JobCheckpoint(Base):
    __tablename__ = "job_checkpoints"
    __table_args__ = (Index("ix_job_checkpoints_job_seq", "job_id", "seq"),)

    seq: Mapped[int] = seq_column()
    id: Mapped[str] = mapped_column(String(64), unique=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    step_number: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    fine_tuned_model_checkpoint: Mapped[str] = mapped_column(String(600))
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)


class FineTunedModel(Base):
    """A servable fine-tuned model; `deleted_at` set by DELETE /v1/models/{id}."""

    __tablename__ = "fine_tuned_models"

    seq: Mapped[int] = seq_column()
    id: Mapped[str] = mapped_column(String(512), unique=True)
    organization_id: Mapped[str] = mapped_column(String(64), index=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"))
    base_model: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)
    deleted_at: Mapped[int | None] = mapped_column(BigInteger)
    # When a deleted model's weights left S3 (`server.service.model_storage`); NULL: still owed.
    storage_freed_at: Mapped[int | None] = mapped_column(BigInteger)
    # The model this one was trained from (an ft: model or checkpoint), None from a base.
    parent_model: Mapped[str | None] = mapped_column(String(600))
    # `tuneforge.domain.TuningType`: lora/qlora models are adapters, full/spectrum full weights.
    tuning: Mapped[str] = mapped_column(String(16), default="lora", server_default="lora")


class ServingRequest(Base):
    """A worker's request that the serving plane load a just-trained model on every replica
    of its base model. The worker writes it (under its lease) before the job succeeds; the API
    process's serving plane, the only writer of vLLM's adapter sets, loads the adapter and
    answers by setting `ready_at` (or `error`). Works across machines: only the DB is shared."""

    __tablename__ = "serving_requests"

    seq: Mapped[int] = seq_column()
    id: Mapped[str] = mapped_column(String(64), unique=True)
    model: Mapped[str] = mapped_column(String(512), index=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    base_model: Mapped[str] = mapped_column(String(256))
    adapter_prefix: Mapped[str] = mapped_column(String(1024))  # or full weights, see `kind`
    # "adapter": a LoRA adapter of base_model; "full": full weights served by their own replica.
    kind: Mapped[str] = mapped_column(String(16), default="adapter", server_default="adapter")
    # Wall-clock seconds (float): the plane reports how long loading took from the request.
    requested_at: Mapped[float] = mapped_column(Float)
    ready_at: Mapped[float | None] = mapped_column(Float)
    replicas: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)


class WebhookEndpoint(Base):
    """An organization's webhook receiver (`/v1/webhook_endpoints`). The secret signs every
    delivery (Standard Webhooks), so it is kept as given out; `deleted_at` ends deliveries."""

    __tablename__ = "webhook_endpoints"

    seq: Mapped[int] = seq_column()
    id: Mapped[str] = mapped_column(String(64), unique=True)
    organization_id: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(256), default="")
    url: Mapped[str] = mapped_column(String(2048))
    secret: Mapped[str] = mapped_column(String(128))
    event_types: Mapped[list[Any]] = mapped_column(JSON)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)
    updated_at: Mapped[int] = mapped_column(BigInteger, default=now)
    deleted_at: Mapped[int | None] = mapped_column(BigInteger)


class WebhookDelivery(Base):
    """The outbox: one event for one endpoint, written in the transaction of the job's
    transition and sent by an API process (`server/service/webhook_delivery.py`) until a 2xx
    answer or the retry period's end. `lease_owner`/`lease_expires_at` keep two API processes
    from sending it at once; wall-clock seconds as floats, for sub-second backoff."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
                      Index("ix_webhook_deliveries_endpoint_seq", "endpoint_id", "seq"))

    seq: Mapped[int] = seq_column()
    id: Mapped[str] = mapped_column(String(64), unique=True)
    organization_id: Mapped[str] = mapped_column(String(64))
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("webhook_endpoints.id"))
    event_id: Mapped[str] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(64))
    # The event's JSON exactly as sent (the signature covers these bytes).
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[float] = mapped_column(Float)
    last_attempt_at: Mapped[float | None] = mapped_column(Float)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
    delivered_at: Mapped[float | None] = mapped_column(Float)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[float | None] = mapped_column(Float)
