"""`/v1/organization/storage` (TuneForge extension): the caller's organization's storage."""

from __future__ import annotations

from litestar import Controller, get

from server.api.error_docs import errors
from server.auth import Principal
from server.service import Services
from server.service.objects import StorageUsageObject


class UsageController(Controller):
    path = "/v1/organization"
    tags = ["organization"]

    @get("/storage", responses=errors())
    async def storage(self, services: Services, principal: Principal) -> StorageUsageObject:
        """Bytes the organization keeps in object storage: files, models' weights, checkpoints,
        and deleted models' weights not yet removed."""
        return await services.usage.storage(principal)
