"""What a job tells its trackers: its configuration when the run starts, its result at the
end (`docs/tracking.md` has the table)."""

from __future__ import annotations

from typing import Any

from tuneforge.domain import JobSpec, MethodType


def hyperparameters(spec: JobSpec) -> dict[str, Any]:
    """As requested ("auto" kept): the resolved ones are known, and sent, at the end."""
    values = spec.hyperparameters.model_dump()
    if spec.method != MethodType.DPO:
        values.pop("beta", None)
    return values


def config(spec: JobSpec) -> dict[str, Any]:
    return {
        "job_id": spec.job_id, "model": spec.model, "base_model": spec.base_model,
        "method": spec.method.value, "seed": spec.seed, "suffix": spec.suffix,
        "training_file": spec.training_file, "validation_file": spec.validation_file,
        "lora": spec.lora.model_dump(mode="json"),
        "training": spec.training.model_dump(mode="json", exclude_none=True),
        "parent_model": spec.parent.model if spec.parent is not None else None,
    }


def final_result(result: Any, model_name: str, *, cancelled: bool) -> dict[str, Any]:
    """The end of training: `result` is the training library's `TrainResult`, or None when
    training raised (a failed run) or was cancelled before it returned."""
    if result is None:
        return {"status": "cancelled" if cancelled else "failed", "fine_tuned_model": None}
    return {
        "status": result.status,
        "fine_tuned_model": model_name if result.status == "succeeded" else None,
        "trained_tokens": result.trained_tokens,
        "tuning": result.tuning.value,
        "hyperparameters": result.hyperparameters.model_dump(exclude_none=True),
        "training": result.training.model_dump(mode="json")
        if result.training is not None else None,
    }
