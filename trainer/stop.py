"""What the training loop is asked to do between steps. Kept apart from `trainer.progress`
(which imports transformers) so the worker's bridge can use it without loading the stack."""

from __future__ import annotations

from enum import StrEnum


class StopRequest(StrEnum):
    CANCEL = "cancel"  # stop at the next step and save nothing
    PAUSE = "pause"  # stop at the next step and save a resumable checkpoint
