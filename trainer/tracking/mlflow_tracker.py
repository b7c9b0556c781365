"""MLflow (TuneForge's `mlflow` integration): a run in `experiment` on the tracking server
of the integration or of the worker's settings, read back with MLflow's own client."""

from __future__ import annotations

import os
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from trainer.tracking.base import StartedRun, TrackerFailure, flatten
from tuneforge.domain import MlflowIntegration
from tuneforge.settings import TrackingSettings

# MLflow's limits per log_batch call.
_PARAMS_PER_BATCH = 100
_MAX_PARAM_VALUE = 6000
_RUN_STATUS = {"succeeded": "FINISHED", "failed": "FAILED", "cancelled": "KILLED",
               # A paused job's run is reopened (RUNNING again) when the job resumes.
               "paused": "KILLED"}


def shown_uri(uri: str) -> str:
    """The tracking URI as a job may show it: without credentials in it."""
    parts = urlsplit(uri)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


class MlflowTracker:
    label = "MLflow"

    def __init__(self, integration: MlflowIntegration, settings: TrackingSettings, *,
                 job_id: str, resume_run_id: str | None = None) -> None:
        self.integration = integration
        self.uri = integration.tracking_uri or settings.mlflow_tracking_uri
        self.job_id = job_id
        self.resume_run_id = resume_run_id
        # MLflow reads its HTTP deadline and retries from the environment at each request;
        # only the worker imports MLflow, and every tracker in it uses the same bounds.
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(
            max(1, round(settings.mlflow_request_timeout_seconds)))
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(settings.mlflow_request_retries)
        os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = "1"
        self.client: Any = None
        self.run_id = ""

    def start(self, hyperparameters: dict[str, Any], config: dict[str, Any]) -> StartedRun:
        from mlflow import MlflowClient

        if not self.uri:
            raise TrackerFailure("no MLflow tracking server is configured")
        self.client = MlflowClient(tracking_uri=self.uri)
        if self.resume_run_id:
            run = self.client.get_run(self.resume_run_id)
            self.client.update_run(self.resume_run_id, status="RUNNING")
            experiment_id = run.info.experiment_id
            self.run_id = self.resume_run_id
        else:
            experiment_id = self._experiment_id(self.integration.experiment)
            tags = {"tuneforge.job_id": self.job_id, **(self.integration.tags or {})}
            run = self.client.create_run(experiment_id, tags=tags,
                                         run_name=self.integration.run_name or self.job_id)
            self.run_id = run.info.run_id
            self._log_params(flatten({"hyperparameters": hyperparameters, **config}))
        url = f"{shown_uri(self.uri)}/#/experiments/{experiment_id}/runs/{self.run_id}"
        return StartedRun(self.run_id, url)

    def _experiment_id(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            return str(experiment.experiment_id)
        try:
            return str(self.client.create_experiment(name))
        except MlflowException:  # another job created it meanwhile
            experiment = self.client.get_experiment_by_name(name)
            if experiment is None:
                raise
            return str(experiment.experiment_id)

    def _log_params(self, values: dict[str, Any]) -> None:
        from mlflow.entities import Param

        params = [Param(key, _param_value(value)) for key, value in values.items()]
        for first in range(0, len(params), _PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=params[first:first + _PARAMS_PER_BATCH])

    def log(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[
            Metric(key, value, stamp, step) for key, value in metrics.items()])

    def finish(self, result: dict[str, Any], status: str) -> None:
        resolved = {f"resolved_{k}": result[k] for k in ("hyperparameters", "training")
                    if result.get(k)}
        if resolved and status != "paused":
            self._log_params(flatten(resolved))
        from mlflow.entities import RunTag

        tags = [RunTag(f"tuneforge.{k}", str(v)) for k, v in result.items()
                if k not in ("hyperparameters", "training") and v is not None]
        if tags:
            self.client.log_batch(self.run_id, tags=tags)
        self.client.set_terminated(self.run_id, status=_RUN_STATUS.get(status, "FAILED"))


def _param_value(value: Any) -> str:
    text = "" if value is None else str(value)
    return text[:_MAX_PARAM_VALUE]
