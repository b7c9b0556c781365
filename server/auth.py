"""API keys: `tf-…` bearer tokens, stored as SHA-256 hashes, each owned by an organization."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.models import ApiKey, Organization
from server.errors import unauthorized
from tuneforge.domain import new_id

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


async def authenticate(session: AsyncSession, authorization: str | None) -> Principal:
    if not authorization:
        raise unauthorized(
            "You didn't provide an API key. Provide it in the Authorization header "
            "(Authorization: Bearer YOUR_KEY)."
        )
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise unauthorized("Malformed Authorization header: expected 'Bearer YOUR_KEY'.")
    row = (
        await session.execute(
            select(ApiKey).where(ApiKey.key_hash == hash_key(key.strip()),
                                 ApiKey.revoked_at.is_(None))
        )
    ).scalars().first()
    if row is None:
        raise unauthorized("Incorrect API key provided.")
    return Principal(organization_id=row.organization_id, key_id=row.id)
