"""The webhook endpoint objects (OpenAI's `WebhookEndpoint`, as the `openai` SDK's
`client.webhooks` reads them), TuneForge's delivery log entries, and the request bodies."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from server.db import models as db
from server.service.objects import ApiObject
from server.webhook_outbox import ALL_EVENT_TYPES
from server.webhook_targets import URL_PATTERN

# `server.webhook_outbox.ALL_EVENT_TYPES`, spelled out for the schema.
EventType = Literal["fine_tuning.job.succeeded", "fine_tuning.job.failed",
                    "fine_tuning.job.cancelled", "fine_tuning.job.paused"]

Url = Annotated[str, Field(min_length=1, max_length=2048, pattern=URL_PATTERN,
                           description="An http(s) URL on a public address.")]
Name = Annotated[str, Field(max_length=256)]
EventTypes = Annotated[list[EventType], Field(
    min_length=1, max_length=len(ALL_EVENT_TYPES),
    description="The events sent to the endpoint (default: all of them).")]


class WebhookEndpointCreateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Url
    name: Name = ""
    event_types: EventTypes = Field(default_factory=lambda: list(ALL_EVENT_TYPES))


class WebhookEndpointUpdateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Url | None = None
    name: Name | None = None
    event_types: EventTypes | None = None


class WebhookEndpointObject(ApiObject):
    id: str
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    created_at: int
    updated_at: int
    name: str
    url: str
    event_types: list[str]
    signing_secret_hint: str


class WebhookEndpointWithSecret(WebhookEndpointObject):
    """Only when created or its secret rotated: the `whsec_…` secret deliveries are signed
    with (Standard Webhooks; `client.webhooks.unwrap(body, headers, secret=…)`)."""

    signing_secret: str


class WebhookEndpointDeleted(ApiObject):
    id: str
    object: Literal["webhook_endpoint.deleted"] = "webhook_endpoint.deleted"
    deleted: bool


class WebhookDeliveryObject(ApiObject):
    """One event for one endpoint and how sending it went (TuneForge extension)."""

    omit_if_none = frozenset({"last_status_code", "last_error", "last_attempt_at",
                              "next_attempt_at", "delivered_at"})

    id: str
    object: Literal["webhook_endpoint.delivery"] = "webhook_endpoint.delivery"
    webhook_endpoint_id: str
    event_id: str
    event_type: str
    # The event exactly as sent (its JSON body, parsed).
    event: dict[str, Any]
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    created_at: int
    last_attempt_at: int | None = None
    last_status_code: int | None = None
    last_error: str | None = None
    next_attempt_at: int | None = None
    delivered_at: int | None = None


def secret_hint(secret: str) -> str:
    return f"whsec_...{secret[-4:]}"


def endpoint_object(row: db.WebhookEndpoint) -> WebhookEndpointObject:
    return WebhookEndpointObject(
        id=row.id, created_at=row.created_at, updated_at=row.updated_at, name=row.name,
        url=row.url, event_types=list(row.event_types), signing_secret_hint=secret_hint(row.secret))


def endpoint_with_secret(row: db.WebhookEndpoint) -> WebhookEndpointWithSecret:
    return WebhookEndpointWithSecret(**endpoint_object(row).model_dump(),
                                     signing_secret=row.secret)


def _seconds(value: float | None) -> int | None:
    return None if value is None else int(value)


def delivery_object(row: db.WebhookDelivery) -> WebhookDeliveryObject:
    return WebhookDeliveryObject(
        id=row.id, webhook_endpoint_id=row.endpoint_id, event_id=row.event_id,
        event_type=row.event_type, event=json.loads(row.body), status=row.status,  # type: ignore[arg-type]
        attempts=row.attempts, created_at=int(row.created_at),
        last_attempt_at=_seconds(row.last_attempt_at), last_status_code=row.last_status_code,
        last_error=row.last_error,
        next_attempt_at=_seconds(row.next_attempt_at) if row.status == "pending" else None,
        delivered_at=_seconds(row.delivered_at))
