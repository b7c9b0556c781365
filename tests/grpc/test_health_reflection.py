"""The standard gRPC health-checking and reflection services are on."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

SERVICES = ("tuneforge.v1.Files", "tuneforge.v1.FineTuning", "tuneforge.v1.Models",
            "tuneforge.v1.Webhooks", "tuneforge.v1.Organization")


def test_health(channel: grpc.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    for name in ("", *SERVICES):
        response = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
        assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_and_describes_the_services(channel: grpc.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    requests = [reflection_pb2.ServerReflectionRequest(list_services=""),
                reflection_pb2.ServerReflectionRequest(
                    file_containing_symbol="tuneforge.v1.FineTuning")]
    listed, described = list(stub.ServerReflectionInfo(iter(requests), timeout=10))
    names = {s.name for s in listed.list_services_response.service}
    assert set(SERVICES) | {"grpc.health.v1.Health"} <= names
    from google.protobuf import descriptor_pb2

    files = [descriptor_pb2.FileDescriptorProto.FromString(raw)
             for raw in described.file_descriptor_response.file_descriptor_proto]
    fine_tuning = next(f for f in files if f.name == "tuneforge/v1/fine_tuning.proto")
    methods = {m.name for m in fine_tuning.service[0].method}
    assert {"Create", "Get", "List", "Cancel", "Pause", "Resume", "ListEvents",
            "ListCheckpoints", "WatchEvents", "PlanJob"} == methods
