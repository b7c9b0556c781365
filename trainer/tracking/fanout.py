"""One job's trackers behind one thread: the job runner hands calls over and never waits on
a tracker while training; each call is guarded, and a tracker that fails once is reported
(one warning) and left out from then on."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.tracking.base import Tracker, TrackerFailure
from tuneforge.domain import IntegrationType, JobSpec, TrackingRun
from tuneforge.settings import Settings

log = logging.getLogger(__name__)

# What a metrics event carries besides numbers to plot.
_NOT_PLOTTED = frozenset({"step", "total_steps", "estimated_finish"})


@dataclass
class _Entry:
    index: int  # into the job's integrations
    kind: IntegrationType
    tracker: Tracker
    started: bool = False
    failed: bool = False


class TrackingFanOut:
    def __init__(self, entries: list[tuple[int, IntegrationType, Tracker]], *,
                 on_started: Callable[[TrackingRun, str], None],
                 on_warning: Callable[[str], None]) -> None:
        """`on_started(run, message)` and `on_warning(message)` are called on the fan-out's
        thread; they only hand the write over."""
        self.entries = [_Entry(index, kind, tracker) for index, kind, tracker in entries]
        self.on_started = on_started
        self.on_warning = on_warning
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tracking")
        self._lock = threading.Lock()

    @classmethod
    def for_job(cls, spec: JobSpec, settings: Settings, *,
                on_started: Callable[[TrackingRun, str], None],
                on_warning: Callable[[str], None]) -> TrackingFanOut:
        earlier = {run.index: run.run_id for run in spec.tracking_runs}
        entries: list[tuple[int, IntegrationType, Tracker]] = []
        for index, integration in enumerate(spec.integrations):
            resume = earlier.get(index)
            if integration.type == IntegrationType.WANDB and integration.wandb is not None:
                from trainer.tracking.wandb_tracker import WandbTracker

                entries.append((index, integration.type, WandbTracker(
                    integration.wandb, settings.tracking, organization_id=spec.organization_id,
                    job_id=spec.job_id, directory=wandb_directory(settings, spec.job_id),
                    resume_run_id=resume)))
            elif integration.type == IntegrationType.MLFLOW and integration.mlflow is not None:
                from trainer.tracking.mlflow_tracker import MlflowTracker

                entries.append((index, integration.type, MlflowTracker(
                    integration.mlflow, settings.tracking, job_id=spec.job_id,
                    resume_run_id=resume)))
        return cls(entries, on_started=on_started, on_warning=on_warning)

    def __bool__(self) -> bool:
        return bool(self.entries)

    # ---- handed over (return at once) -----------------------------------------------------

    def start(self, hyperparameters: dict[str, Any], config: dict[str, Any]) -> None:
        self._submit(self._start, hyperparameters, config)

    def log(self, metrics: dict[str, Any]) -> None:
        if not self.entries:
            return
        step = metrics.get("step")
        values = {k: float(v) for k, v in metrics.items()
                  if k not in _NOT_PLOTTED and isinstance(v, int | float)
                  and not isinstance(v, bool) and math.isfinite(v)}
        if isinstance(step, int) and values:
            self._submit(self._log, values, step)

    def finish(self, result: dict[str, Any], status: str) -> Future[None]:
        """Close every run; the future is done when they are (or failed, reported)."""
        future = self._submit(self._finish, result, status)
        self._thread.shutdown(wait=False)
        return future

    # ---- on the fan-out's thread --------------------------------------------------------

    def _submit(self, call: Callable[..., None], *args: Any) -> Future[None]:
        with self._lock:
            try:
                return self._thread.submit(call, *args)
            except RuntimeError:  # finished: nothing more is logged
                done: Future[None] = Future()
                done.set_result(None)
                return done

    def _start(self, hyperparameters: dict[str, Any], config: dict[str, Any]) -> None:
        for entry in self.entries:
            started = self._guarded(entry, "start", entry.tracker.start, hyperparameters,
                                    config)
            if started is None:
                continue
            entry.started = True
            run = TrackingRun(index=entry.index, type=entry.kind, run_id=started.run_id,
                              url=started.url)
            where = started.url or f"{started.run_id} (offline: `wandb sync` uploads it)"
            self.on_started(run, f"{entry.tracker.label} run started: {where}")

    def _log(self, metrics: dict[str, float], step: int) -> None:
        for entry in self.entries:
            if entry.started and not entry.failed:
                self._guarded(entry, "log", entry.tracker.log, metrics, step)

    def _finish(self, result: dict[str, Any], status: str) -> None:
        for entry in self.entries:
            if entry.started and not entry.failed:
                self._guarded(entry, "finish", entry.tracker.finish, result, status)

    def _guarded(self, entry: _Entry, what: str, call: Callable[..., Any], *args: Any) -> Any:
        try:
            return call(*args)
        except Exception as exc:  # a tracker never fails the job
            entry.failed = True
            log.warning("tracker %s (integration %d) failed at %s", entry.tracker.label,
                        entry.index, what, exc_info=True)
            reason = str(exc) if isinstance(exc, TrackerFailure) else type(exc).__name__
            self.on_warning(f"{entry.tracker.label} tracking stopped: the {what} call failed "
                            f"({reason}); the job goes on without it")
            return None


def wandb_directory(settings: Settings, job_id: str) -> Path:
    """Where a job's W&B runs are written (offline runs stay there for `wandb sync`)."""
    return settings.data_dir / "tracking" / "wandb" / job_id
