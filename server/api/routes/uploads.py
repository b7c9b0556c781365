"""`/v1/uploads`"""

from __future__ import annotations

from litestar import Controller, Request, get, post

from server.api.error_docs import errors
from server.api.multipart import MultipartReader
from server.api.openapi_bodies import UploadPartOperation
from server.api.routes.files import storage_errors
from server.auth import Principal
from server.service import Services
from server.service.objects import UploadObject, UploadPartObject
from server.service.requests import UploadCompleteRequest, UploadCreateRequest


class UploadsController(Controller):
    path = "/v1/uploads"
    tags = ["uploads"]

    @post("/", status_code=200, responses=errors(413))
    async def create_upload(self, services: Services, principal: Principal,
                            data: UploadCreateRequest) -> UploadObject:
        return await services.uploads.create(
            principal, filename=data.filename, purpose=data.purpose, bytes=data.bytes,
            mime_type=data.mime_type,
            expires_after=data.expires_after.seconds if data.expires_after else None,
        )

    @get("/{upload_id:str}", responses=errors(404))
    async def retrieve_upload(self, services: Services, principal: Principal,
                              upload_id: str) -> UploadObject:
        return await services.uploads.get(principal, upload_id)

    @post("/{upload_id:str}/parts", request_max_body_size=None,
          operation_class=UploadPartOperation, status_code=200,
          responses=storage_errors(404, 409, 413))
    async def add_part(self, request: Request, services: Services, principal: Principal,
                       upload_id: str) -> UploadPartObject:
        reader = MultipartReader(request.headers.get("content-type"), request.stream())
        await reader.read_until_file("data")
        return await services.uploads.add_part(principal, upload_id, reader.file_chunks())

    @post("/{upload_id:str}/complete", status_code=200, responses=storage_errors(404, 409))
    async def complete_upload(self, services: Services, principal: Principal, upload_id: str,
                              data: UploadCompleteRequest) -> UploadObject:
        return await services.uploads.complete(principal, upload_id, data.part_ids, data.md5)

    @post("/{upload_id:str}/cancel", status_code=200, responses=errors(404, 409))
    async def cancel_upload(self, services: Services, principal: Principal,
                            upload_id: str) -> UploadObject:
        return await services.uploads.cancel(principal, upload_id)
