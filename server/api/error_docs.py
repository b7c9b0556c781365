"""OpenAPI descriptions of the error responses, all in OpenAI's envelope."""

from __future__ import annotations

from litestar.openapi.datastructures import ResponseSpec
from pydantic import BaseModel

_DESCRIPTIONS = {
    400: "Invalid request: `error.param` names the field",
    401: "Missing or invalid API key",
    403: "Not permitted",
    404: "No such object (or it belongs to another organization)",
    409: "Not allowed in the object's current state",
    413: "Larger than the configured limit",
}


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorEnvelope(BaseModel):
    error: ErrorDetail


def errors(*codes: int) -> dict[int, ResponseSpec]:
    """Every route can answer 400 (bad parameters) and 401 (no valid key), plus `codes`."""
    return {
        code: ResponseSpec(ErrorEnvelope, description=_DESCRIPTIONS[code],
                           generate_examples=False)
        for code in sorted({400, 401, *codes})
    }
