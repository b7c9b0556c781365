"""Webhook endpoints and their delivery log (`client.webhooks`), over REST or gRPC.

Endpoints are OpenAI's (`/v1/webhook_endpoints`); `deliveries` is TuneForge's log of what was
sent to one. Verify a delivery in the receiver with OpenAI's SDK,
`openai.OpenAI().webhooks.unwrap(body, headers, secret=endpoint.signing_secret)`, or any
Standard Webhooks library.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

from tuneforge_client._convert import page, read, request
from tuneforge_client._pb.tuneforge.v1 import webhooks_pb2 as pb
from tuneforge_client._pb.tuneforge.v1 import webhooks_pb2_grpc as pb_grpc
from tuneforge_client.types import Page, _Object

if TYPE_CHECKING:
    from tuneforge_client._client import AsyncTuneForge, _Portal

EVENT_TYPES = ("fine_tuning.job.succeeded", "fine_tuning.job.failed",
               "fine_tuning.job.cancelled", "fine_tuning.job.paused")


@dataclass(frozen=True)
class WebhookEndpoint(_Object):
    """`signing_secret` is set only by `create` and `rotate_secret`."""

    _omit_if_none = frozenset({"signing_secret"})

    id: str
    created_at: int
    updated_at: int
    name: str
    url: str
    event_types: list[str]
    signing_secret_hint: str
    signing_secret: str | None = None
    object: Literal["webhook_endpoint"] = "webhook_endpoint"


@dataclass(frozen=True)
class WebhookEndpointDeleted(_Object):
    id: str
    deleted: bool
    object: Literal["webhook_endpoint.deleted"] = "webhook_endpoint.deleted"


@dataclass(frozen=True)
class WebhookDelivery(_Object):
    _omit_if_none = frozenset({"last_attempt_at", "last_status_code", "last_error",
                               "next_attempt_at", "delivered_at"})

    id: str
    webhook_endpoint_id: str
    event_id: str
    event_type: str
    event: dict[str, Any]
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    created_at: int
    last_attempt_at: int | None = None
    last_status_code: int | None = None
    last_error: str | None = None
    next_attempt_at: int | None = None
    delivered_at: int | None = None
    object: Literal["webhook_endpoint.delivery"] = "webhook_endpoint.delivery"


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _path(endpoint_id: str, tail: str = "") -> str:
    return f"/webhook_endpoints/{quote(endpoint_id, safe='')}{tail}"


class AsyncWebhooks:
    def __init__(self, client: AsyncTuneForge) -> None:
        self._c = client

    @property
    def _rest(self) -> bool:
        return self._c.transport == "rest"

    def _grpc(self) -> pb_grpc.WebhooksStub:
        return self._c._grpc.stub(pb_grpc.WebhooksStub)

    async def _call(self, method: str, message: Any) -> Any:
        return await self._c._grpc.call(getattr(self._grpc(), method), message)

    async def create(self, url: str, *, name: str | None = None,
                     event_types: list[str] | None = None) -> WebhookEndpoint:
        body = _drop_none({"url": url, "name": name, "event_types": event_types})
        if self._rest:
            return WebhookEndpoint.from_dict(
                await self._c._rest.request("POST", "/webhook_endpoints", json=body))
        return read(await self._call(
            "Create", request(body, pb.CreateWebhookEndpointRequest)), WebhookEndpoint)

    async def list(self, *, after: str | None = None,
                   limit: int | None = None) -> Page[WebhookEndpoint]:
        query = _drop_none({"after": after, "limit": limit})
        if self._rest:
            return Page.of(await self._c._retry(lambda: self._c._rest.request(
                "GET", "/webhook_endpoints", params=query)), WebhookEndpoint.from_dict)
        return page(await self._c._retry(lambda: self._call(
            "List", request(query, pb.ListWebhookEndpointsRequest))), WebhookEndpoint)

    async def get(self, endpoint_id: str) -> WebhookEndpoint:
        if self._rest:
            return WebhookEndpoint.from_dict(await self._c._retry(
                lambda: self._c._rest.request("GET", _path(endpoint_id))))
        return read(await self._c._retry(lambda: self._call(
            "Get", pb.GetWebhookEndpointRequest(webhook_endpoint_id=endpoint_id))),
            WebhookEndpoint)

    async def update(self, endpoint_id: str, *, url: str | None = None,
                     name: str | None = None,
                     event_types: list[str] | None = None) -> WebhookEndpoint:
        body = _drop_none({"url": url, "name": name, "event_types": event_types})
        if self._rest:
            return WebhookEndpoint.from_dict(
                await self._c._rest.request("POST", _path(endpoint_id), json=body))
        return read(await self._call("Update", request(
            {**body, "webhook_endpoint_id": endpoint_id}, pb.UpdateWebhookEndpointRequest)),
            WebhookEndpoint)

    async def rotate_secret(self, endpoint_id: str) -> WebhookEndpoint:
        if self._rest:
            return WebhookEndpoint.from_dict(await self._c._rest.request(
                "POST", _path(endpoint_id, "/rotate_secret")))
        return read(await self._call(
            "RotateSecret", pb.GetWebhookEndpointRequest(webhook_endpoint_id=endpoint_id)),
            WebhookEndpoint)

    async def delete(self, endpoint_id: str) -> WebhookEndpointDeleted:
        if self._rest:
            return WebhookEndpointDeleted.from_dict(
                await self._c._rest.request("DELETE", _path(endpoint_id)))
        return read(await self._call(
            "Delete", pb.GetWebhookEndpointRequest(webhook_endpoint_id=endpoint_id)),
            WebhookEndpointDeleted)

    async def deliveries(self, endpoint_id: str, *, after: str | None = None,
                         limit: int | None = None) -> Page[WebhookDelivery]:
        """The endpoint's delivery log, newest first."""
        query = _drop_none({"after": after, "limit": limit})
        if self._rest:
            return Page.of(await self._c._retry(lambda: self._c._rest.request(
                "GET", _path(endpoint_id, "/deliveries"), params=query)),
                WebhookDelivery.from_dict)
        return page(await self._c._retry(lambda: self._call("ListDeliveries", request(
            {**query, "webhook_endpoint_id": endpoint_id}, pb.ListWebhookDeliveriesRequest))),
            WebhookDelivery)


class Webhooks:
    """The blocking flavour of `AsyncWebhooks`."""

    def __init__(self, webhooks: AsyncWebhooks, portal: _Portal) -> None:
        self._a, self._p = webhooks, portal

    def create(self, url: str, *, name: str | None = None,
               event_types: list[str] | None = None) -> WebhookEndpoint:
        return self._p.run(self._a.create(url, name=name, event_types=event_types))

    def list(self, *, after: str | None = None,
             limit: int | None = None) -> Page[WebhookEndpoint]:
        return self._p.run(self._a.list(after=after, limit=limit))

    def get(self, endpoint_id: str) -> WebhookEndpoint:
        return self._p.run(self._a.get(endpoint_id))

    def update(self, endpoint_id: str, *, url: str | None = None, name: str | None = None,
               event_types: list[str] | None = None) -> WebhookEndpoint:
        return self._p.run(self._a.update(endpoint_id, url=url, name=name,
                                          event_types=event_types))

    def rotate_secret(self, endpoint_id: str) -> WebhookEndpoint:
        return self._p.run(self._a.rotate_secret(endpoint_id))

    def delete(self, endpoint_id: str) -> WebhookEndpointDeleted:
        return self._p.run(self._a.delete(endpoint_id))

    def deliveries(self, endpoint_id: str, *, after: str | None = None,
                   limit: int | None = None) -> Page[WebhookDelivery]:
        return self._p.run(self._a.deliveries(endpoint_id, after=after, limit=limit))
