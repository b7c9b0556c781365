"""A new job's files are validated by the API process, in the background, before the job is
queued: a job waiting for a worker is `queued` (with its place in the queue in an event)
instead of sitting in `validating_files`, and a worker never picks up unvalidated data.

Right after creation (and again from the reconciler, for a job whose API process died while
validating it) `ValidationService.start` runs, in a task of this process:

1. take the job's lease in the DB under an owner of its own (`api-validation:…`), renewed
   while it works, so only one process validates a job and a worker cannot claim it;
2. download the training (and validation) file from S3 and apply the torch-free rules the
   worker applies (`tuneforge.jsonl` line rules, `tuneforge.data_formats` shapes, the
   example minimum), with the worker's error codes and messages (`line N: …`);
3. bad data: the job fails (`param: training_file` or `validation_file`), as the worker
   reports it; good data: one transaction moves it `validating_files → queued` (guarded by
   the status and the lease, so a cancel that came first wins), releases the lease and
   records its position in the queue; only then is it enqueued.

Queue position: the jobs `queued` that no worker has claimed yet (no live lease), of every
organization (there is one queue), counted in the transaction that queues this one; the
job's position is that count (it is last in line at that moment). Jobs a worker has claimed
but not yet started are not in line any more; a resumed or requeued job is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select

from server.db.models import Job
from server.job_protocol import JobProtocol, lease_is_free, record_event, transition
from server.service.context import Context
from server.storage import StorageUnavailable
from tuneforge.data_formats import FormatCheck
from tuneforge.domain import JobSpec, JobStatus, MethodType
from tuneforge.jsonl import MIN_TRAINING_EXAMPLES, LineError, read_jsonl
from tuneforge.layout import file_key

log = logging.getLogger(__name__)

# The worker's codes for rejected data (`trainer.errors`).
INVALID_TRAINING_FILE = "invalid_training_file"
INVALID_VALIDATION_FILE = "invalid_validation_file"
INVALID_N_EXAMPLES = "invalid_n_examples"

VALIDATED_MESSAGE = "Files validated, moving job to queued state"


@dataclass(frozen=True)
class DataProblem:
    """Why a job's data is refused: the worker's code and message, and the file's param."""

    code: str
    message: str
    param: str


def check_file(path: Path, method: MethodType, *, min_examples: int,
               code: str) -> DataProblem | None:
    """The worker's `trainer.data.load_dataset_file` rules, without converting for training."""
    check = FormatCheck(method)
    examples = 0
    param = "validation_file" if code == INVALID_VALIDATION_FILE else "training_file"
    try:
        for line, obj in read_jsonl(path):
            check.add(line, obj)
            examples += 1
    except LineError as exc:
        return DataProblem(code, exc.message, param)
    if not examples or examples < min_examples:
        return DataProblem(INVALID_N_EXAMPLES,
                           f"The file has {examples} example(s), but must have at least "
                           f"{max(min_examples, 1)} examples", param)
    return None


def check_files(train: Path, valid: Path | None, method: MethodType) -> DataProblem | None:
    """Both files of a job, as the worker's `trainer.data.validate_files` checks them: a
    validation file's problems carry `invalid_validation_file` (its example count too)."""
    problem = check_file(train, method, min_examples=MIN_TRAINING_EXAMPLES,
                         code=INVALID_TRAINING_FILE)
    if problem is None and valid is not None:
        problem = check_file(valid, method, min_examples=1, code=INVALID_VALIDATION_FILE)
        if problem is not None:
            problem = DataProblem(INVALID_VALIDATION_FILE, problem.message, "validation_file")
    return problem


class ValidationService:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.protocol = JobProtocol(ctx.sessions, ctx.settings)
        self.host = socket.gethostname()
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def start(self, job_id: str) -> bool:
        """Validate the job in the background (once per process at a time); False when this
        process is validating it already."""
        if job_id in self._tasks:
            return False
        task = asyncio.create_task(self._run(job_id), name=f"validate {job_id}")
        self._tasks[job_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(job_id, None))
        return True

    async def wait_idle(self) -> None:
        """Wait for every validation this process runs (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def close(self) -> None:
        """Stop the validations in flight; their leases are released (or lapse), and the
        reconciler validates those jobs again."""
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    # ---- one validation --------------------------------------------------------------------

    async def _run(self, job_id: str) -> None:
        owner = f"api-validation:{self.host}:{uuid.uuid4().hex[:8]}"
        try:
            if not await self.protocol.claim(job_id, owner):
                return  # another process validates it, or it has ended
        except Exception:
            log.warning("could not take %s for validation; the reconciler retries",
                        job_id, exc_info=True)
            return
        renewing = asyncio.create_task(self._renew(job_id, owner))
        workdir = self.ctx.settings.data_dir / "validation" / f"{job_id}-{owner[-8:]}"
        try:
            await self._validate(job_id, owner, workdir)
        except StorageUnavailable:
            await self.protocol.fail(
                job_id, code="storage_unavailable",
                message="Object storage was unreachable for too long; create the job again "
                        "once storage is back.", worker_id=owner)
        except Exception:
            reference = uuid.uuid4().hex[:8]
            log.exception("validating %s failed (reference %s)", job_id, reference)
            with contextlib.suppress(Exception):
                await self.protocol.fail(
                    job_id, code="internal_error", worker_id=owner,
                    message=f"Internal error while validating the files (reference "
                            f"{reference}); see the API server's log.")
        finally:
            renewing.cancel()
            with contextlib.suppress(BaseException):
                await renewing
            with contextlib.suppress(Exception):
                await asyncio.shield(self.protocol.release(job_id, owner))
            await asyncio.to_thread(shutil.rmtree, workdir, True)

    async def _renew(self, job_id: str, owner: str) -> None:
        while True:
            await asyncio.sleep(self.ctx.settings.worker_lease_seconds / 3)
            try:
                if await self.protocol.heartbeat(job_id, owner) is None:
                    return  # lost (or the job moved on): the final transition checks it
            except Exception:
                log.warning("could not renew the validation lease of %s", job_id,
                            exc_info=True)

    async def _validate(self, job_id: str, owner: str, workdir: Path) -> None:
        spec = await self.protocol.spec(job_id)
        if spec is None or await self.protocol.status(job_id) != JobStatus.VALIDATING_FILES:
            return
        train, valid = await self._download(spec, workdir)
        problem = await asyncio.to_thread(check_files, train, valid, spec.method)
        if problem is not None:
            await self.protocol.fail(job_id, code=problem.code, message=problem.message,
                                     param=problem.param, worker_id=owner)
            return
        queue_job_id = await self._queue(job_id, owner)
        if queue_job_id is not None:
            try:
                await self.ctx.queue.enqueue(queue_job_id, job_id)
            except Exception:  # the reconciler re-enqueues a queued job without an entry
                log.warning("could not enqueue %s; the reconciler will retry", job_id,
                            exc_info=True)

    async def _download(self, spec: JobSpec, workdir: Path) -> tuple[Path, Path | None]:
        await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
        train = workdir / "train.jsonl"
        await self.ctx.store.download_file(file_key(spec.training_file), train)
        valid = None
        if spec.validation_file:
            valid = workdir / "validation.jsonl"
            await self.ctx.store.download_file(file_key(spec.validation_file), valid)
        return train, valid

    async def _queue(self, job_id: str, owner: str) -> str | None:
        """validating_files → queued, the lease released and the place in line recorded, in
        one transaction; None when the job moved meanwhile (cancelled) or the lease was lost."""
        async with self.ctx.sessions() as session, session.begin():
            if not await transition(session, job_id, (JobStatus.VALIDATING_FILES,),
                                    JobStatus.QUEUED, worker_id=owner, lease_owner=None,
                                    lease_expires_at=None):
                return None
            ahead = (await session.execute(
                select(func.count()).select_from(Job).where(
                    Job.status == JobStatus.QUEUED.value, Job.id != job_id, lease_is_free())
            )).scalar_one()
            await record_event(session, job_id, VALIDATED_MESSAGE)
            position = ahead + 1
            await record_event(
                session, job_id,
                f"Queued: position {position} in the queue ({ahead} "
                f"{'job' if ahead == 1 else 'jobs'} ahead of it), waiting for a worker",
                data={"queue_position": position, "jobs_ahead": ahead})
            return (await session.execute(
                select(Job.queue_job_id).where(Job.id == job_id))).scalar_one()
