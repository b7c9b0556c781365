"""`tuneforge.v1.Organization` over the service layer (TuneForge extensions)."""

from __future__ import annotations

from server.grpc.convert import reply
from server.grpc.pb.tuneforge.v1 import organization_pb2 as pb
from server.grpc.pb.tuneforge.v1 import organization_pb2_grpc as pb_grpc
from server.grpc.servicers import Context, _Base, unary


class OrganizationServicer(_Base, pb_grpc.OrganizationServicer):
    @unary
    async def GetStorage(self, request: pb.GetStorageRequest,
                         context: Context) -> pb.StorageUsage:
        principal = await self.principal(context)
        return reply(await self.services.usage.storage(principal), pb.StorageUsage)
