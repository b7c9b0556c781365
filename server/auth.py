"""API keys: `tf-…` bearer tokens, stored as SHA-256 hashes, each owned by an organization."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from cachetools import TTLCache
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.db.models import ApiKey, Organization
from tuneforge.domain import new_id
from tuneforge.errors import unauthorized

KEY_PREFIX = "tf-"


@dataclass(frozen=True)
class Principal:
    organization_id: str
    key_id: str


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def create_key(
    session: AsyncSession, organization: str, name: str = ""
) -> tuple[str, str]:
    """Create an API key for `organization` (an org id, or a name for a new or existing org).
    Returns (organization_id, key); only the hash is stored."""
    org = (
        await session.execute(
            select(Organization).where(
                (Organization.id == organization) | (Organization.name == organization)
            )
        )
    ).scalars().first()
    if org is None:
        org = Organization(id=new_id("org-"), name=organization)
        session.add(org)
        await session.flush()
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiKey(id=new_id("key-"), organization_id=org.id, name=name,
                       key_hash=hash_key(key)))
    await session.commit()
    return org.id, key


class Authenticator:
    """Checks bearer keys against the database and remembers valid ones for `ttl_s` seconds.

    The inference proxy authenticates every request; a database round trip each time was most
    of the latency it added. A key revoked in the database stops working within `ttl_s`.
    Unknown keys are never remembered, so a new key works at once.
    """

    def __init__(self, sessions: async_sessionmaker, ttl_s: float = 5.0,
                 maxsize: int = 4096) -> None:
        self._sessions = sessions
        self._valid: TTLCache[str, Principal] = TTLCache(maxsize=maxsize, ttl=ttl_s)

    async def __call__(self, authorization: str | None) -> Principal:
        key = bearer_key(authorization)
        digest = hash_key(key)
        principal = self._valid.get(digest)
        if principal is None:
            async with self._sessions() as session:
                principal = await principal_for(session, digest)
            self._valid[digest] = principal
        return principal


def bearer_key(authorization: str | None) -> str:
    if not authorization:
        raise unauthorized(
            "You didn't provide an API key. Provide it in the Authorization header "
            "(Authorization: Bearer YOUR_KEY)."
        )
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise unauthorized("Malformed Authorization header: expected 'Bearer YOUR_KEY'.")
    return key.strip()


async def principal_for(session: AsyncSession, key_hash: str) -> Principal:
    row = (
        await session.execute(
            select(ApiKey).where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
        )
    ).scalars().first()
    if row is None:
        raise unauthorized("Incorrect API key provided.")
    return Principal(organization_id=row.organization_id, key_id=row.id)
