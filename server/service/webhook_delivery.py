"""Sends the webhook outbox (`webhook_deliveries`), at least once, from every API process.

Each pass claims due deliveries with a guarded UPDATE (a lease, so two API processes never
send one at once; a process killed mid-send leaves a lease that lapses and another pass takes
the delivery again), signs each attempt (Standard Webhooks, as OpenAI's SDK verifies:
`webhook-id` = the event id, the same on every retry; `webhook-timestamp` = this attempt;
`webhook-signature` = `v1,` + base64 HMAC-SHA256 of `{id}.{timestamp}.{body}`), POSTs it and
records the outcome: delivered on a 2xx, else the next attempt after an exponential backoff,
or failed once the retry period is over. Redirects are not followed, and the target's
addresses are checked again before every attempt (server-side request forgery).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from sqlalchemy import or_, select, update
from standardwebhooks import Webhook

from server.db.models import WebhookDelivery, WebhookEndpoint
from server.service.context import Context
from server.webhook_targets import delivery_refusal

log = logging.getLogger(__name__)

USER_AGENT = "TuneForge-Webhooks/1"
# A claimed delivery's lease outlasts its attempt's deadline by this much.
LEASE_MARGIN_SECONDS = 2.0


@dataclass(frozen=True)
class Claimed:
    id: str
    event_id: str
    body: str
    attempts: int
    created_at: float
    url: str
    secret: str


@dataclass(frozen=True)
class Outcome:
    delivered: bool
    status_code: int | None = None
    error: str | None = None


def signed_headers(event_id: str, body: str, secret: str, at: float) -> dict[str, str]:
    timestamp = datetime.fromtimestamp(int(at), tz=UTC)
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": event_id,
        "webhook-timestamp": str(int(at)),
        "webhook-signature": Webhook(secret).sign(event_id, timestamp, body),
    }


class WebhookSender:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.settings = ctx.settings.webhooks
        self.owner = f"webhooks:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._in_flight: set[asyncio.Task[None]] = set()

    async def run_forever(self) -> None:
        async with httpx.AsyncClient(follow_redirects=False, trust_env=False) as http:
            try:
                while True:
                    try:
                        await self.send_due(http)
                    except Exception:  # the DB was away: try again next pass
                        log.warning("webhook delivery pass failed", exc_info=True)
                    await asyncio.sleep(self.settings.poll_interval_seconds)
            finally:
                for task in list(self._in_flight):
                    task.cancel()
                for task in list(self._in_flight):
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

    async def send_due(self, http: httpx.AsyncClient) -> int:
        """Claim what is due (up to the free concurrency) and start sending it."""
        room = self.settings.max_concurrent - len(self._in_flight)
        if room <= 0:
            return 0
        claimed = await self.claim(room)
        for delivery in claimed:
            task = asyncio.create_task(self._send(http, delivery))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
        return len(claimed)

    async def claim(self, limit: int) -> list[Claimed]:
        at = time.time()
        lease_free = or_(WebhookDelivery.lease_owner.is_(None),
                         WebhookDelivery.lease_expires_at < at)
        due = (WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= at,
               lease_free)
        async with self.ctx.sessions() as session, session.begin():
            candidates = (await session.execute(
                select(WebhookDelivery.id).where(*due)
                .order_by(WebhookDelivery.next_attempt_at).limit(limit))).scalars().all()
            taken = []
            for delivery_id in candidates:
                result = await session.execute(
                    update(WebhookDelivery).where(WebhookDelivery.id == delivery_id, *due)
                    .values(lease_owner=self.owner, lease_expires_at=at + self._lease_seconds))
                if result.rowcount == 1:
                    taken.append(delivery_id)
            if not taken:
                return []
            rows = (await session.execute(
                select(WebhookDelivery, WebhookEndpoint.url, WebhookEndpoint.secret)
                .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
                .where(WebhookDelivery.id.in_(taken)))).all()
        return [Claimed(id=d.id, event_id=d.event_id, body=d.body, attempts=d.attempts,
                        created_at=d.created_at, url=url, secret=secret)
                for d, url, secret in rows]

    @property
    def _lease_seconds(self) -> float:
        return self.settings.timeout_seconds + LEASE_MARGIN_SECONDS

    async def _send(self, http: httpx.AsyncClient, delivery: Claimed) -> None:
        try:
            outcome = await self.attempt(http, delivery)
        except Exception:
            log.exception("webhook delivery %s: unexpected error", delivery.id)
            outcome = Outcome(False, error="internal error while sending")
        try:
            await self.record(delivery, outcome)
        except Exception:  # the lease lapses and another pass tries again
            log.warning("webhook delivery %s: could not record the outcome", delivery.id,
                        exc_info=True)

    async def attempt(self, http: httpx.AsyncClient, delivery: Claimed) -> Outcome:
        timeout = self.settings.timeout_seconds
        try:
            async with asyncio.timeout(timeout):
                refusal = await delivery_refusal(
                    delivery.url, allow_private=self.settings.allow_private_targets)
                if refusal is not None:
                    return Outcome(False, error=refusal)
                response = await http.post(
                    delivery.url, content=delivery.body.encode(), timeout=timeout,
                    headers=signed_headers(delivery.event_id, delivery.body, delivery.secret,
                                           time.time()))
        except (TimeoutError, httpx.TimeoutException):
            return Outcome(False, error=f"no answer within {timeout:g} s")
        except httpx.ConnectError:
            return Outcome(False, error="could not connect to the target")
        except httpx.HTTPError as exc:
            return Outcome(False, error=f"the request failed ({type(exc).__name__})")
        if response.is_success:
            return Outcome(True, status_code=response.status_code)
        error = (f"HTTP {response.status_code} (redirects are not followed)"
                 if response.is_redirect else f"HTTP {response.status_code}")
        return Outcome(False, status_code=response.status_code, error=error)

    async def record(self, delivery: Claimed, outcome: Outcome) -> None:
        at = time.time()
        attempts = delivery.attempts + 1
        values: dict[str, object] = {
            "attempts": attempts, "last_attempt_at": at, "last_status_code": outcome.status_code,
            "last_error": outcome.error, "lease_owner": None, "lease_expires_at": None}
        if outcome.delivered:
            values.update(status="delivered", delivered_at=at)
        else:
            delay = min(self.settings.base_delay_seconds * 2 ** (attempts - 1),
                        self.settings.max_delay_seconds)
            if at + delay > delivery.created_at + self.settings.retry_period_seconds:
                values["status"] = "failed"
            else:
                values["next_attempt_at"] = at + delay
            log.info("webhook delivery %s attempt %d failed: %s", delivery.id, attempts,
                     outcome.error)
        async with self.ctx.sessions() as session, session.begin():
            await session.execute(
                update(WebhookDelivery).where(WebhookDelivery.id == delivery.id,
                                              WebhookDelivery.status == "pending",
                                              WebhookDelivery.lease_owner == self.owner)
                .values(**values))
