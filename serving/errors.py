"""Errors of the inference plane, shaped like OpenAI's error envelope so that a transport can
render them unchanged."""

from __future__ import annotations

from typing import Any


class ServingError(Exception):
    def __init__(self, status: int, message: str, *, type: str = "server_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def envelope(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}


class NoReplica(ServingError):
    """No healthy vLLM server serves the model's base model (yet)."""

    def __init__(self, base_model: str, detail: str = "") -> None:
        message = f"No inference server for base model '{base_model}' is ready"
        super().__init__(503, message + (f": {detail}" if detail else "."),
                         code="model_not_ready")


class AdapterMissing(ServingError):
    """The adapter's files are not in object storage."""

    def __init__(self, prefix: str) -> None:
        super().__init__(503, f"The model's adapter is not available (nothing under {prefix}).",
                         code="adapter_missing")


class AdapterRejected(ServingError):
    """vLLM refused to load the adapter (wrong rank, wrong base, corrupt files)."""

    def __init__(self, name: str, detail: str) -> None:
        super().__init__(500, f"The inference server could not load '{name}': {detail}",
                         code="adapter_load_failed")


class InvalidRequest(ServingError):
    def __init__(self, message: str, *, param: str | None = None,
                 code: str | None = "invalid_value") -> None:
        super().__init__(400, message, type="invalid_request_error", param=param, code=code)
