"""Synchronous set-up for command-line tools (`tuneforge keys create`, `tuneforge up`, the
benchmarks): migrate the database, then create an API key."""

from __future__ import annotations

import asyncio

from server.auth import create_key
from server.db.session import create_engine, create_sessionmaker
from server.main import prepare
from tuneforge.settings import Settings


def create_api_key(settings: Settings, organization: str, name: str = "") -> tuple[str, str]:
    """Returns (organization_id, key) for `organization` (an id, or a name, created if new)."""
    prepare(settings)

    async def create() -> tuple[str, str]:
        engine = create_engine(settings.effective_database_url)
        try:
            async with create_sessionmaker(engine)() as session:
                return await create_key(session, organization, name)
        finally:
            await engine.dispose()

    return asyncio.run(create())
