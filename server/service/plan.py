"""`POST /v1/fine_tuning/jobs/plan` (TuneForge extension): what a job with this body would do,
without creating it — no row, no event, no queue entry, no object in S3.

1. The body is checked exactly as job creation checks it (`JobService.check_request`): the
   same 400s and 404s, another organization's files included.
2. The files are downloaded into a private temporary directory (removed afterwards) and every
   line goes through the API-side validation's rules (`plan_data.check_file`), collecting each
   error with its line (up to `planning.max_errors` per file) instead of stopping at the first.
   Data errors do not make the plan fail: the plan reports them (`valid: false`).
3. Tokens are counted torch-free (`tuneforge.token_counts`) from the base model's files when
   they are on this machine (a local base model, or the model cache the worker fills).
4. For each planned device (`planning` settings) `plan_devices.plan_device` makes the worker's
   decisions: tuning and quantization, hyperparameters, training controls, memory, steps and
   duration.
5. The seeds' warnings (`plan_warnings`).
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from functools import lru_cache
from pathlib import Path

from server.auth import Principal
from server.service.context import Context
from server.service.jobs import CheckedJobRequest, JobService
from server.service.plan_data import FileReport, check_file
from server.service.plan_devices import JobData, configured_devices, plan_device
from server.service.plan_objects import (
    JobPlanObject,
    PlanDataError,
    PlanFile,
    PlanModelShape,
    PlanTokens,
)
from server.service.plan_warnings import plan_warnings
from server.service.requests import JobCreateRequest
from server.service.validation import INVALID_TRAINING_FILE, INVALID_VALIDATION_FILE
from tuneforge.domain import DpoHyperparameters, MethodType
from tuneforge.jsonl import MIN_TRAINING_EXAMPLES
from tuneforge.layout import file_key
from tuneforge.memory import ModelShape
from tuneforge.resolve import DEFAULT_MAX_SEQ_LENGTH
from tuneforge.settings import Settings
from tuneforge.token_counts import ChatTokenizer, TokenCountError


def local_model_dir(settings: Settings, name: str) -> Path | None:
    """The base model's directory on this machine, if it is here (as
    `server.service.lora_targets.known_modules` finds it): a local path as configured, else
    the model cache where the worker converts the embedded model and downloads S3 ones."""
    entry = settings.base_model(name)
    if entry is None:
        return None
    path = entry.path
    local = (Path(path).expanduser() if path and not path.startswith("s3://")
             else settings.effective_model_cache_dir / name)
    return local if (local / "config.json").is_file() else None


@lru_cache(maxsize=16)
def _shape(model_dir: str, _stamp: float) -> ModelShape:
    return ModelShape.from_dir(Path(model_dir))


def model_shape(model_dir: Path | None) -> ModelShape | None:
    if model_dir is None:
        return None
    try:
        return _shape(str(model_dir), (model_dir / "config.json").stat().st_mtime)
    except (OSError, ValueError, KeyError):
        return None


def chat_tokenizer(model_dir: Path | None) -> tuple[ChatTokenizer | None, str | None]:
    if model_dir is None:
        return None, "the base model's files are not on the API server yet (the worker " \
                     "prepares them with the first job)"
    try:
        return ChatTokenizer.from_dir(model_dir), None
    except TokenCountError as exc:
        return None, str(exc)


def _file_object(file_id: str, report: FileReport) -> PlanFile:
    tokens = None
    if report.tokens is not None:
        tokens = PlanTokens(**report.tokens.summary())
    return PlanFile(
        file_id=file_id, format=report.format, n_lines=report.n_lines,
        n_examples=len(report.examples), n_errors=report.n_errors,
        errors=[PlanDataError(line=e.line, code=e.code, message=e.message)
                for e in report.errors],
        errors_truncated=report.errors_truncated, tokens=tokens)


class PlanService:
    def __init__(self, ctx: Context, jobs: JobService) -> None:
        self.ctx = ctx
        self.jobs = jobs

    async def plan(self, principal: Principal, request: JobCreateRequest) -> JobPlanObject:
        checked = await self.jobs.check_request(principal, request)
        settings = self.ctx.settings
        model_dir = await asyncio.to_thread(local_model_dir, settings, checked.base_model)
        workdir = settings.data_dir / "plans" / uuid.uuid4().hex
        try:
            train, valid = await self._download(request, workdir)
            return await asyncio.to_thread(self._plan, request, checked, model_dir, train,
                                           valid)
        finally:
            await asyncio.to_thread(shutil.rmtree, workdir, True)

    async def _download(self, request: JobCreateRequest,
                        workdir: Path) -> tuple[Path, Path | None]:
        await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True, mode=0o700)
        train = workdir / "train.jsonl"
        await self.ctx.store.download_file(file_key(request.training_file), train)
        valid = None
        if request.validation_file:
            valid = workdir / "validation.jsonl"
            await self.ctx.store.download_file(file_key(request.validation_file), valid)
        return train, valid

    def _plan(self, request: JobCreateRequest, checked: CheckedJobRequest,
              model_dir: Path | None, train: Path, valid: Path | None) -> JobPlanObject:
        method = MethodType(checked.method)
        max_length = checked.training.max_seq_length or DEFAULT_MAX_SEQ_LENGTH
        tokenizer, token_problem = chat_tokenizer(model_dir)
        shape = model_shape(model_dir)
        train_report = check_file(train, method, min_examples=MIN_TRAINING_EXAMPLES,
                                  code=INVALID_TRAINING_FILE, tokenizer=tokenizer,
                                  max_seq_length=max_length,
                                  max_errors=self.ctx.settings.planning.max_errors)
        valid_report = None
        if valid is not None:
            valid_report = check_file(valid, method, min_examples=1,
                                      code=INVALID_VALIDATION_FILE, tokenizer=tokenizer,
                                      max_seq_length=max_length,
                                      max_errors=self.ctx.settings.planning.max_errors)
        job = JobData(
            method=method,
            hyperparameters=DpoHyperparameters(**checked.hyperparameters),
            lora=checked.lora, training=checked.training, shape=shape,
            n_examples=len(train_report.examples),
            n_validation_file_examples=(len(valid_report.examples)
                                        if valid_report is not None else None),
            train_tokens=train_report.tokens.processed() if train_report.tokens else None,
            validation_file_tokens=(valid_report.tokens.processed()
                                    if valid_report and valid_report.tokens else None))
        devices = [plan_device(job, d) for d in configured_devices(self.ctx.settings.planning)]
        token_problem = token_problem or train_report.token_error or (
            valid_report.token_error if valid_report else None)
        return JobPlanObject(
            model=request.model, base_model=checked.base_model,
            parent_model=checked.parent.model if checked.parent else None,
            method=method.value,
            valid=not train_report.n_errors and not (valid_report and valid_report.n_errors),
            training_data=_file_object(request.training_file, train_report),
            validation_data=(_file_object(request.validation_file or "", valid_report)
                             if valid_report else None),
            model_shape=(PlanModelShape(parameters=shape.n_params,
                                        hidden_size=shape.hidden_size, layers=shape.n_layers,
                                        vocab_size=shape.vocab_size) if shape else None),
            devices=devices,
            warnings=plan_warnings(job, train_report, valid_report, devices, token_problem))
