"""Between the service layer's OpenAI objects (pydantic) and the `tuneforge.v1` messages.

Responses: field for field, so the REST and gRPC views of one object are the same data.
Requests: a message becomes the same JSON-shaped dict the REST body would be, and the service
layer's request model validates it: the rules live in one place.
"""

from __future__ import annotations

from typing import Any

import tuneforge_client._pb.tuneforge.v1.fine_tuning_pb2 as ft_pb2
from google.protobuf import struct_pb2
from google.protobuf.json_format import MessageToDict
from tuneforge_client._pb.tuneforge.v1 import (
    files_pb2,
    models_pb2,
)

from server.service import objects as o

# ---- responses ---------------------------------------------------------------------------


def file(obj: o.FileObject) -> files_pb2.File:
    return files_pb2.File(
        id=obj.id, object=obj.object, bytes=obj.bytes, created_at=obj.created_at,
        expires_at=obj.expires_at, filename=obj.filename, purpose=obj.purpose, status=obj.status,
        status_details=obj.status_details,
    )


def file_list(page: o.ListPage[o.FileObject]) -> files_pb2.ListFilesResponse:
    return files_pb2.ListFilesResponse(
        object=page.object, data=[file(f) for f in page.data], has_more=page.has_more,
        first_id=page.first_id, last_id=page.last_id,
    )


def file_deleted(obj: o.FileDeleted) -> files_pb2.FileDeleted:
    return files_pb2.FileDeleted(id=obj.id, object=obj.object, deleted=obj.deleted)


def auto_int(value: int | str | None) -> ft_pb2.AutoInt | None:
    if value is None:
        return None
    return ft_pb2.AutoInt(auto=True) if value == "auto" else ft_pb2.AutoInt(number=int(value))


def auto_double(value: float | str | None) -> ft_pb2.AutoDouble | None:
    if value is None:
        return None
    if value == "auto":
        return ft_pb2.AutoDouble(auto=True)
    return ft_pb2.AutoDouble(number=float(value))


def hyperparameters(obj: o.HyperparametersObject) -> ft_pb2.Hyperparameters:
    return ft_pb2.Hyperparameters(
        batch_size=auto_int(obj.batch_size),
        learning_rate_multiplier=auto_double(obj.learning_rate_multiplier),
        n_epochs=auto_int(obj.n_epochs),
    )


def method(obj: o.MethodObject) -> ft_pb2.Method:
    result = ft_pb2.Method(type=obj.type)
    if obj.supervised is not None:
        result.supervised.CopyFrom(ft_pb2.SupervisedMethod(
            hyperparameters=hyperparameters(obj.supervised.hyperparameters)))
    if obj.dpo is not None:
        hp = obj.dpo.hyperparameters
        result.dpo.CopyFrom(ft_pb2.DpoMethod(hyperparameters=ft_pb2.DpoHyperparameters(
            batch_size=auto_int(hp.batch_size),
            learning_rate_multiplier=auto_double(hp.learning_rate_multiplier),
            n_epochs=auto_int(hp.n_epochs), beta=auto_double(hp.beta),
        )))
    return result


def lora(obj: o.LoraObject) -> ft_pb2.Lora:
    result = ft_pb2.Lora(rank=obj.rank, alpha=obj.alpha, dropout=obj.dropout,
                         quantization=obj.quantization)
    if isinstance(obj.target_modules, str):
        result.target_modules_preset = obj.target_modules
    else:
        result.target_modules_list.values.extend(obj.target_modules)
    return result


def integration(obj: o.IntegrationObject) -> ft_pb2.Integration:
    w = obj.wandb
    return ft_pb2.Integration(type=obj.type, wandb=ft_pb2.WandbIntegration(
        project=w.project, entity=w.entity, name=w.name, tags=w.tags or []))


def job(obj: o.FineTuningJobObject) -> ft_pb2.FineTuningJob:
    return ft_pb2.FineTuningJob(
        id=obj.id, object=obj.object, created_at=obj.created_at,
        error=ft_pb2.JobError(code=obj.error.code, message=obj.error.message,
                              param=obj.error.param) if obj.error else None,
        fine_tuned_model=obj.fine_tuned_model, finished_at=obj.finished_at,
        hyperparameters=hyperparameters(obj.hyperparameters), model=obj.model,
        organization_id=obj.organization_id, result_files=obj.result_files, seed=obj.seed,
        status=obj.status, trained_tokens=obj.trained_tokens, training_file=obj.training_file,
        validation_file=obj.validation_file, estimated_finish=obj.estimated_finish,
        integrations=[integration(i) for i in obj.integrations or []],
        metadata=obj.metadata or {}, method=method(obj.method), suffix=obj.suffix,
        lora=lora(obj.lora),
    )


def job_list(page: o.ListPage[o.FineTuningJobObject]) -> ft_pb2.ListJobsResponse:
    return ft_pb2.ListJobsResponse(
        object=page.object, data=[job(j) for j in page.data], has_more=page.has_more,
        first_id=page.first_id, last_id=page.last_id,
    )


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    result = struct_pb2.Struct()
    result.update(value)
    return result


def event(obj: o.JobEventObject) -> ft_pb2.JobEvent:
    return ft_pb2.JobEvent(
        id=obj.id, object=obj.object, created_at=obj.created_at, level=obj.level,
        message=obj.message, type=obj.type,
        data=struct(obj.data) if obj.data is not None else None,
    )


def event_list(page: o.ListPage[o.JobEventObject]) -> ft_pb2.ListJobEventsResponse:
    return ft_pb2.ListJobEventsResponse(
        object=page.object, data=[event(e) for e in page.data], has_more=page.has_more,
        first_id=page.first_id, last_id=page.last_id,
    )


def checkpoint(obj: o.CheckpointObject) -> ft_pb2.Checkpoint:
    return ft_pb2.Checkpoint(
        id=obj.id, object=obj.object, created_at=obj.created_at,
        fine_tuned_model_checkpoint=obj.fine_tuned_model_checkpoint,
        fine_tuning_job_id=obj.fine_tuning_job_id,
        metrics=ft_pb2.CheckpointMetrics(**obj.metrics.model_dump()),
        step_number=obj.step_number,
    )


def checkpoint_list(page: o.ListPage[o.CheckpointObject]) -> ft_pb2.ListJobCheckpointsResponse:
    return ft_pb2.ListJobCheckpointsResponse(
        object=page.object, data=[checkpoint(c) for c in page.data], has_more=page.has_more,
        first_id=page.first_id, last_id=page.last_id,
    )


def model(obj: o.ModelObject) -> models_pb2.Model:
    return models_pb2.Model(id=obj.id, object=obj.object, created=obj.created,
                            owned_by=obj.owned_by)


def model_list(page: o.ListPage[o.ModelObject]) -> models_pb2.ListModelsResponse:
    return models_pb2.ListModelsResponse(
        object=page.object, data=[model(m) for m in page.data], has_more=page.has_more,
        first_id=page.first_id, last_id=page.last_id,
    )


def model_deleted(obj: o.ModelDeleted) -> models_pb2.ModelDeleted:
    return models_pb2.ModelDeleted(id=obj.id, object=obj.object, deleted=obj.deleted)


# ---- requests ----------------------------------------------------------------------------


def _auto(message: ft_pb2.AutoInt | ft_pb2.AutoDouble) -> int | float | str | None:
    kind = message.WhichOneof("value")
    if kind is None:
        return None
    return "auto" if kind == "auto" else message.number


def _hyperparameters(message: Any, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: value for name in names if message.HasField(name)
            if (value := _auto(getattr(message, name))) is not None}


_SUPERVISED = ("batch_size", "learning_rate_multiplier", "n_epochs")


def _method(message: ft_pb2.Method) -> dict[str, Any]:
    result: dict[str, Any] = {"type": message.type}
    if message.HasField("supervised"):
        result["supervised"] = {"hyperparameters": _hyperparameters(
            message.supervised.hyperparameters, _SUPERVISED)}
    if message.HasField("dpo"):
        result["dpo"] = {"hyperparameters": _hyperparameters(
            message.dpo.hyperparameters, (*_SUPERVISED, "beta"))}
    if message.HasField("reinforcement"):
        result["reinforcement"] = MessageToDict(message.reinforcement)
    return result


def _lora(message: ft_pb2.Lora) -> dict[str, Any]:
    result: dict[str, Any] = {name: getattr(message, name)
                              for name in ("rank", "alpha", "dropout", "quantization")
                              if message.HasField(name)}
    which = message.WhichOneof("target_modules")
    if which == "target_modules_preset":
        result["target_modules"] = message.target_modules_preset
    elif which == "target_modules_list":
        result["target_modules"] = list(message.target_modules_list.values)
    return result


def _integration(message: ft_pb2.Integration) -> dict[str, Any]:
    wandb: dict[str, Any] = {"project": message.wandb.project}
    for name in ("entity", "name"):
        if message.wandb.HasField(name):
            wandb[name] = getattr(message.wandb, name)
    if message.wandb.tags:
        wandb["tags"] = list(message.wandb.tags)
    return {"type": message.type, "wandb": wandb}


def job_create(message: ft_pb2.CreateJobRequest) -> dict[str, Any]:
    """The JSON body `POST /v1/fine_tuning/jobs` would receive for this message."""
    body: dict[str, Any] = {"model": message.model, "training_file": message.training_file}
    for name in ("validation_file", "suffix", "seed"):
        if message.HasField(name):
            body[name] = getattr(message, name)
    if message.metadata:
        body["metadata"] = dict(message.metadata)
    if message.integrations:
        body["integrations"] = [_integration(i) for i in message.integrations]
    if message.HasField("method"):
        body["method"] = _method(message.method)
    if message.HasField("hyperparameters"):
        body["hyperparameters"] = _hyperparameters(message.hyperparameters, _SUPERVISED)
    if message.HasField("lora"):
        body["lora"] = _lora(message.lora)
    return body
