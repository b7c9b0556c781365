"""Runs one fine-tuning job on this worker: the bridge between the training library (local
paths, callbacks) and the control plane (the job protocol in the DB, S3, events).

The job is held under a lease renewed by a heartbeat, so it never trains on two workers at
once. A watcher reads the job's status every `worker_control_poll_seconds`, so a cancel or
pause reaches the training loop within a step plus that. Every write of the run (events,
progress, checkpoints, the results file, the serving request, success) is fenced by the lease:
a run that lost it stops at its next step and writes nothing. A job whose worker died resumes
from its newest checkpoint in S3.

The training thread never waits on a write: events and metrics go to an ordered writer on
the event loop, and a checkpoint the Trainer saved is moved out of its reach and uploaded in
the background while training goes on (`trainer.run_writes`). The run waits for all of them
before it publishes, pauses or ends; a write that fails stops the run as if it had failed on
the training thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from server.job_protocol import JobProtocol, LeaseLost, ResultsFile
from server.observability import tracing
from server.storage import ObjectStore, StorageUnavailable
from trainer import worker_metrics
from trainer.run_writes import BackgroundWrites
from trainer.stop import StopRequest
from tuneforge.domain import (
    FULL_WEIGHT_TUNINGS,
    UNPUBLISHED_STATUSES,
    EventLevel,
    EventType,
    JobSpec,
    JobStatus,
    checkpoint_model_name,
    fine_tuned_model_name,
    new_id,
)
from tuneforge.layout import (
    adapter_prefix,
    as_dir,
    checkpoint_prefix,
    file_key,
    merged_prefix,
    published_prefixes,
    results_key,
)
from tuneforge.resolve import DEFAULT_MAX_SEQ_LENGTH
from tuneforge.settings import Settings

if TYPE_CHECKING:  # the worker imports the training library only when it runs a job
    from trainer.data import ValidatedFiles
    from trainer.tracking import TrackingFanOut

log = logging.getLogger(__name__)

KEEP_CHECKPOINTS = 3
SERVING_POLL_SECONDS = 0.2


def worker_identity() -> str:
    return f"{socket.gethostname()}:{uuid.uuid4().hex[:8]}"


class JobRunner:
    def __init__(self, jobs: JobProtocol, store: ObjectStore, settings: Settings, job_id: str,
                 worker_id: str) -> None:
        self.jobs = jobs
        self.store = store
        self.settings = settings
        self.job_id = job_id
        self.worker_id = worker_id
        # One directory per run: a run that lost its lease must not clean up the files of the
        # run that took the job over on the same host.
        self.workdir = settings.data_dir / "work" / job_id / f"run-{uuid.uuid4().hex[:8]}"
        self.stop_request: StopRequest | None = None  # read by the training thread
        self.lease_lost = False
        self.loop = asyncio.get_running_loop()
        self.lease_seconds = settings.worker_lease_seconds
        self.poll_seconds = settings.worker_control_poll_seconds
        self.writes: BackgroundWrites | None = None  # while training runs

    # ---- entry point -------------------------------------------------------------------

    async def run(self) -> str:
        if not await self.jobs.claim(self.job_id, self.worker_id, self.lease_seconds):
            return "not claimed: another worker holds the job, or it has ended"
        watcher = asyncio.create_task(self._watch())
        # arq cancels this task on a user's cancel (abort) and on worker shutdown. An await
        # cut short there would leave an S3 upload running in its thread after the cleanup, so
        # the run is shielded: it winds down through its own checks (the training loop stops
        # at its next step; publishing stops before it records anything) and then ends.
        work = asyncio.ensure_future(self._run_claimed())
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            self.stop_request = self.stop_request or StopRequest.CANCEL
            with contextlib.suppress(Exception):
                await work
            with contextlib.suppress(Exception):
                await self._remove_outputs_if_ended()
            raise
        except StorageUnavailable:
            return await self._storage_outage()
        except LeaseLost:
            self._lose_lease()
            log.warning("job %s: lost the lease; this run stopped and wrote nothing more",
                        self.job_id)
            return "stopped: lost the lease"
        except Exception as exc:  # never leave a job stuck in `running`
            if self.lease_lost:
                return "stopped: lost the lease"
            reference = uuid.uuid4().hex[:8]
            log.exception("job %s failed (reference %s)", self.job_id, reference)
            await self.jobs.fail(
                self.job_id,
                code="internal_error",
                message=_internal_error_message(exc, reference),
                worker_id=self.worker_id,
            )
            return "failed"
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await self.jobs.release(self.job_id, self.worker_id)
            await asyncio.to_thread(shutil.rmtree, self.workdir, True)
            with contextlib.suppress(OSError):  # the job's directory, once no run uses it
                self.workdir.parent.rmdir()

    async def _storage_outage(self) -> str:
        """Object storage stayed unreachable through the store's retries. A training run
        pauses (resume continues from its last checkpoint); a job not yet training fails."""
        message = "Object storage was unreachable for too long; "
        if await self.jobs.advance(
            self.job_id, [JobStatus.RUNNING], JobStatus.PAUSED, worker_id=self.worker_id,
            message=message + "the job is paused. Resume it once storage is back: it continues "
                              "from its last checkpoint.", estimated_finish=None,
        ):
            return "paused: object storage unavailable"
        await self.jobs.fail(self.job_id, code="storage_unavailable",
                             message=message + "create the job again once storage is back.",
                             worker_id=self.worker_id)
        return "failed: object storage unavailable"

    async def _watch(self) -> None:
        """Read the job's status every poll interval and renew the lease every third of its
        length; turn what it finds into a stop request for the training loop."""
        last_renewal = last_answer = self.loop.time()
        while True:
            await asyncio.sleep(self.poll_seconds)
            try:
                if self.loop.time() - last_renewal >= self.lease_seconds / 3:
                    status = await self.jobs.heartbeat(
                        self.job_id, self.worker_id, self.lease_seconds)
                    last_renewal = self.loop.time()
                else:
                    status = await self.jobs.control(self.job_id, self.worker_id)
                last_answer = self.loop.time()
            except Exception:
                log.warning("lease check failed for %s", self.job_id, exc_info=True)
                if self.loop.time() - last_answer >= self.lease_seconds:
                    self._lose_lease()  # the lease has lapsed by now: another worker may run it
                continue
            self._observe(status)

    def _observe(self, status: JobStatus | None) -> None:
        if status is None or status in (JobStatus.SUCCEEDED, JobStatus.FAILED):
            self._lose_lease()
        elif status == JobStatus.CANCELLED:
            self.stop_request = StopRequest.CANCEL
        elif status == JobStatus.PAUSED:
            self.stop_request = self.stop_request or StopRequest.PAUSE

    def _lose_lease(self) -> None:
        self.lease_lost = True
        self.stop_request = StopRequest.CANCEL  # stop at the next step and save nothing

    async def _still_running(self) -> bool:
        """The run may go on writing: it holds a live lease and the job is `running`."""
        status = await self.jobs.control(self.job_id, self.worker_id)
        self._observe(status)
        return status == JobStatus.RUNNING and not self.lease_lost

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
            with tracing.span("job.validate"):
                train_path, valid_path = await self._download_files(spec)
                model_dir = await self._base_model(spec)
                # The data report goes out once, on a job's first run (the API validated its
                # files and queued it; a resumed or requeued job has checkpoints).
                first_run = (status == JobStatus.VALIDATING_FILES
                             or not await self.jobs.checkpoints(self.job_id))
                files = await self._validate(spec, train_path, valid_path, model_dir,
                                             report=first_run)
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
        except TrainingError as exc:  # the base model cannot be prepared
            await self.jobs.fail(self.job_id, code=exc.code, message=exc.message, param="model",
                                 worker_id=self.worker_id)
            return f"failed: {exc.code}"
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
            parent_dir = await self._download_parent(spec)
            return await self._train(spec, model_dir, train_path, valid_path, files,
                                     parent_dir)
        except TrainingError as exc:
            await self.jobs.fail(
                self.job_id, code=exc.code, message=exc.message, worker_id=self.worker_id
            )
            return f"failed: {exc.code}"
        except DataError as exc:  # an example the chat template cannot mask (validation file)
            param = "validation_file" if exc.code == "invalid_validation_file" else "training_file"
            await self.jobs.fail(self.job_id, code=exc.code, message=exc.message, param=param,
                                 worker_id=self.worker_id)
            return "failed: invalid data"

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
        """The served base model's directory (`spec.model` may be a fine-tuned parent). One
        this worker cannot prepare fails the job with `base_model_unavailable`; the reason,
        which names this machine's paths, goes to the log only."""
        from trainer.errors import TrainingError
        from tuneforge.base_models import BaseModelError, base_model_directory

        try:
            return await asyncio.to_thread(base_model_directory, self.settings,
                                           spec.base_model)
        except BaseModelError as exc:
            log.error("job %s: base model %s cannot be prepared: %s", self.job_id,
                      spec.base_model, exc)
            raise TrainingError(
                "base_model_unavailable",
                f"Base model '{spec.base_model}' is not available on the worker that took "
                "this job (its files are missing or incomplete); ask the operator to check "
                "its registration.") from exc

    async def _download_parent(self, spec: JobSpec) -> Path | None:
        """The parent model's weights (a PEFT adapter, or a checkpoint whose optimizer state
        the training library ignores; full weights for a full/spectrum parent)."""
        if spec.parent is None:
            return None
        local = self.workdir / "parent"
        if not await self.store.download_prefix(as_dir(spec.parent.weights_prefix), local):
            from trainer.errors import TrainingError

            raise TrainingError(
                "parent_model_missing",
                f"the weights of {spec.parent.model} are gone; it cannot be trained further",
            )
        return local

    async def _validate(
        self,
        spec: JobSpec,
        train_path: Path,
        valid_path: Path | None,
        model_dir: Path,
        *,
        report: bool,
    ) -> ValidatedFiles:
        from trainer.data import validate_files

        files = await asyncio.to_thread(validate_files, train_path, valid_path, spec.method)
        if not report:
            return files
        summary = await asyncio.to_thread(_data_report, files.train, model_dir,
                                          _max_length(spec))
        tokens = summary.get("tokens_per_example") or {}
        await self._event(
            f"Training file: {summary.get('n_examples')} examples in format "
            f"{summary.get('format')}; tokens per example min {tokens.get('min')}, "
            f"median {tokens.get('median')}, max {tokens.get('max')}",
            data=summary,
        )
        for warning in summary.get("warnings", []):
            await self._event(f"Data warning: {warning}", level=EventLevel.WARN)
        return files

    async def _train(
        self, spec: JobSpec, model_dir: Path, train_path: Path, valid_path: Path | None,
        files: ValidatedFiles, parent_dir: Path | None,
    ) -> str:
        from trainer.train import TrainCallbacks, train

        model_name = fine_tuned_model_name(
            spec.base_model, spec.organization_id, spec.suffix, spec.job_id
        )
        resume_from = await self._latest_checkpoint()
        if resume_from is not None:
            await self._event(f"Resuming from checkpoint {resume_from.name}")
        writes = self.writes = BackgroundWrites(self.loop, on_failure=self._write_failed)
        tracking = self._start_tracking(spec, writes)
        callbacks = TrainCallbacks(
            on_message=lambda message, level: writes.record(
                lambda: self._event(message, level=EventLevel(level))
            ),
            on_metrics=lambda metrics: (worker_metrics.record_progress(metrics),
                                        tracking.log(metrics),
                                        writes.record(lambda: self._metrics(dict(metrics)))),
            on_checkpoint=lambda step, path, metrics: self._hand_over_checkpoint(
                step, path, dict(metrics), model_name
            ),
            should_stop=lambda: self.stop_request,
        )
        training = asyncio.ensure_future(
            asyncio.to_thread(
                train,
                spec,
                model_dir,
                train_path,
                valid_path,
                self.workdir / "output",
                callbacks,
                served_model_name=spec.base_model,
                resume_from=resume_from,
                files=files,
                parent_dir=parent_dir,
                # An adapter's merged model is made when something needs it, not for every job:
                # at 7B it would be 15 GB per job. Full weights are the model and always kept.
                merge=False,
            )
        )
        result: Any = None
        try:
            try:
                with tracing.span("job.train"):
                    result = await asyncio.shield(training)
            except asyncio.CancelledError:  # arq aborted the task: stop the thread, then leave
                self.stop_request = StopRequest.CANCEL
                with contextlib.suppress(Exception):
                    await training
                raise
        finally:
            # The trackers close with the training's outcome, their last events still
            # through the run's writes (`_publish` succeeding is not waited for).
            await self._finish_tracking(tracking, result, model_name)
            # Nothing of the run may still be writing when it publishes, pauses or ends: a
            # pause's checkpoint is recorded before the run lets go of the job.
            await writes.close()
        writes.raise_failure()
        if self.lease_lost:
            raise LeaseLost(self.job_id)
        resolved: dict[str, Any] = {
            "resolved_hyperparameters": result.hyperparameters.model_dump(),
            "trained_tokens": result.trained_tokens,
        }
        if result.training is not None:
            resolved["resolved_training"] = result.training.model_dump(mode="json")
        await self.jobs.update_progress(self.job_id, worker_id=self.worker_id, **resolved)
        if result.status != "succeeded":
            return result.status  # paused or cancelled: the state was changed by the user
        with tracing.span("job.publish", attributes={"tuneforge.model": model_name}):
            return await self._publish(spec, result, model_name)

    def _start_tracking(self, spec: JobSpec, writes: BackgroundWrites) -> TrackingFanOut:
        """The job's trackers, starting on their own thread while training begins: each run
        that starts is shown on the job, with an event; a tracker that fails is a warning."""
        from trainer.tracking import TrackingFanOut, values

        tracking = TrackingFanOut.for_job(
            spec, self.settings,
            on_started=lambda run, message: writes.record(
                lambda: self.jobs.add_tracking_run(self.job_id, run, message,
                                                   worker_id=self.worker_id)),
            on_warning=lambda message: writes.record(
                lambda: self._event(message, level=EventLevel.WARN)))
        if tracking:
            tracking.start(values.hyperparameters(spec), values.config(spec))
        return tracking

    async def _finish_tracking(self, tracking: TrackingFanOut, result: Any,
                               model_name: str) -> None:
        if not tracking:
            return
        from trainer.tracking import values

        outcome = values.final_result(result, model_name,
                                      cancelled=self.stop_request == StopRequest.CANCEL)
        try:
            await asyncio.wait_for(asyncio.wrap_future(
                tracking.finish(outcome, outcome["status"])),
                self.settings.tracking.finish_timeout_seconds)
        except Exception:  # a tracker never fails or holds up the job
            log.warning("job %s: trackers did not finish", self.job_id, exc_info=True)
            with contextlib.suppress(Exception):
                await self._event("Experiment tracking did not finish in time; the job goes "
                                  "on without it", level=EventLevel.WARN)

    def _write_failed(self, exc: BaseException) -> None:
        """A background write failed: stop training at the next step, saving nothing; the run
        then raises the failure as if the training thread had hit it."""
        if isinstance(exc, LeaseLost):
            self._lose_lease()
        else:
            self.stop_request = StopRequest.CANCEL

    async def _publish(self, spec: JobSpec, result: Any, model_name: str) -> str:
        """Upload the results and make the model servable, then succeed in one transaction
        that also records the results file. Each step first checks that the run may still
        write; a run that loses the race at the end leaves no file and no model behind."""
        if not await self._still_running():
            return await self._not_published()
        full = result.tuning in FULL_WEIGHT_TUNINGS
        await self._event("Training finished; uploading the "
                          + ("model weights" if full else "adapter"))
        if result.adapter_dir is not None:
            await self.store.upload_dir(result.adapter_dir, adapter_prefix(spec.job_id))
        if result.merged_dir is not None:
            await self.store.upload_dir(result.merged_dir, merged_prefix(spec.job_id))
        results_file = None
        if result.results_csv is not None:
            data = await asyncio.to_thread(Path(result.results_csv).read_bytes)
            results_file = ResultsFile(new_id("file-"), "step_metrics.csv", len(data))
            await self.store.put_bytes(file_key(results_file.file_id), data, "text/csv")
            await self.store.put_bytes(results_key(spec.job_id), data, "text/csv")
        try:
            if not await self._still_running():
                return await self._not_published(results_file)
            refused = await self._make_servable(spec, model_name, full=full)
            if refused is not None:
                await self.jobs.fail(self.job_id, code="adapter_load_failed", message=refused,
                                     worker_id=self.worker_id)
                await self._not_published(results_file)
                return "failed: adapter_load_failed"
            if await self.jobs.succeed(
                self.job_id,
                fine_tuned_model=model_name,
                result_files=[],
                results_file=results_file,
                trained_tokens=result.trained_tokens,
                worker_id=self.worker_id,
                tuning=result.tuning.value,
                parent_model=spec.parent.model if spec.parent is not None else None,
            ):
                return "succeeded"
        except BaseException:
            await self._discard(results_file)
            raise
        return await self._not_published(results_file)

    async def _not_published(self, results_file: ResultsFile | None = None) -> str:
        await self._discard(results_file)
        status = await self._remove_outputs_if_ended()
        return f"finished training, but the job is {status}; nothing was published"

    async def _remove_outputs_if_ended(self) -> JobStatus | None:
        """Once the job was cancelled or failed nobody will publish it: remove the adapter,
        merged weights and results this run may have uploaded."""
        status = await self.jobs.status(self.job_id)
        if status in UNPUBLISHED_STATUSES and not self.lease_lost:
            for prefix in published_prefixes(self.job_id):
                await self.store.delete_prefix(prefix)
            await self.store.delete(results_key(self.job_id))
        return status

    async def _discard(self, results_file: ResultsFile | None) -> None:
        if results_file is not None:
            with contextlib.suppress(Exception):
                await self.store.delete(file_key(results_file.file_id))

    async def _make_servable(self, spec: JobSpec, model_name: str, *,
                             full: bool = False) -> str | None:
        """Ask the serving plane (in the API process) to load the adapter on every replica of
        the base model, or (`full`: a full/spectrum job) to serve the full weights on a
        server of their own, and wait until it has, before the job succeeds. Returns the
        plane's error when a replica refused the model. Without a server for the base model,
        or when none answers within `serving.hot_load_timeout_seconds`, the job succeeds
        anyway: the plane loads the model once a server is up."""
        if not any(s.base_model == spec.base_model for s in self.settings.inference_servers()):
            return None
        request_id = await self.jobs.request_serving(
            self.job_id, self.worker_id, model=model_name, base_model=spec.base_model,
            adapter_prefix=merged_prefix(spec.job_id) if full else adapter_prefix(spec.job_id),
            kind="full" if full else "adapter")
        deadline = self.loop.time() + self.settings.serving.hot_load_timeout_seconds
        while self.stop_request is None and not self.lease_lost:
            state = await self.jobs.serving_state(request_id)
            if state is None:
                return None
            if state.error is not None:
                return state.error
            if state.ready_at is not None:
                seconds = max(0.0, state.ready_at - state.requested_at)
                await self._event(
                    f"Model {model_name} is ready: first token {seconds * 1000:.0f} ms "
                    "after training ended",
                    data={"ready_seconds": seconds},
                )
                return None
            if self.loop.time() >= deadline:
                log.warning("job %s: %s was not loaded within %.0f s; it loads when a server "
                            "for %s is up", self.job_id, model_name,
                            self.settings.serving.hot_load_timeout_seconds, spec.base_model)
                return None
            await asyncio.sleep(SERVING_POLL_SECONDS)
        return None  # cancelled or lease lost: `succeed` will not go through

    # ---- writes of the training thread, run on the event loop ----------------------------

    async def _event(self, message: str, *, level: EventLevel = EventLevel.INFO,
                     type: EventType = EventType.MESSAGE,
                     data: dict[str, Any] | None = None) -> None:
        """An event of this run: written only while it holds the lease."""
        await self.jobs.add_event(self.job_id, message, level=level, type=type, data=data,
                                  worker_id=self.worker_id)

    async def _metrics(self, metrics: dict[str, Any]) -> None:
        progress = {
            k: metrics[k]
            for k in ("trained_tokens", "estimated_finish")
            if metrics.get(k) is not None
        }
        if progress:
            await self.jobs.update_progress(self.job_id, worker_id=self.worker_id, **progress)
        fields = {k: v for k, v in metrics.items() if k not in progress}
        parts = [
            f"{k}={v:.4f}"
            for k, v in fields.items()
            if k.endswith(("loss", "accuracy")) and isinstance(v, int | float)
        ]
        await self._event(
            f"Step {fields.get('step')}/{fields.get('total_steps')}: " + ", ".join(parts),
            type=EventType.METRICS,
            data=fields,
        )

    def _hand_over_checkpoint(self, step: int, path: Path, metrics: dict[str, Any],
                              model_name: str) -> None:
        """On the training thread: take the directory the Trainer saved out of its reach (its
        `save_total_limit` rotation, or a second save at the same step, would change it under
        the upload), then queue its upload. Moving is a rename within the work directory."""
        writes = self.writes
        if writes is None or self.lease_lost:
            return
        staged = self.workdir / "checkpoint-uploads" / f"step-{step}"
        staged.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(staged, ignore_errors=True)
        path.rename(staged)
        writes.upload(lambda: self._checkpoint(step, staged, metrics, model_name))

    async def _checkpoint(
        self, step: int, path: Path, metrics: dict[str, Any], model_name: str
    ) -> None:
        if self.lease_lost:
            raise LeaseLost(self.job_id)
        await self.store.upload_dir(path, checkpoint_prefix(self.job_id, step))
        await self.jobs.add_checkpoint(
            self.job_id,
            step=step,
            metrics={
                "step": step,
                **{k: v for k, v in metrics.items()
                   if k in _CHECKPOINT_METRICS and v is not None},
            },
            model_name=checkpoint_model_name(model_name, step),
            worker_id=self.worker_id,
        )
        # The best checkpoint of an early-stopping run is kept besides the last three.
        best_step = metrics.get("best_step")
        rotating = [c for c in await self.jobs.checkpoints(self.job_id)
                    if c.step_number != best_step]
        for old in rotating[:-KEEP_CHECKPOINTS]:
            await self.jobs.remove_checkpoint(old.id, job_id=self.job_id,
                                              worker_id=self.worker_id)
            await self.store.delete_prefix(as_dir(checkpoint_prefix(self.job_id,
                                                                   old.step_number)))
        await asyncio.to_thread(shutil.rmtree, path, True)

    async def _latest_checkpoint(self) -> Path | None:
        checkpoints = await self.jobs.checkpoints(self.job_id)
        if not checkpoints:
            return None
        step = checkpoints[-1].step_number
        local = self.workdir / "resume" / f"step-{step}"
        found = await self.store.download_prefix(checkpoint_prefix(self.job_id, step), local)
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


def _internal_error_message(exc: BaseException, reference: str) -> str:
    """What the job's error says of an unexpected failure: never its text, which may carry
    paths, hosts or keys; operators find it in the worker's log under the reference."""
    return (f"The worker hit an unexpected error ({type(exc).__name__}, reference "
            f"{reference}). The job can be created again; the worker's log has the details "
            "under that reference.")


def _max_length(spec: JobSpec) -> int:
    return spec.training.max_seq_length or DEFAULT_MAX_SEQ_LENGTH


def _data_report(data: Any, model_dir: Path, max_length: int) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from trainer.data_report import build_report

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return build_report(data, tokenizer, max_length)
