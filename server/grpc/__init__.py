"""The gRPC transport: `tuneforge.v1` over the same service layer as the REST API."""

from server.grpc.server import GrpcServer, start_grpc, start_grpc_server

__all__ = ["GrpcServer", "start_grpc", "start_grpc_server"]
