"""What the plane needs to know about models, answered by the service layer (which alone reads
the database): the `ModelService` of `server.service` satisfies `Catalog`."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Protocol


class Servable(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def base_model(self) -> str: ...
    @property
    def adapter_prefix(self) -> str | None: ...
    @property
    def created_at(self) -> int: ...


class Catalog(Protocol):
    async def servable_models(self, base_model: str, limit: int) -> Sequence[Servable]:
        """Succeeded, not deleted fine-tuned models of `base_model`, newest first."""
        ...

    async def servable_states(self, ids: Collection[str]) -> Mapping[str, Servable | None]:
        """For each of `ids` that exists: the model if it is servable (a fine-tuned model not
        deleted, or a checkpoint), None if it was deleted. Unknown ids are left out."""
        ...
