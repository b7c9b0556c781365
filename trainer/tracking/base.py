"""The tracker protocol: what the fan-out asks of W&B, MLflow and any later tracker."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class StartedRun:
    run_id: str
    url: str | None  # None: the run has no URL (W&B offline)


class TrackerFailure(Exception):
    """A tracker refused or failed a call; its message is shown in the job's warning event,
    so it names no key, path or internal host."""


class Tracker(Protocol):
    # How events name the tracker ("W&B", "MLflow").
    label: str

    def start(self, hyperparameters: dict[str, Any], config: dict[str, Any]) -> StartedRun:
        """Open the run (or reopen `resume_run_id` given to the tracker) and record the
        job's hyperparameters and configuration."""
        ...

    def log(self, metrics: dict[str, float], step: int) -> None:
        """One metrics event: finite numbers only, at the job's optimizer step."""
        ...

    def finish(self, result: dict[str, Any], status: str) -> None:
        """Record the final result (resolved hyperparameters, trained tokens, …) and close
        the run: `status` is "succeeded", "failed", "cancelled" or "paused"."""
        ...


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted keys (`{"lora": {"rank": 16}}` → `{"lora.rank": 16}`)."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
