"""One TRL trainer builder per method family, like axolotl's `core/builders`: `sft.build`
(supervised) and `dpo.build` (preferences), both over the shared `TrainingArguments` of
`arguments.training_args`. A new method is a new module here plus its entry in `BUILDERS`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from trainer.builders import dpo, sft
from trainer.builders.arguments import training_args
from tuneforge.domain import MethodType

BUILDERS: dict[MethodType, Callable[..., Any]] = {
    MethodType.SUPERVISED: sft.build,
    MethodType.DPO: dpo.build,
}

__all__ = ["BUILDERS", "training_args"]
