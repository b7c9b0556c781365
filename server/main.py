"""Run the API server: migrate the database, then serve REST (uvicorn) and gRPC together."""

from __future__ import annotations

import asyncio
import socket

import uvicorn

from server.api.app import create_app
from server.db.migrate import upgrade
from server.grpc import GrpcServer, start_grpc
from server.observability.logging import configure_logging
from server.observability.tracing import configure_tracing, shutdown_tracing
from server.service import Services
from server.service.context import Context
from tuneforge.settings import Settings

# Open connections (a stalled client, a long stream) get this long to finish after SIGTERM or
# Ctrl-C; then they are closed and the process exits (uvicorn would otherwise wait forever).
GRACEFUL_SHUTDOWN_SECONDS = 5
# The largest request line plus headers: anything bigger is refused (400) before it is
# buffered further or reaches authentication. uvicorn's httptools parser has no such limit;
# h11 enforces this one.
MAX_HEADER_BYTES = 64 * 1024


def prepare(settings: Settings) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.effective_database_url)


class _Server(uvicorn.Server):
    """uvicorn, stopping the gRPC server first when it shuts down (before the app's lifespan
    closes the services both transports share)."""

    grpc_server: GrpcServer | None = None

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.grpc_server is not None:
            await self.grpc_server.stop(grace=2.0)
        await super().shutdown(sockets)


async def serve(settings: Settings) -> None:
    services = Services(Context.from_settings(settings))
    app = create_app(services)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="info",
                            log_config=None,  # our handler (server.observability)
                            lifespan="on", access_log=False, http="h11",
                            h11_max_incomplete_event_size=MAX_HEADER_BYTES,
                            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS)
    server = _Server(config)
    server.grpc_server = await start_grpc(services, settings)
    try:
        await server.serve()
    finally:
        await server.grpc_server.stop(grace=None)


def run(settings: Settings) -> None:
    # JSON lines with the request id (`log_format`); traces only when `tracing.enabled`.
    configure_logging(settings.log_format)
    configure_tracing(settings.tracing)
    prepare(settings)
    try:
        asyncio.run(serve(settings))
    finally:
        shutdown_tracing()
