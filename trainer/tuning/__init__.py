"""Tuning types behind one interface: which weights a job trains (LoRA, QLoRA, full,
Spectrum), how the base is loaded, where a parent model comes in, and what is saved.

The training stages call `decide_tuning` (planning, before any weight is loaded),
`prepare_model` (the model the TRL trainer gets) and `save_model` (the job's artifacts); they
never branch on the tuning type themselves.
"""

from trainer.tuning.decision import (
    DEFAULT_SPECTRUM_FRACTION,
    TuningDecision,
    available_ram_bytes,
    base_learning_rate,
    decide_tuning,
)
from trainer.tuning.prepare import PreparedModel, prepare_model
from trainer.tuning.save import SavedModel, save_model

__all__ = [
    "DEFAULT_SPECTRUM_FRACTION",
    "PreparedModel",
    "SavedModel",
    "TuningDecision",
    "available_ram_bytes",
    "base_learning_rate",
    "decide_tuning",
    "prepare_model",
    "save_model",
]
