"""The inference plane's errors: `tuneforge.errors.ApiError`s a transport renders unchanged."""

from __future__ import annotations

from tuneforge.errors import ApiError


class NoReplica(ApiError):
    """No healthy vLLM server serves the model's base model (yet)."""

    def __init__(self, base_model: str, detail: str = "") -> None:
        message = f"No inference server for base model '{base_model}' is ready"
        super().__init__(503, message + (f": {detail}" if detail else "."),
                         type="server_error", code="model_not_ready")


class AdapterMissing(ApiError):
    """The adapter's files are not in object storage."""

    def __init__(self, prefix: str) -> None:
        super().__init__(503, f"The model's adapter is not available (nothing under {prefix}).",
                         type="server_error", code="adapter_missing")


class AdapterRejected(ApiError):
    """vLLM refused to load the adapter (wrong rank, wrong base, corrupt files)."""

    def __init__(self, name: str, detail: str) -> None:
        super().__init__(500, f"The inference server could not load '{name}': {detail}",
                         type="server_error", code="adapter_load_failed")


class InvalidRequest(ApiError):
    def __init__(self, message: str, *, param: str | None = None,
                 code: str | None = "invalid_value") -> None:
        super().__init__(400, message, type="invalid_request_error", param=param, code=code)


class WeightsMissing(ApiError):
    """A full-weight model's files (config + safetensors) are not in object storage."""

    def __init__(self, prefix: str) -> None:
        super().__init__(503, f"The model's weights are not available (nothing under {prefix}).",
                         type="server_error", code="model_missing")


class ModelStartFailed(ApiError):
    """vLLM could not start a full-weight model's server (bad weights, too little memory)."""

    def __init__(self, model: str, detail: str) -> None:
        super().__init__(500, f"The inference server could not start '{model}': {detail}",
                         type="server_error", code="model_load_failed")
        # The signature of weights vLLM could not swap into a running server (then a server
        # of their own is started instead), None for a server that did not start.
        self.swapped: tuple[tuple[str, int, str], ...] | None = None


class ModelStarting(ApiError):
    """A full-weight model's server is not ready yet (starting, or waiting for room)."""

    def __init__(self, model: str, detail: str, retry_after: int) -> None:
        super().__init__(503, f"The model '{model}' is not ready yet: {detail}. Retry later.",
                         type="server_error", code="model_not_ready",
                         headers={"Retry-After": str(retry_after)})
