"""The grpc.aio server: the `tuneforge.v1` services plus health checking and reflection."""

from __future__ import annotations

import logging

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from server.grpc.organization import OrganizationServicer
from server.grpc.pb.tuneforge.v1 import (
    files_pb2,
    files_pb2_grpc,
    fine_tuning_pb2,
    fine_tuning_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
    organization_pb2,
    organization_pb2_grpc,
    webhooks_pb2,
    webhooks_pb2_grpc,
)
from server.grpc.request_id import RequestIdInterceptor
from server.grpc.servicers import FilesServicer, FineTuningServicer, ModelsServicer
from server.grpc.webhooks import WebhooksServicer
from server.service import Services
from tuneforge.settings import Settings

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 8 * 1024 * 1024
STREAM_WINDOW_BYTES = 4 * 1024 * 1024
SERVICE_NAMES = (
    files_pb2.DESCRIPTOR.services_by_name["Files"].full_name,
    fine_tuning_pb2.DESCRIPTOR.services_by_name["FineTuning"].full_name,
    models_pb2.DESCRIPTOR.services_by_name["Models"].full_name,
    webhooks_pb2.DESCRIPTOR.services_by_name["Webhooks"].full_name,
    organization_pb2.DESCRIPTOR.services_by_name["Organization"].full_name,
)


class GrpcServer:
    """A started server and its health servicer (so shutdown can report NOT_SERVING)."""

    def __init__(self, server: grpc.aio.Server, health_servicer: health.aio.HealthServicer,
                 port: int) -> None:
        self.server = server
        self.health = health_servicer
        self.port = port

    async def stop(self, grace: float | None = 5.0) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


async def start_grpc(services: Services, settings: Settings) -> GrpcServer:
    server = grpc.aio.server(interceptors=[RequestIdInterceptor()], options=[
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        # A fixed 4 MiB flow-control window per stream instead of BDP auto-tuning, which lets
        # the window (and so the bytes the server buffers for an upload it has not consumed
        # yet) grow with no bound we choose; 4 MiB still fills a 50 ms path at 80 MiB/s.
        ("grpc.http2.bdp_probe", 0),
        ("grpc.http2.lookahead_bytes", STREAM_WINDOW_BYTES),
    ])
    files_pb2_grpc.add_FilesServicer_to_server(FilesServicer(services), server)
    fine_tuning_pb2_grpc.add_FineTuningServicer_to_server(FineTuningServicer(services), server)
    models_pb2_grpc.add_ModelsServicer_to_server(ModelsServicer(services), server)
    webhooks_pb2_grpc.add_WebhooksServicer_to_server(WebhooksServicer(services), server)
    organization_pb2_grpc.add_OrganizationServicer_to_server(OrganizationServicer(services),
                                                             server)

    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME), server)

    address = f"{settings.host}:{settings.grpc_port}"
    port = server.add_insecure_port(address)
    if port == 0:
        raise RuntimeError(f"cannot bind the gRPC server to {address}")
    await server.start()
    for name in ("", *SERVICE_NAMES):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("gRPC server listening on %s:%d", settings.host, port)
    return GrpcServer(server, health_servicer, port)


async def start_grpc_server(services: Services, settings: Settings) -> grpc.aio.Server:
    """Start the gRPC API on settings.host:settings.grpc_port; stop it with `.stop(grace)`."""
    return (await start_grpc(services, settings)).server
