"""Webhook endpoints (OpenAI's `/v1/webhook_endpoints`, per organization) and their delivery
log (TuneForge extension). Deliveries are written by the job transitions
(`server/webhook_outbox.py`) and sent by `server/service/webhook_delivery.py`."""

from __future__ import annotations

import base64
import secrets

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.auth import Principal
from server.db.models import WebhookDelivery, WebhookEndpoint
from server.service.context import Context
from server.service.objects import ListPage, page
from server.service.pagination import check_limit, fetch_page, scoped
from server.service.webhook_objects import (
    WebhookDeliveryObject,
    WebhookEndpointCreateRequest,
    WebhookEndpointDeleted,
    WebhookEndpointObject,
    WebhookEndpointUpdateRequest,
    WebhookEndpointWithSecret,
    delivery_object,
    endpoint_object,
    endpoint_with_secret,
)
from server.webhook_targets import check_target
from tuneforge.domain import new_id, now
from tuneforge.errors import not_found


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


class WebhookService:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    @property
    def _allow_private(self) -> bool:
        return self.ctx.settings.webhooks.allow_private_targets

    async def create(self, principal: Principal,
                     request: WebhookEndpointCreateRequest) -> WebhookEndpointWithSecret:
        await check_target(request.url, allow_private=self._allow_private)
        at = now()
        row = WebhookEndpoint(
            id=new_id("whep_"), organization_id=principal.organization_id, name=request.name,
            url=request.url, secret=new_secret(), event_types=sorted(set(request.event_types)),
            created_at=at, updated_at=at)
        async with self.ctx.sessions() as session, session.begin():
            session.add(row)
        return endpoint_with_secret(row)

    async def list(self, principal: Principal, *, after: str | None = None,
                   limit: int = 20) -> ListPage[WebhookEndpointObject]:
        check_limit(limit, 100)
        stmt = scoped(WebhookEndpoint, principal.organization_id).where(
            WebhookEndpoint.deleted_at.is_(None))
        async with self.ctx.sessions() as session:
            rows, has_more = await fetch_page(session, stmt, WebhookEndpoint, after=after,
                                              limit=limit)
        return ListPage[WebhookEndpointObject](**page([endpoint_object(r) for r in rows],
                                                      has_more))

    async def _row(self, session: AsyncSession, principal: Principal,
                   endpoint_id: str) -> WebhookEndpoint:
        row = (await session.execute(
            scoped(WebhookEndpoint, principal.organization_id).where(
                WebhookEndpoint.id == endpoint_id, WebhookEndpoint.deleted_at.is_(None))
        )).scalar_one_or_none()
        if row is None:  # another organization's endpoint answers the same
            raise not_found("webhook endpoint", endpoint_id, param="webhook_endpoint_id")
        return row

    async def get(self, principal: Principal, endpoint_id: str) -> WebhookEndpointObject:
        async with self.ctx.sessions() as session:
            return endpoint_object(await self._row(session, principal, endpoint_id))

    async def update(self, principal: Principal, endpoint_id: str,
                     request: WebhookEndpointUpdateRequest) -> WebhookEndpointObject:
        changes = request.model_dump(exclude_none=True)
        if "url" in changes:
            await check_target(changes["url"], allow_private=self._allow_private)
        if "event_types" in changes:
            changes["event_types"] = sorted(set(changes["event_types"]))
        async with self.ctx.sessions() as session, session.begin():
            row = await self._row(session, principal, endpoint_id)
            if any(getattr(row, k) != v for k, v in changes.items()):
                for key, value in changes.items():
                    setattr(row, key, value)
                row.updated_at = now()
            return endpoint_object(row)

    async def rotate_secret(self, principal: Principal,
                            endpoint_id: str) -> WebhookEndpointWithSecret:
        """A new secret signs every attempt from now on, pending retries included."""
        async with self.ctx.sessions() as session, session.begin():
            row = await self._row(session, principal, endpoint_id)
            row.secret, row.updated_at = new_secret(), now()
            return endpoint_with_secret(row)

    async def delete(self, principal: Principal, endpoint_id: str) -> WebhookEndpointDeleted:
        """The endpoint gets no new events; its pending deliveries end as failed. Its delivery
        log stays readable to nobody (the endpoint is gone) and is kept for operators."""
        async with self.ctx.sessions() as session, session.begin():
            row = await self._row(session, principal, endpoint_id)
            row.deleted_at = now()
            await session.execute(
                update(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id,
                                              WebhookDelivery.status == "pending")
                .values(status="failed", last_error="the endpoint was deleted"))
        return WebhookEndpointDeleted(id=endpoint_id, deleted=True)

    async def deliveries(self, principal: Principal, endpoint_id: str, *,
                         after: str | None = None,
                         limit: int = 20) -> ListPage[WebhookDeliveryObject]:
        """The endpoint's delivery log, newest first."""
        check_limit(limit, 100)
        async with self.ctx.sessions() as session:
            await self._row(session, principal, endpoint_id)
            rows, has_more = await fetch_page(
                session, select(WebhookDelivery).where(
                    WebhookDelivery.endpoint_id == endpoint_id), WebhookDelivery,
                after=after, limit=limit)
        return ListPage[WebhookDeliveryObject](**page([delivery_object(r) for r in rows],
                                                      has_more))
