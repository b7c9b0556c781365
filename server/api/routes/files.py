"""`/v1/files`"""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import quote

from litestar import Controller, Request, delete, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter
from litestar.response import Stream

from server.api.error_docs import ErrorEnvelope, errors
from server.api.multipart import MultipartReader
from server.api.openapi_bodies import FileUploadOperation, limit_param
from server.auth import Principal
from server.service import Services
from server.service.objects import FileDeleted, FileObject, ListPage
from tuneforge.errors import invalid


def storage_errors(*codes: int) -> dict[int, ResponseSpec]:
    """`errors(*codes)` plus the 503 of an object-storage outage."""
    return {**errors(*codes), 503: ResponseSpec(
        ErrorEnvelope, generate_examples=False,
        description="Object storage temporarily unavailable: retry after `Retry-After` seconds",
    )}


class FilesController(Controller):
    path = "/v1/files"
    tags = ["files"]

    @post("/", request_max_body_size=None, operation_class=FileUploadOperation, status_code=200,
          responses=storage_errors(413))
    async def create_file(self, request: Request, services: Services,
                          principal: Principal) -> FileObject:
        """Upload a file (multipart: `purpose`, then `file`); streamed into object storage."""
        reader = MultipartReader(request.headers.get("content-type"), request.stream())
        filename = await reader.read_until_file("file")
        purpose = reader.fields.get("purpose")
        if purpose is None:
            raise invalid("Missing 'purpose': send the purpose field before the file field.",
                          param="purpose")
        return await services.files.create(principal, filename, purpose, reader.file_chunks())

    @get("/", responses=errors())
    async def list_files(
        self, services: Services, principal: Principal, after: str | None = None,
        limit: Annotated[int, limit_param(10000)] = 10000, order: Literal["asc", "desc"] = "desc",
        purpose: str | None = None,
    ) -> ListPage[FileObject]:
        return await services.files.list(principal, after=after, limit=limit, order=order,
                                         purpose=purpose)

    @get("/{file_id:str}", responses=errors(404))
    async def retrieve_file(self, services: Services, principal: Principal,
                            file_id: str) -> FileObject:
        return await services.files.get(principal, file_id)

    @delete("/{file_id:str}", status_code=200, responses=storage_errors(404, 409))
    async def delete_file(self, services: Services, principal: Principal,
                          file_id: str) -> FileDeleted:
        return await services.files.delete(principal, file_id)

    @get("/{file_id:str}/content", media_type="application/octet-stream",
         responses=storage_errors(404))
    async def file_content(
        self, services: Services, principal: Principal,
        file_id: str = Parameter(description="The file to download."),
    ) -> Stream:
        row, chunks = await services.files.content(principal, file_id)
        return Stream(chunks, media_type="application/octet-stream", headers={
            "Content-Length": str(row.bytes),
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(row.filename)}",
        })
