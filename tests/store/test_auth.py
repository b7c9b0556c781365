"""API keys: valid ones are remembered briefly, revoked ones stop working, unknown ones never
get in."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import update

from server.auth import Authenticator, create_key, hash_key
from server.db.models import ApiKey
from tuneforge.errors import ApiError


async def test_keys_are_checked_remembered_and_revoked(services) -> None:  # type: ignore[no-untyped-def]
    sessions = services.ctx.sessions
    async with sessions() as session:
        org_id, key = await create_key(session, "auth-test")
    check = Authenticator(sessions, ttl_s=0.5)

    principal = await check(f"Bearer {key}")
    assert principal.organization_id == org_id
    for wrong in (None, "", "Basic abc", "Bearer ", f"Bearer {key}x"):
        with pytest.raises(ApiError) as refused:
            await check(wrong)
        assert refused.value.status == 401

    async with sessions() as session:
        await session.execute(update(ApiKey).where(ApiKey.key_hash == hash_key(key))
                              .values(revoked_at=int(time.time())))
        await session.commit()
    await asyncio.sleep(0.6)
    with pytest.raises(ApiError) as refused:
        await check(f"Bearer {key}")
    assert refused.value.status == 401

    # Refusals are not remembered: a key reinstated in the database works at once.
    async with sessions() as session:
        await session.execute(update(ApiKey).where(ApiKey.key_hash == hash_key(key))
                              .values(revoked_at=None))
        await session.commit()
    assert (await check(f"Bearer {key}")).organization_id == org_id
