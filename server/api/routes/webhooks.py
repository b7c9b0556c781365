"""`/v1/webhook_endpoints`: OpenAI's webhook endpoints (the `openai` SDK's `client.webhooks`),
per organization, plus the delivery log (`…/deliveries`, TuneForge extension)."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, delete, get, post

from server.api.error_docs import errors
from server.api.openapi_bodies import limit_param
from server.auth import Principal
from server.service import Services
from server.service.objects import ListPage
from server.service.webhook_objects import (
    WebhookDeliveryObject,
    WebhookEndpointCreateRequest,
    WebhookEndpointDeleted,
    WebhookEndpointObject,
    WebhookEndpointUpdateRequest,
    WebhookEndpointWithSecret,
)


class WebhookEndpointsController(Controller):
    path = "/v1/webhook_endpoints"
    tags = ["webhooks"]

    @post("/", status_code=200, responses=errors())
    async def create_webhook_endpoint(
        self, services: Services, principal: Principal, data: WebhookEndpointCreateRequest,
    ) -> WebhookEndpointWithSecret:
        """The answer carries the endpoint's `signing_secret` (`whsec_…`); no later one does.
        A URL on a loopback, private, link-local or multicast address is a 400 unless the
        server allows private targets."""
        return await services.webhooks.create(principal, data)

    @get("/", responses=errors())
    async def list_webhook_endpoints(
        self, services: Services, principal: Principal, after: str | None = None,
        limit: Annotated[int, limit_param(100)] = 20,
    ) -> ListPage[WebhookEndpointObject]:
        return await services.webhooks.list(principal, after=after, limit=limit)

    @get("/{webhook_endpoint_id:str}", responses=errors(404))
    async def retrieve_webhook_endpoint(self, services: Services, principal: Principal,
                                        webhook_endpoint_id: str) -> WebhookEndpointObject:
        return await services.webhooks.get(principal, webhook_endpoint_id)

    @post("/{webhook_endpoint_id:str}", status_code=200, responses=errors(404))
    async def update_webhook_endpoint(
        self, services: Services, principal: Principal, webhook_endpoint_id: str,
        data: WebhookEndpointUpdateRequest,
    ) -> WebhookEndpointObject:
        return await services.webhooks.update(principal, webhook_endpoint_id, data)

    @post("/{webhook_endpoint_id:str}/rotate_secret", status_code=200, responses=errors(404))
    async def rotate_webhook_endpoint_secret(
        self, services: Services, principal: Principal, webhook_endpoint_id: str,
    ) -> WebhookEndpointWithSecret:
        return await services.webhooks.rotate_secret(principal, webhook_endpoint_id)

    @delete("/{webhook_endpoint_id:str}", status_code=200, responses=errors(404))
    async def delete_webhook_endpoint(self, services: Services, principal: Principal,
                                      webhook_endpoint_id: str) -> WebhookEndpointDeleted:
        return await services.webhooks.delete(principal, webhook_endpoint_id)

    @get("/{webhook_endpoint_id:str}/deliveries", responses=errors(404))
    async def list_webhook_deliveries(
        self, services: Services, principal: Principal, webhook_endpoint_id: str,
        after: str | None = None, limit: Annotated[int, limit_param(100)] = 20,
    ) -> ListPage[WebhookDeliveryObject]:
        """The endpoint's delivery log, newest first (TuneForge extension): each event sent
        or to be sent, its attempts, the last answer's status code or error, and when the
        next attempt is due."""
        return await services.webhooks.deliveries(principal, webhook_endpoint_id, after=after,
                                                  limit=limit)
