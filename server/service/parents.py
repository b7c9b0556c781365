"""`model: "ft:…"` on job creation: continuing from one of the caller's own fine-tuned models
or checkpoints, resolved to its base model and the adapter to start from before anything is
stored or queued.

Another organization's model and a model that never existed get the same answer: nothing in
an error may tell a caller that a name exists elsewhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from server.auth import Principal
from server.db.models import FineTunedModel, Job, JobCheckpoint
from server.service.context import Context
from tuneforge.domain import FULL_WEIGHT_TUNINGS, LoraConfig, ParentModel, TuningType
from tuneforge.errors import invalid
from tuneforge.layout import adapter_prefix, as_dir, checkpoint_prefix

_CHECKPOINT = re.compile(r"^(?P<model>ft:.+):ckpt-step-(?P<step>\d+)$")


@dataclass(frozen=True)
class ResolvedParent:
    parent: ParentModel
    base_model: str
    lora: LoraConfig  # the parent adapter's shape: the new adapter continues it


def not_available(settings: Any, model: str) -> Exception:
    available = ", ".join(m.name for m in settings.base_models)
    return invalid(f"Model '{model}' is not available for fine-tuning. Available base models: "
                   f"{available}; or one of your own fine-tuned models (ft:…) or their "
                   "checkpoints (ft:…:ckpt-step-N).",
                   param="model", code="model_not_available")


def job_tuning(job: Job) -> TuningType:
    """What a job trained: as the worker resolved it, else as requested (lora by default)."""
    for values in (job.resolved_training, job.training):
        tuning = (values or {}).get("tuning")
        if tuning and tuning != TuningType.AUTO:
            return TuningType(tuning)
    return TuningType.LORA


async def resolve_parent(ctx: Context, principal: Principal, model: str) -> ResolvedParent:
    """The caller's own `ft:` model or checkpoint `model` → its job, base model and weights;
    400 (`param: model`) when it is not theirs, deleted, pruned, or a full-weight model."""
    match = _CHECKPOINT.match(model)
    tuned_name, step = (match["model"], int(match["step"])) if match else (model, None)
    org = principal.organization_id
    async with ctx.sessions() as session:
        tuned = (await session.execute(
            select(FineTunedModel).where(FineTunedModel.id == tuned_name,
                                         FineTunedModel.organization_id == org)
        )).scalar_one_or_none()
        if tuned is not None and tuned.deleted_at is not None:
            raise invalid(f"Model '{tuned_name}' was deleted; a job cannot start from it or "
                          "its checkpoints.", param="model", code="model_deleted")
        checkpoint: JobCheckpoint | None = None
        if step is not None:
            stmt = select(JobCheckpoint).join(Job, Job.id == JobCheckpoint.job_id).where(
                Job.organization_id == org, JobCheckpoint.step_number == step)
            # The checkpoint of the model's job; a job that never succeeded has checkpoints
            # but no model row, and those are found by their name.
            stmt = stmt.where(JobCheckpoint.job_id == tuned.job_id) if tuned is not None \
                else stmt.where(JobCheckpoint.fine_tuned_model_checkpoint == model)
            checkpoint = (await session.execute(stmt.limit(1))).scalar_one_or_none()
            if checkpoint is None and tuned is None:
                raise not_available(ctx.settings, model)
        elif tuned is None:
            raise not_available(ctx.settings, model)
        job_id = tuned.job_id if tuned is not None else checkpoint.job_id  # type: ignore[union-attr]
        job = (await session.execute(select(Job).where(Job.id == job_id))).scalar_one()
    if step is not None and checkpoint is None:
        raise invalid(f"Model '{tuned_name}' has no checkpoint at step {step}; list its "
                      "checkpoints with GET /v1/fine_tuning/jobs/{id}/checkpoints.",
                      param="model", code="checkpoint_not_found")
    tuning = TuningType(tuned.tuning) if tuned is not None and tuned.tuning else job_tuning(job)
    if tuning in FULL_WEIGHT_TUNINGS:
        raise invalid(f"Model '{model}' was trained with tuning '{tuning}' (full weights); "
                      "continuing from a full-weight model is not supported. Start from its "
                      "base model, or from a LoRA/QLoRA fine-tuned model.",
                      param="model", code="unsupported_parent")
    if step is not None:
        weights = checkpoint_prefix(job.id, step)
        # Old checkpoints are pruned from the store while their rows stay listed.
        if not await ctx.store.list_keys(as_dir(weights)):
            raise invalid(f"Checkpoint '{model}' is no longer stored (older checkpoints are "
                          "pruned); start from a later checkpoint or the final model.",
                          param="model", code="checkpoint_not_found")
    else:
        weights = adapter_prefix(job.id)
    base_model = tuned.base_model if tuned is not None else (job.base_model or job.model)
    if ctx.settings.base_model(base_model) is None:
        raise invalid(f"Model '{model}' was trained from base model '{base_model}', which is "
                      "no longer available for fine-tuning.",
                      param="model", code="model_not_available")
    parent = ParentModel(model=model, job_id=job.id, step=step, tuning=tuning,
                         weights_prefix=weights)
    return ResolvedParent(parent=parent, base_model=base_model, lora=LoraConfig(**job.lora))
