"""`tuneforge.v1.Webhooks` over the service layer (`server/service/webhooks.py`)."""

from __future__ import annotations

from server.grpc.convert import body, reply
from server.grpc.pb.tuneforge.v1 import webhooks_pb2 as pb
from server.grpc.pb.tuneforge.v1 import webhooks_pb2_grpc as pb_grpc
from server.grpc.servicers import Context, _Base, unary
from server.service.webhook_objects import (
    WebhookEndpointCreateRequest,
    WebhookEndpointUpdateRequest,
)


class WebhooksServicer(_Base, pb_grpc.WebhooksServicer):
    @unary
    async def Create(self, request: pb.CreateWebhookEndpointRequest,
                     context: Context) -> pb.WebhookEndpoint:
        principal = await self.principal(context)
        create = WebhookEndpointCreateRequest.model_validate(body(request))
        return reply(await self.services.webhooks.create(principal, create), pb.WebhookEndpoint)

    @unary
    async def List(self, request: pb.ListWebhookEndpointsRequest,
                   context: Context) -> pb.ListWebhookEndpointsResponse:
        principal = await self.principal(context)
        return reply(await self.services.webhooks.list(principal, **body(request)),
                     pb.ListWebhookEndpointsResponse)

    @unary
    async def Get(self, request: pb.GetWebhookEndpointRequest,
                  context: Context) -> pb.WebhookEndpoint:
        principal = await self.principal(context)
        return reply(await self.services.webhooks.get(principal, request.webhook_endpoint_id),
                     pb.WebhookEndpoint)

    @unary
    async def Update(self, request: pb.UpdateWebhookEndpointRequest,
                     context: Context) -> pb.WebhookEndpoint:
        principal = await self.principal(context)
        fields = body(request)
        endpoint_id = fields.pop("webhook_endpoint_id", "")
        update = WebhookEndpointUpdateRequest.model_validate(fields)
        return reply(await self.services.webhooks.update(principal, endpoint_id, update),
                     pb.WebhookEndpoint)

    @unary
    async def RotateSecret(self, request: pb.GetWebhookEndpointRequest,
                           context: Context) -> pb.WebhookEndpoint:
        principal = await self.principal(context)
        return reply(await self.services.webhooks.rotate_secret(
            principal, request.webhook_endpoint_id), pb.WebhookEndpoint)

    @unary
    async def Delete(self, request: pb.GetWebhookEndpointRequest,
                     context: Context) -> pb.WebhookEndpointDeleted:
        principal = await self.principal(context)
        return reply(await self.services.webhooks.delete(principal, request.webhook_endpoint_id),
                     pb.WebhookEndpointDeleted)

    @unary
    async def ListDeliveries(self, request: pb.ListWebhookDeliveriesRequest,
                             context: Context) -> pb.ListWebhookDeliveriesResponse:
        principal = await self.principal(context)
        query = body(request)
        endpoint_id = query.pop("webhook_endpoint_id", "")
        return reply(await self.services.webhooks.deliveries(principal, endpoint_id, **query),
                     pb.ListWebhookDeliveriesResponse)
