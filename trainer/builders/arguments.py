"""The `TrainingArguments` every method shares, from the job's plan and resolved controls."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainer.errors import UNSUPPORTED, TrainingError
from trainer.planning import JobPlan
from tuneforge.domain import JobSpec, LrScheduler, OptimizerName

SCHEDULERS = {
    LrScheduler.LINEAR: "linear",
    LrScheduler.COSINE: "cosine",
    # A flat rate after the warmup (transformers' "constant" ignores warmup).
    LrScheduler.CONSTANT: "constant_with_warmup",
}
KEEP_CHECKPOINTS = 3


def optimizer_name(optimizer: OptimizerName, device: str) -> str:
    if optimizer == OptimizerName.PAGED_ADAMW_8BIT:
        if device != "cuda":
            raise TrainingError(
                UNSUPPORTED,
                "optimizer paged_adamw_8bit needs a CUDA worker (bitsandbytes' paged "
                "optimizers have no CPU implementation); use optimizer 'adamw'",
            )
        return "paged_adamw_8bit"
    return "adamw_torch_fused" if device == "cuda" else "adamw_torch"


def training_args(spec: JobSpec, plan: JobPlan, output_dir: Path,
                  max_steps: int | None) -> dict[str, Any]:
    device, controls = plan.device, plan.training
    return {
        "output_dir": str(output_dir / "checkpoints"),
        "num_train_epochs": plan.hp.n_epochs,
        "max_steps": max_steps if max_steps is not None else -1,
        "per_device_train_batch_size": plan.micro_batch,
        "per_device_eval_batch_size": plan.micro_batch,
        "gradient_accumulation_steps": plan.accumulation,
        "learning_rate": plan.learning_rate,
        "lr_scheduler_type": SCHEDULERS[controls.lr_scheduler],
        "warmup_steps": controls.warmup_ratio,  # below 1: a ratio of the steps
        "weight_decay": controls.weight_decay,
        "optim": optimizer_name(controls.optimizer, device.device),
        # TRL defaults to bf16=True and gradient_checkpointing=True: always chosen here.
        "bf16": device.bf16,
        "fp16": False,
        "gradient_checkpointing": controls.gradient_checkpointing,
        "use_cpu": device.device == "cpu",
        "seed": spec.seed,
        "data_seed": spec.seed,
        "logging_steps": plan.metrics_every,
        "logging_first_step": True,
        "logging_nan_inf_filter": False,  # a NaN loss must reach our check
        "save_strategy": "epoch",
        # The best checkpoint (early stopping) is kept besides the last three.
        "save_total_limit": KEEP_CHECKPOINTS + (controls.early_stopping is not None),
        "eval_strategy": "no",  # validation is run by our Evaluator
        "report_to": "none",
        "disable_tqdm": True,
        "dataloader_pin_memory": device.device == "cuda",
        "dataloader_num_workers": 0,
    }
