"""Weights & Biases (OpenAI's `wandb` integration): project, entity, name and tags as given;
the organization's API key from the worker's settings; offline mode writes the run under
`data_dir/tracking/wandb` for `wandb sync`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainer.tracking.base import StartedRun, TrackerFailure
from tuneforge.domain import WandbIntegration
from tuneforge.settings import TrackingSettings

# The run records the job, not the worker's machine: no system metrics, host metadata, code,
# git state or console capture.
_QUIET = {"x_disable_stats": True, "x_disable_meta": True, "x_disable_machine_info": True,
          "x_save_requirements": False, "console": "off", "save_code": False,
          "disable_git": True, "disable_job_creation": True, "silent": True}
_EXIT_CODES = {"succeeded": 0, "paused": 0}


class WandbTracker:
    label = "W&B"

    def __init__(self, integration: WandbIntegration, settings: TrackingSettings, *,
                 organization_id: str, job_id: str, directory: Path,
                 resume_run_id: str | None = None) -> None:
        self.integration = integration
        self.settings = settings
        self.organization_id = organization_id
        self.job_id = job_id
        self.directory = directory
        self.resume_run_id = resume_run_id
        self.run: Any = None

    def start(self, hyperparameters: dict[str, Any], config: dict[str, Any]) -> StartedRun:
        import wandb

        key = self.settings.wandb_key(self.organization_id)
        if self.settings.wandb_mode == "online" and not key:
            raise TrackerFailure("no W&B API key is configured for the organization")
        self.directory.mkdir(parents=True, exist_ok=True)
        settings = wandb.Settings(mode=self.settings.wandb_mode, api_key=key or None,
                                  base_url=self.settings.wandb_base_url, **_QUIET)
        self.run = wandb.init(
            project=self.integration.project, entity=self.integration.entity,
            name=self.integration.name or self.job_id, tags=self.integration.tags,
            config={"hyperparameters": hyperparameters, **config}, dir=str(self.directory),
            id=self.resume_run_id, resume="allow" if self.resume_run_id else None,
            reinit="create_new", settings=settings, job_type="fine-tune")
        return StartedRun(self.run.id, self.run.url)

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def finish(self, result: dict[str, Any], status: str) -> None:
        resolved = {k: result[k] for k in ("hyperparameters", "training") if result.get(k)}
        if resolved:
            self.run.config.update(resolved, allow_val_change=True)
        self.run.summary.update({k: v for k, v in result.items() if k not in resolved})
        self.run.finish(exit_code=_EXIT_CODES.get(status, 1))
