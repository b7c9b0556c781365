"""What the plane needs to know about models, answered by the service layer (which alone reads
the database): the `ModelService` of `server.service` satisfies `Catalog`."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Protocol

# How a fine-tuned model is served: a LoRA adapter loaded into its base model's replicas, or
# full weights (full / Spectrum jobs) served by a vLLM server of their own
# (`serving.full_models`). `serving_requests.kind` and `ServableModel.kind` carry it.
ADAPTER = "adapter"
FULL = "full"


def kind_of(model: object) -> str:
    """`model.kind` (`ADAPTER` for a catalog that predates full-weight models)."""
    return str(getattr(model, "kind", ADAPTER) or ADAPTER)


class Servable(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def base_model(self) -> str: ...
    @property
    def adapter_prefix(self) -> str | None: ...
    @property
    def created_at(self) -> int: ...
    # ADAPTER (`adapter_prefix` holds a PEFT adapter) or FULL (it holds full weights).
    @property
    def kind(self) -> str: ...


class ServingAsk(Protocol):
    """A worker's request to load a just-trained model (a `serving_requests` row), with the
    status of its job."""

    @property
    def id(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def base_model(self) -> str: ...
    @property
    def adapter_prefix(self) -> str: ...
    @property
    def requested_at(self) -> float: ...
    @property
    def ready_at(self) -> float | None: ...
    @property
    def error(self) -> str | None: ...
    @property
    def job_status(self) -> str: ...
    # ADAPTER, or FULL: `adapter_prefix` then holds full weights (safetensors + tokenizer).
    @property
    def kind(self) -> str: ...
    # The job and the request that created it (for the hot-load's log lines and trace).
    @property
    def job_id(self) -> str | None: ...
    @property
    def request_id(self) -> str | None: ...
    @property
    def traceparent(self) -> str | None: ...


class Catalog(Protocol):
    async def servable_models(self, base_model: str, limit: int) -> Sequence[Servable]:
        """Succeeded, not deleted fine-tuned models of `base_model`, newest first."""
        ...

    async def servable_states(self, ids: Collection[str]) -> Mapping[str, Servable | None]:
        """For each of `ids` that exists: the model if it is servable (a fine-tuned model not
        deleted, a checkpoint, or the model of a serving request whose job has not ended
        cancelled or failed), None if it was deleted (or its job was cancelled or failed).
        Unknown ids are left out."""
        ...

    async def serving_asks(self, base_models: Collection[str]) -> Sequence[ServingAsk]:
        """Every serving request for one of `base_models`, oldest first."""
        ...

    async def answer_serving(self, request_id: str, *, ready_at: float, replicas: int) -> None:
        """The model of the request answers on `replicas` replicas since `ready_at`."""
        ...

    async def refuse_serving(self, request_id: str, error: str) -> None:
        """The model of the request cannot be served (vLLM refused its adapter)."""
        ...

    async def drop_serving(self, request_ids: Collection[str]) -> None:
        """Forget requests nobody waits for any more."""
        ...
