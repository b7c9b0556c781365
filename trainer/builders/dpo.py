"""Direct preference optimization: TRL's DPOTrainer over pre-tokenized prompt/chosen/rejected
rows. The reference policy is whatever `prepare_model` set up: the base with the adapter
disabled (a new adapter), a frozen copy of the parent adapter (continuing from SFT), or a
frozen copy of the starting weights (full/Spectrum)."""

from __future__ import annotations

from typing import Any

from trainer.planning import JobPlan
from trainer.tuning import PreparedModel


def build(plan: JobPlan, prepared: PreparedModel, *, tokenizer: Any, train: Any,
          valid: Any | None, args: dict[str, Any], callbacks: list[Any]) -> Any:
    from trl import DPOConfig

    from trainer.trainers import TuneForgeDPOTrainer

    config = DPOConfig(
        **args,
        beta=plan.hp.beta,
        max_length=plan.training.max_seq_length,
        precompute_ref_log_probs=False,
    )
    return TuneForgeDPOTrainer(
        model=prepared.model,
        ref_model=prepared.ref_model,
        args=config,
        train_dataset=train,
        eval_dataset=valid,
        processing_class=tokenizer,
        peft_config=prepared.peft_config,
        callbacks=callbacks,
    )
