"""What the service layer works on: settings, the database, the object store, the queue."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from server.auth import Authenticator
from server.db.session import create_engine, create_sessionmaker
from server.queue import JobQueue
from server.storage import ObjectStore
from tuneforge.settings import Settings


@dataclass
class Context:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker
    store: ObjectStore
    queue: JobQueue
    authenticate: Authenticator = field(init=False)

    def __post_init__(self) -> None:
        self.authenticate = Authenticator(self.sessions)

    @classmethod
    def from_settings(cls, settings: Settings) -> Context:
        engine = create_engine(settings.effective_database_url)
        return cls(
            settings=settings,
            engine=engine,
            sessions=create_sessionmaker(engine),
            store=ObjectStore(settings.s3, settings.storage),
            queue=JobQueue(settings.redis_url, settings.queue_name),
        )

    async def close(self) -> None:
        await self.queue.close()
        await self.engine.dispose()
        self.store.close()
