"""Supervised fine-tuning: TRL's SFTTrainer over rows already tokenized, masked and cut to
`max_seq_length`."""

from __future__ import annotations

from typing import Any

from trainer.planning import JobPlan
from trainer.tuning import PreparedModel


def build(plan: JobPlan, prepared: PreparedModel, *, tokenizer: Any, train: Any,
          valid: Any | None, args: dict[str, Any], callbacks: list[Any]) -> Any:
    from trl import SFTConfig

    from trainer.trainers import TuneForgeSFTTrainer

    config = SFTConfig(
        **args,
        max_length=None,  # rows are truncated already (and padding-free requires None)
        packing=False,  # keeps batch_size = examples per step, as OpenAI counts it
        padding_free=plan.device.padding_free,
        train_sampling_strategy="group_by_length" if plan.device.group_by_length else "random",
        length_column_name="length",
    )
    return TuneForgeSFTTrainer(
        model=prepared.model,
        args=config,
        train_dataset=train,
        eval_dataset=valid,
        processing_class=tokenizer,
        peft_config=prepared.peft_config,
        callbacks=callbacks,
    )
