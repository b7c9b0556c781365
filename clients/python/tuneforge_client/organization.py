"""The caller's organization (`client.organization`, TuneForge extensions), over REST or gRPC:
what it keeps in object storage."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from tuneforge_client._convert import read
from tuneforge_client._pb.tuneforge.v1 import organization_pb2 as pb
from tuneforge_client._pb.tuneforge.v1 import organization_pb2_grpc as pb_grpc
from tuneforge_client.types import _Object

if TYPE_CHECKING:
    from tuneforge_client._client import AsyncTuneForge, _Portal


@dataclass(frozen=True)
class StorageShare(_Object):
    count: int
    bytes: int


@dataclass(frozen=True)
class StorageUsage(_Object):
    """Bytes in object storage: files, models' weights (count: models), checkpoints, and the
    weights of deleted models not yet removed (a job still trains from them)."""

    files: StorageShare
    models: StorageShare
    checkpoints: StorageShare
    pending_deletion: StorageShare
    total_bytes: int
    object: Literal["organization.storage"] = "organization.storage"


class AsyncOrganization:
    def __init__(self, client: AsyncTuneForge) -> None:
        self._c = client

    def _grpc(self) -> pb_grpc.OrganizationStub:
        return self._c._grpc.stub(pb_grpc.OrganizationStub)

    async def storage(self) -> StorageUsage:
        if self._c.transport == "rest":
            return StorageUsage.from_dict(await self._c._retry(
                lambda: self._c._rest.request("GET", "/organization/storage")))
        return read(await self._c._retry(lambda: self._c._grpc.call(
            self._grpc().GetStorage, pb.GetStorageRequest())), StorageUsage)


class Organization:
    """The blocking flavour of `AsyncOrganization`."""

    def __init__(self, organization: AsyncOrganization, portal: _Portal) -> None:
        self._a, self._p = organization, portal

    def storage(self) -> StorageUsage:
        return self._p.run(self._a.storage())
