"""`/v1/models`"""

from __future__ import annotations

from litestar import Controller, delete, get

from server.api.error_docs import errors
from server.auth import Principal
from server.service import Services
from server.service.objects import ListPage, ModelDeleted, ModelObject


class ModelsController(Controller):
    path = "/v1/models"
    tags = ["models"]

    @get("/", responses=errors())
    async def list_models(self, services: Services, principal: Principal) -> ListPage[ModelObject]:
        return await services.models.list(principal)

    # Model ids contain ':' (ft:base:org:suffix:id), so take the rest of the path.
    @get("/{model_id:path}", responses=errors(404))
    async def retrieve_model(self, services: Services, principal: Principal,
                             model_id: str) -> ModelObject:
        return await services.models.get(principal, model_id.lstrip("/"))

    @delete("/{model_id:path}", status_code=200, responses=errors(403, 404))
    async def delete_model(self, services: Services, principal: Principal,
                           model_id: str) -> ModelDeleted:
        return await services.models.delete(principal, model_id.lstrip("/"))
