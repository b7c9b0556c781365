"""Experiment tracking of a job's `integrations` (W&B, MLflow), worker side.

`TrackingFanOut.for_job` builds one tracker per integration; the job runner starts them,
hands every metrics event over and finishes them. Every tracker call runs on the fan-out's
own thread (training never waits on a tracker) and is guarded: a tracker that fails is
reported once (a warning event) and disabled, and the job goes on.
"""

from trainer.tracking.base import StartedRun, Tracker, TrackerFailure
from trainer.tracking.fanout import TrackingFanOut

__all__ = ["StartedRun", "Tracker", "TrackerFailure", "TrackingFanOut"]
