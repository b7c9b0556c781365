"""Runs one fine-tuning job on this worker: the bridge between the training library (local
paths, callbacks) and the control plane (DB state machine, S3, events).

The job is held under a lease renewed by a heartbeat, so it never trains on two workers at
once; cancel and pause are seen between training steps; a job whose worker died resumes from
its newest checkpoint in S3.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from server.service import Services
from tuneforge.domain import (
    EventLevel,
    EventType,
    FilePurpose,
    JobSpec,
    JobStatus,
    checkpoint_model_name,
    file_key,
    fine_tuned_model_name,
    job_prefix,
    new_id,
)

log = logging.getLogger(__name__)

KEEP_CHECKPOINTS = 3
MAX_LENGTH = 1024


def worker_identity() -> str:
    return f"{socket.gethostname()}:{uuid.uuid4().hex[:8]}"


class JobRunner:
    def __init__(self, services: Services, job_id: str, worker_id: str) -> None:
        self.services = services
        self.jobs = services.jobs
        self.store = services.ctx.store
        self.job_id = job_id
        self.worker_id = worker_id
        self.workdir = services.ctx.settings.data_dir / "work" / job_id
        self.stop_request: str | None = None  # "cancel" | "pause", read by the training thread
        self.loop = asyncio.get_running_loop()
        self.lease_seconds = services.ctx.settings.worker_lease_seconds

    # ---- entry point -------------------------------------------------------------------

    async def run(self) -> str:
        if not await self.jobs.claim(self.job_id, self.worker_id, self.lease_seconds):
            return "not claimed: another worker holds the job, or it has ended"
        heartbeat = asyncio.create_task(self._heartbeat())
        try:
            return await self._run_claimed()
        except asyncio.CancelledError:
            self.stop_request = self.stop_request or "cancel"
            raise
        except Exception as exc:  # never leave a job stuck in `running`
            log.exception("job %s failed", self.job_id)
            await self.jobs.fail(
                self.job_id,
                code="internal_error",
                message=f"The worker hit an unexpected error: {exc}",
                worker_id=self.worker_id,
            )
            return "failed"
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            await self.jobs.release(self.job_id, self.worker_id)
            await asyncio.to_thread(shutil.rmtree, self.workdir, True)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                status = await self.jobs.heartbeat(self.job_id, self.worker_id, self.lease_seconds)
            except Exception:
                log.warning("heartbeat failed for %s", self.job_id, exc_info=True)
                continue
            if status is None:
                self.stop_request = "cancel"  # lost the lease: stop, another worker owns it
            elif status == JobStatus.CANCELLED:
                self.stop_request = "cancel"
            elif status == JobStatus.PAUSED:
                self.stop_request = "pause"

    async def _run_claimed(self) -> str:
        spec = await self.jobs.spec(self.job_id)
        status = await self.jobs.status(self.job_id)
        if spec is None or status not in (
            JobStatus.VALIDATING_FILES,
            JobStatus.QUEUED,
            JobStatus.RUNNING,
        ):
            return f"nothing to do: job is {status}"
        from trainer.errors import DataError, TrainingError

        try:
            train_path, valid_path = await self._download_files(spec)
            model_dir = await self._base_model(spec)
            await self._validate(
                spec, train_path, valid_path, model_dir, report=status == JobStatus.VALIDATING_FILES
            )
        except DataError as exc:
            param = "validation_file" if exc.code == "invalid_validation_file" else "training_file"
            await self.jobs.fail(
                self.job_id,
                code=exc.code,
                message=exc.message,
                param=param,
                worker_id=self.worker_id,
            )
            return "failed: invalid data"
        if status == JobStatus.VALIDATING_FILES and not await self.jobs.advance(
            self.job_id,
            [JobStatus.VALIDATING_FILES],
            JobStatus.QUEUED,
            message="Files validated, moving job to queued state",
            worker_id=self.worker_id,
        ):
            return "stopped before training"
        if not await self.jobs.advance(
            self.job_id,
            [JobStatus.QUEUED, JobStatus.RUNNING],
            JobStatus.RUNNING,
            message="Fine-tuning job started",
            worker_id=self.worker_id,
        ):
            return "stopped before training"
        try:
            return await self._train(spec, model_dir, train_path, valid_path)
        except TrainingError as exc:
            await self.jobs.fail(
                self.job_id, code=exc.code, message=exc.message, worker_id=self.worker_id
            )
            return f"failed: {exc.code}"

    # ---- stages ------------------------------------------------------------------------

    async def _download_files(self, spec: JobSpec) -> tuple[Path, Path | None]:
        train_path = self.workdir / "data" / "train.jsonl"
        await self.store.download_file(file_key(spec.training_file), train_path)
        valid_path = None
        if spec.validation_file:
            valid_path = self.workdir / "data" / "validation.jsonl"
            await self.store.download_file(file_key(spec.validation_file), valid_path)
        return train_path, valid_path

    async def _base_model(self, spec: JobSpec) -> Path:
        from trainer.base_models import prepare_base_model

        entry = self.services.ctx.settings.base_model(spec.model)
        path = entry.path if entry else ""
        cache = self.services.ctx.settings.effective_model_cache_dir
        if path.startswith("s3://"):
            local = cache / spec.model
            if not local.exists():
                bucket_prefix = path.removeprefix("s3://").split("/", 1)[1]
                tmp = cache / f".{spec.model}.{uuid.uuid4().hex[:6]}"
                await self.store.download_prefix(bucket_prefix, tmp)
                await asyncio.to_thread(tmp.rename, local)
            path = str(local)
        return await asyncio.to_thread(prepare_base_model, spec.model, path, cache)

    async def _validate(
        self,
        spec: JobSpec,
        train_path: Path,
        valid_path: Path | None,
        model_dir: Path,
        *,
        report: bool,
    ) -> None:
        from trainer.data import load_dataset_file
        from trainer.errors import INVALID_VALIDATION_FILE, DataError

        data = await asyncio.to_thread(load_dataset_file, train_path, spec.method)
        if valid_path is not None:
            try:
                await asyncio.to_thread(load_dataset_file, valid_path, spec.method, min_examples=1)
            except DataError as exc:
                raise DataError(INVALID_VALIDATION_FILE, exc.message, exc.line) from exc
        if not report:
            return
        summary = await asyncio.to_thread(_data_report, data, model_dir)
        tokens = summary.get("tokens_per_example") or {}
        await self.jobs.add_event(
            self.job_id,
            f"Training file: {summary.get('n_examples')} examples in format "
            f"{summary.get('format')}; tokens per example min {tokens.get('min')}, "
            f"median {tokens.get('median')}, max {tokens.get('max')}",
            data=summary,
        )
        for warning in summary.get("warnings", []):
            await self.jobs.add_event(
                self.job_id, f"Data warning: {warning}", level=EventLevel.WARN
            )

    async def _train(
        self, spec: JobSpec, model_dir: Path, train_path: Path, valid_path: Path | None
    ) -> str:
        from trainer.train import TrainCallbacks, train

        served_name = spec.model
        model_name = fine_tuned_model_name(
            spec.model, spec.organization_id, spec.suffix, spec.job_id
        )
        resume_from = await self._latest_checkpoint()
        if resume_from is not None:
            await self.jobs.add_event(self.job_id, f"Resuming from checkpoint {resume_from.name}")
        callbacks = TrainCallbacks(
            on_message=lambda message, level: self._call(
                self.jobs.add_event(self.job_id, message, level=EventLevel(level))
            ),
            on_metrics=lambda metrics: self._call(self._metrics(metrics)),
            on_checkpoint=lambda step, path, metrics: self._call(
                self._checkpoint(step, path, metrics, model_name)
            ),
            should_stop=lambda: self.stop_request,
        )
        output_dir = self.workdir / "output"
        training = asyncio.ensure_future(
            asyncio.to_thread(
                train,
                spec,
                model_dir,
                train_path,
                valid_path,
                output_dir,
                callbacks,
                served_model_name=served_name,
                resume_from=resume_from,
                max_length=MAX_LENGTH,
            )
        )
        try:
            result = await asyncio.shield(training)
        except asyncio.CancelledError:  # arq aborted the task: stop the thread, then leave
            self.stop_request = "cancel"
            with contextlib.suppress(Exception):
                await training
            raise
        await self.jobs.update_progress(
            self.job_id,
            resolved_hyperparameters=result.hyperparameters.model_dump(),
            trained_tokens=result.trained_tokens,
        )
        if result.status != "succeeded":
            return result.status  # paused or cancelled: the state was changed by the user
        return await self._publish(spec, result, model_name)

    async def _publish(self, spec: JobSpec, result: Any, model_name: str) -> str:
        prefix = job_prefix(spec.job_id)
        await self.jobs.add_event(self.job_id, "Training finished; uploading the adapter")
        await self.store.upload_dir(result.adapter_dir, f"{prefix}/adapter")
        if result.merged_dir is not None:
            await self.store.upload_dir(result.merged_dir, f"{prefix}/merged")
        result_files = []
        if result.results_csv is not None:
            file_id = new_id("file-")
            data = await asyncio.to_thread(Path(result.results_csv).read_bytes)
            await self.store.put_bytes(file_key(file_id), data, "text/csv")
            await self.store.put_bytes(f"{prefix}/results.csv", data, "text/csv")
            await self.services.files.record(
                spec.organization_id,
                file_id,
                "step_metrics.csv",
                FilePurpose.FINE_TUNE_RESULTS,
                len(data),
            )
            result_files.append(file_id)
        await self._make_servable(spec, model_name)
        if await self.jobs.succeed(
            self.job_id,
            fine_tuned_model=model_name,
            result_files=result_files,
            trained_tokens=result.trained_tokens,
            worker_id=self.worker_id,
        ):
            return "succeeded"
        return "finished, but the job was cancelled meanwhile"

    async def _make_servable(self, spec: JobSpec, model_name: str) -> None:
        """Hook for the serving plane: load the adapter on every replica before success."""
        try:
            from serving.hotload import make_servable
        except ImportError:
            return
        seconds = await make_servable(
            self.services.ctx.settings,
            self.store,
            model_name=model_name,
            base_model=spec.model,
            adapter_prefix=f"{job_prefix(spec.job_id)}/adapter",
        )
        if seconds is not None:
            await self.jobs.add_event(
                self.job_id,
                f"Model {model_name} is ready: first token {seconds * 1000:.0f} ms "
                "after training ended",
                data={"ready_seconds": seconds},
            )

    # ---- callbacks from the training thread ----------------------------------------------

    def _call(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    async def _metrics(self, metrics: dict[str, Any]) -> None:
        progress = {
            k: metrics[k]
            for k in ("trained_tokens", "estimated_finish")
            if metrics.get(k) is not None
        }
        if progress:
            await self.jobs.update_progress(self.job_id, **progress)
        fields = {k: v for k, v in metrics.items() if k not in progress}
        parts = [
            f"{k}={v:.4f}"
            for k, v in fields.items()
            if k.endswith(("loss", "accuracy")) and isinstance(v, int | float)
        ]
        await self.jobs.add_event(
            self.job_id,
            f"Step {fields.get('step')}/{fields.get('total_steps')}: " + ", ".join(parts),
            type=EventType.METRICS,
            data=fields,
        )

    async def _checkpoint(
        self, step: int, path: Path, metrics: dict[str, Any], model_name: str
    ) -> None:
        prefix = f"{job_prefix(self.job_id)}/checkpoints/step-{step}"
        await self.store.upload_dir(path, prefix)
        await self.jobs.add_checkpoint(
            self.job_id,
            step=step,
            metrics={
                "step": step,
                **{k: v for k, v in metrics.items() if k in _CHECKPOINT_METRICS},
            },
            model_name=checkpoint_model_name(model_name, step),
        )
        for old in (await self.jobs.checkpoints(self.job_id))[:-KEEP_CHECKPOINTS]:
            await self.store.delete_prefix(
                f"{job_prefix(self.job_id)}/checkpoints/step-{old.step_number}/"
            )
            await self.jobs.remove_checkpoint(old.id)

    async def _latest_checkpoint(self) -> Path | None:
        checkpoints = await self.jobs.checkpoints(self.job_id)
        if not checkpoints:
            return None
        step = checkpoints[-1].step_number
        local = self.workdir / "resume" / f"step-{step}"
        found = await self.store.download_prefix(
            f"{job_prefix(self.job_id)}/checkpoints/step-{step}", local
        )
        return local if found else None


_CHECKPOINT_METRICS = frozenset(
    {
        "train_loss",
        "train_mean_token_accuracy",
        "valid_loss",
        "valid_mean_token_accuracy",
        "full_valid_loss",
        "full_valid_mean_token_accuracy",
    }
)


def _data_report(data: Any, model_dir: Path) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from trainer.data_report import build_report

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return build_report(data, tokenizer, MAX_LENGTH)
