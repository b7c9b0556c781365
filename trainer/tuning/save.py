"""`save_model`: a job's final artifacts.

lora/qlora: the PEFT adapter (only the trained adapter, not TRL's DPO "ref" copy) named
after the served base, plus the merged model when asked. full/spectrum: the full weights
(safetensors + tokenizer, in the base model's dtype) in `merged/`, no adapter.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.export import merge_adapter, save_adapter, save_full_model
from trainer.tuning.decision import TuningDecision
from tuneforge.domain import FULL_WEIGHT_TUNINGS


@dataclass(frozen=True)
class SavedModel:
    adapter_dir: Path | None
    merged_dir: Path | None


def save_model(
    trained_model: Any,
    decision: TuningDecision,
    tokenizer: Any,
    base_model_dir: Path,
    output_dir: Path,
    served_model_name: str,
    *,
    merge: bool,
) -> SavedModel:
    output_dir = Path(output_dir)
    if decision.tuning in FULL_WEIGHT_TUNINGS:
        merged = save_full_model(trained_model, output_dir / "merged", tokenizer, base_model_dir)
        return SavedModel(adapter_dir=None, merged_dir=merged)
    adapter = save_adapter(trained_model, output_dir / "adapter", served_model_name)
    merged = None
    if merge:
        merged = merge_adapter(base_model_dir, adapter, output_dir / "merged", tokenizer)
    return SavedModel(adapter_dir=adapter, merged_dir=merged)
