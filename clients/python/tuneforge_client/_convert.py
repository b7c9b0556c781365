"""`tuneforge.v1` messages to the package's types, and request dicts to messages."""

from __future__ import annotations

from typing import Any

from google.protobuf import struct_pb2
from google.protobuf.json_format import MessageToDict

import tuneforge_client._pb.tuneforge.v1.fine_tuning_pb2 as ft_pb2
from tuneforge_client import types as t
from tuneforge_client._pb.tuneforge.v1 import (
    files_pb2,
    models_pb2,
)
from tuneforge_client.errors import BadRequestError


def _opt(message: Any, name: str) -> Any:
    return getattr(message, name) if message.HasField(name) else None


# ---- responses ---------------------------------------------------------------------------


def file(m: files_pb2.File) -> t.FileObject:
    return t.FileObject(id=m.id, bytes=m.bytes, created_at=m.created_at, filename=m.filename,
                        purpose=m.purpose, status=m.status, expires_at=_opt(m, "expires_at"),
                        status_details=_opt(m, "status_details"))


def file_deleted(m: files_pb2.FileDeleted) -> t.FileDeleted:
    return t.FileDeleted(id=m.id, deleted=m.deleted)


def page(m: Any, item: Any) -> t.Page[Any]:
    return t.Page(data=[item(x) for x in m.data], has_more=m.has_more,
                  first_id=_opt(m, "first_id"), last_id=_opt(m, "last_id"))


def _auto(m: Any, name: str) -> Any:
    if not m.HasField(name):
        return None
    value = getattr(m, name)
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    return "auto" if kind == "auto" else value.number


def hyperparameters(m: ft_pb2.Hyperparameters) -> t.Hyperparameters:
    return t.Hyperparameters(batch_size=_auto(m, "batch_size"),
                             learning_rate_multiplier=_auto(m, "learning_rate_multiplier"),
                             n_epochs=_auto(m, "n_epochs"))


def method(m: ft_pb2.Method) -> t.Method:
    supervised = dpo = None
    if m.HasField("supervised"):
        supervised = t.SupervisedMethod(hyperparameters(m.supervised.hyperparameters))
    if m.HasField("dpo"):
        h = m.dpo.hyperparameters
        dpo = t.DpoMethod(t.DpoHyperparameters(
            batch_size=_auto(h, "batch_size"),
            learning_rate_multiplier=_auto(h, "learning_rate_multiplier"),
            n_epochs=_auto(h, "n_epochs"), beta=_auto(h, "beta")))
    return t.Method(type=m.type, supervised=supervised, dpo=dpo)  # type: ignore[arg-type]


def lora(m: ft_pb2.Lora) -> t.Lora:
    which = m.WhichOneof("target_modules")
    targets: str | list[str] = (list(m.target_modules_list.values)
                                if which == "target_modules_list" else m.target_modules_preset)
    return t.Lora(rank=m.rank, alpha=m.alpha, dropout=m.dropout, target_modules=targets,
                  quantization=m.quantization)


def _integration(m: ft_pb2.Integration) -> t.Integration:
    return t.Integration(type=m.type, wandb=t.Wandb(  # type: ignore[arg-type]
        project=m.wandb.project, entity=_opt(m.wandb, "entity"), name=_opt(m.wandb, "name"),
        tags=list(m.wandb.tags) or None))


def job(m: ft_pb2.FineTuningJob) -> t.FineTuningJob:
    error = (t.JobError(code=m.error.code, message=m.error.message,
                        param=_opt(m.error, "param")) if m.HasField("error") else None)
    return t.FineTuningJob(
        id=m.id, created_at=m.created_at, hyperparameters=hyperparameters(m.hyperparameters),
        model=m.model, organization_id=m.organization_id, seed=m.seed,
        status=m.status, training_file=m.training_file,  # type: ignore[arg-type]
        method=method(m.method), lora=lora(m.lora), result_files=list(m.result_files),
        error=error, fine_tuned_model=_opt(m, "fine_tuned_model"),
        finished_at=_opt(m, "finished_at"), trained_tokens=_opt(m, "trained_tokens"),
        validation_file=_opt(m, "validation_file"),
        estimated_finish=_opt(m, "estimated_finish"),
        integrations=[_integration(i) for i in m.integrations] or None,
        metadata=dict(m.metadata) or None, suffix=_opt(m, "suffix"),
    )


def _number(value: Any) -> Any:
    """Struct numbers are doubles: give integral ones back as ints, as the JSON has them."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _number(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_number(v) for v in value]
    return value


def struct(m: struct_pb2.Struct) -> dict[str, Any]:
    return _number(MessageToDict(m))  # type: ignore[no-any-return]


def event(m: ft_pb2.JobEvent) -> t.FineTuningJobEvent:
    return t.FineTuningJobEvent(
        id=m.id, created_at=m.created_at, level=m.level,  # type: ignore[arg-type]
        message=m.message, type=m.type,  # type: ignore[arg-type]
        data=struct(m.data) if m.HasField("data") else None)


def checkpoint(m: ft_pb2.Checkpoint) -> t.FineTuningJobCheckpoint:
    metrics = t.CheckpointMetrics(**{f.name: _opt(m.metrics, f.name)
                                     for f in m.metrics.DESCRIPTOR.fields})
    return t.FineTuningJobCheckpoint(
        id=m.id, created_at=m.created_at,
        fine_tuned_model_checkpoint=m.fine_tuned_model_checkpoint,
        fine_tuning_job_id=m.fine_tuning_job_id, metrics=metrics, step_number=m.step_number)


def model(m: models_pb2.Model) -> t.Model:
    return t.Model(id=m.id, created=m.created, owned_by=m.owned_by)


def model_deleted(m: models_pb2.ModelDeleted) -> t.ModelDeleted:
    return t.ModelDeleted(id=m.id, deleted=m.deleted)


# ---- requests ----------------------------------------------------------------------------


def _bad(param: str, value: Any, expected: str) -> BadRequestError:
    return BadRequestError(f"Invalid value for '{param}': expected {expected}, got {value!r}",
                           param=param, code="invalid_value")


def _set_auto(target: Any, value: Any, param: str, integer: bool) -> None:
    if value == "auto":
        target.auto = True
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(param, value, "\"auto\" or a number")
    elif integer and not float(value).is_integer():
        raise _bad(param, value, "\"auto\" or an integer")
    else:
        target.number = int(value) if integer else float(value)


_INTEGER = {"batch_size": True, "n_epochs": True, "learning_rate_multiplier": False,
            "beta": False}


def _hyperparameters(target: Any, values: dict[str, Any], param: str) -> None:
    allowed = {f.name for f in target.DESCRIPTOR.fields}
    for name, value in values.items():
        if name not in allowed:
            raise BadRequestError(f"Unknown parameter '{param}.{name}'.",
                                  param=f"{param}.{name}", code="invalid_value")
        if value is not None:
            _set_auto(getattr(target, name), value, f"{param}.{name}", _INTEGER[name])


def _method(values: dict[str, Any]) -> ft_pb2.Method:
    result = ft_pb2.Method(type=values.get("type") or "")
    if values.get("supervised") is not None:
        result.supervised.SetInParent()
        _hyperparameters(result.supervised.hyperparameters,
                         values["supervised"].get("hyperparameters") or {},
                         "method.supervised.hyperparameters")
    if values.get("dpo") is not None:
        result.dpo.SetInParent()
        _hyperparameters(result.dpo.hyperparameters, values["dpo"].get("hyperparameters") or {},
                         "method.dpo.hyperparameters")
    if values.get("reinforcement") is not None:
        result.reinforcement.update(values["reinforcement"])
    return result


def _lora(values: dict[str, Any]) -> ft_pb2.Lora:
    result = ft_pb2.Lora()
    for name, value in values.items():
        if value is None:
            continue
        if name == "target_modules":
            if isinstance(value, str):
                result.target_modules_preset = value
            else:
                result.target_modules_list.values.extend(value)
        elif name in ("rank", "alpha", "dropout", "quantization"):
            try:
                setattr(result, name, value)
            except (TypeError, ValueError) as exc:
                raise _bad(f"lora.{name}", value, "a number" if name != "quantization"
                           else "a string") from exc
        else:
            raise BadRequestError(f"Unknown parameter 'lora.{name}'.", param=f"lora.{name}",
                                  code="invalid_value")
    return result


def _integration_request(values: dict[str, Any]) -> ft_pb2.Integration:
    wandb = values.get("wandb") or {}
    return ft_pb2.Integration(type=values.get("type", "wandb"), wandb=ft_pb2.WandbIntegration(
        project=wandb.get("project", ""), entity=wandb.get("entity"), name=wandb.get("name"),
        tags=wandb.get("tags") or []))


def create_job_request(body: dict[str, Any]) -> ft_pb2.CreateJobRequest:
    """The message for a `POST /v1/fine_tuning/jobs` JSON body."""
    request = ft_pb2.CreateJobRequest(model=body["model"], training_file=body["training_file"])
    for name in ("validation_file", "suffix", "seed"):
        if body.get(name) is not None:
            try:
                setattr(request, name, body[name])
            except (TypeError, ValueError) as exc:
                raise _bad(name, body[name], "an integer" if name == "seed"
                           else "a string") from exc
    if body.get("metadata"):
        request.metadata.update(body["metadata"])
    for integration in body.get("integrations") or []:
        request.integrations.append(_integration_request(integration))
    if body.get("method") is not None:
        request.method.CopyFrom(_method(body["method"]))
    if body.get("hyperparameters") is not None:
        request.hyperparameters.SetInParent()
        _hyperparameters(request.hyperparameters, body["hyperparameters"], "hyperparameters")
    if body.get("lora") is not None:
        request.lora.CopyFrom(_lora(body["lora"]))
    return request
