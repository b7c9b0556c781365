"""A training or validation file after the worker's validation: its examples converted to
chat (`tuneforge.data_formats`), ready for the model-aware pass and for training."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tuneforge.data_formats import DataFormat
from tuneforge.domain import MethodType


@dataclass
class LoadedData:
    format: DataFormat
    method: MethodType
    examples: list[Any]  # list[SftExample] for SFT, list[DpoExample] for DPO
    lines: int = 0  # non-blank lines read
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.examples)
