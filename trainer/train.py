"""`train`: one fine-tuning job (LoRA/QLoRA SFT or DPO) from local files to local artifacts.

The function takes local paths and a JobSpec, reports progress through `TrainCallbacks`, and
knows nothing of the DB, S3 or the queue. Output layout under `output_dir`:

    checkpoints/checkpoint-{step}/   end of each epoch (last 3 kept) and on pause: a PEFT
                                     adapter + optimizer, scheduler and RNG state (resumable)
    adapter/                         final PEFT adapter (base_model_name_or_path = served name)
    merged/                          base + adapter merged, safetensors + tokenizer
    results.csv                      OpenAI's per-step metrics table
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from trainer.data import ValidatedFiles, validate_files
from trainer.encode import ChatFormatter
from trainer.errors import (
    OUT_OF_MEMORY,
    TRAINING_FAILED,
    TrainingError,
)
from trainer.evaluation import Evaluator
from trainer.export import merge_adapter, save_adapter
from trainer.hyperparams import learning_rate
from trainer.modeling import load_base_model, load_tokenizer, peft_lora_config
from trainer.planning import JobPlan, plan_job
from trainer.progress import ProgressBridge, RunState, TrainCallbacks, read_run_state
from trainer.results import ResultsCsv
from trainer.stop import StopRequest
from trainer.tokenized import dpo_rows, sft_rows, to_dataset
from tuneforge.base_models import offline
from tuneforge.domain import JobSpec, MethodType, Quantization, ResolvedHyperparameters

__all__ = ["StopRequest", "TrainCallbacks", "TrainResult", "TrainingError", "train"]

Status = Literal["succeeded", "paused", "cancelled"]
Say = Callable[..., None]


@dataclass
class TrainResult:
    status: Status
    hyperparameters: ResolvedHyperparameters
    total_steps: int
    step: int  # optimizer steps done
    trained_tokens: int
    metrics: dict[str, Any] = field(default_factory=dict)  # the last metrics event
    adapter_dir: Path | None = None  # succeeded
    merged_dir: Path | None = None  # succeeded (and merge=True)
    checkpoint_dir: Path | None = None  # paused: resume from here
    results_csv: Path | None = None
    quantization: Quantization = Quantization.NONE
    quantization_reason: str = ""
    device: str = "cpu"
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Data:
    train: Any  # datasets.Dataset
    valid: Any | None
    n_train: int


def _load_data(
    spec: JobSpec,
    formatter: ChatFormatter,
    train_file: Path,
    validation_file: Path | None,
    max_length: int,
    say: Say,
    files: ValidatedFiles | None,
) -> _Data:
    method = MethodType(spec.method)
    rows_fn = dpo_rows if method == MethodType.DPO else sft_rows
    if files is None:  # the library used on its own; the worker passes what it validated
        files = validate_files(train_file, validation_file, method, min_examples=1)
    train_data = files.train
    rows, stats = rows_fn(train_data.examples, formatter, max_length)
    if not rows:
        raise TrainingError(
            TRAINING_FAILED,
            f"no training example has anything to train on within {max_length} tokens",
        )
    say(
        f"Training data: {len(rows)} examples ({train_data.format.value}), "
        f"{stats.tokens} tokens after truncation to {max_length}"
    )
    if stats.truncated:
        say(f"{stats.truncated} training example(s) were truncated to {max_length} tokens", "warn")
    if stats.dropped:
        say(
            f"{stats.dropped} training example(s) were skipped: nothing to train on within "
            f"{max_length} tokens",
            "warn",
        )
    valid = None
    if files.valid is not None:
        valid_rows, _ = rows_fn(files.valid.examples, formatter, max_length)
        if valid_rows:
            valid = to_dataset(valid_rows)
            say(f"Validation data: {len(valid_rows)} examples")
        else:
            say("no validation example has anything to evaluate; validation skipped", "warn")
    return _Data(train=to_dataset(rows), valid=valid, n_train=len(rows))


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError | torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


def _training_args(spec: JobSpec, plan: JobPlan, output_dir: Path, max_steps: int | None) -> dict:
    device = plan.device
    return {
        "output_dir": str(output_dir / "checkpoints"),
        "num_train_epochs": plan.hp.n_epochs,
        "max_steps": max_steps if max_steps is not None else -1,
        "per_device_train_batch_size": plan.micro_batch,
        "per_device_eval_batch_size": plan.micro_batch,
        "gradient_accumulation_steps": plan.accumulation,
        "learning_rate": learning_rate(plan.hp),
        "lr_scheduler_type": "linear",
        "warmup_steps": 0,
        "weight_decay": 0.0,
        "optim": "adamw_torch_fused" if device.device == "cuda" else "adamw_torch",
        # TRL defaults to bf16=True and gradient_checkpointing=True: always chosen here.
        "bf16": device.bf16,
        "fp16": False,
        "gradient_checkpointing": device.gradient_checkpointing,
        "use_cpu": device.device == "cpu",
        "seed": spec.seed,
        "data_seed": spec.seed,
        "logging_steps": plan.metrics_every,
        "logging_first_step": True,
        "logging_nan_inf_filter": False,  # a NaN loss must reach our check
        "save_strategy": "epoch",
        "save_total_limit": 3,
        "eval_strategy": "no",  # validation is run by our Evaluator
        "report_to": "none",
        "disable_tqdm": True,
        "dataloader_pin_memory": device.device == "cuda",
        "dataloader_num_workers": 0,
    }


def _build_trainer(
    spec: JobSpec,
    plan: JobPlan,
    *,
    model: Any,
    tokenizer: Any,
    data: _Data,
    args: dict[str, Any],
    max_length: int,
    bridge: ProgressBridge,
) -> Any:
    peft_config = peft_lora_config(spec.lora)
    if spec.method == MethodType.DPO:
        from trl import DPOConfig

        from trainer.trainers import TuneForgeDPOTrainer

        return TuneForgeDPOTrainer(
            model=model,
            # Reference = the base with the adapter disabled (ref_model=None with PEFT).
            args=DPOConfig(
                **args, beta=plan.hp.beta, max_length=max_length, precompute_ref_log_probs=False
            ),
            train_dataset=data.train,
            eval_dataset=data.valid,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=[bridge],
        )
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
        model=model,
        args=config,
        train_dataset=data.train,
        eval_dataset=data.valid,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[bridge],
    )


def _quiet(trainer: Any) -> None:
    """Progress goes through our callbacks; drop the Trainer's stdout printers."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)


def _release(trainer: Any) -> None:
    trainer.model = None
    trainer.model_wrapped = None
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def train(
    spec: JobSpec,
    base_model_dir: Path,
    train_file: Path,
    validation_file: Path | None,
    output_dir: Path,
    callbacks: TrainCallbacks,
    *,
    served_model_name: str,
    resume_from: Path | None = None,
    max_length: int = 1024,
    max_steps: int | None = None,
    metrics_every: int | None = None,
    valid_every: int | None = None,
    device: str | None = None,
    cpu_threads: int | None = None,
    merge: bool = True,
    files: ValidatedFiles | None = None,
) -> TrainResult:
    """Fine-tune `base_model_dir` on `train_file` as `spec` says; see the module docstring.

    `metrics_every` (optimizer steps between metrics events; default 1, more for runs over 500
    steps) and `valid_every` (steps between validation-batch metrics; default about 10 per run)
    tune reporting. `device` forces "cpu" or "cuda"; `cpu_threads` sets torch's intra-op
    threads on CPU (default: the cores not kept busy by other processes). `merge=False` skips
    the merged model. `files` are the examples the caller already validated from `train_file`
    and `validation_file` (read from them otherwise). Raises `TrainingError` (NaN loss, out of
    memory) and `DataError`.
    """
    offline()
    base_model_dir, output_dir = Path(base_model_dir), Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    warnings: list[str] = []

    def say(message: str, level: str = "info") -> None:
        if level == "warn":
            warnings.append(message)
        callbacks.on_message(message, level)

    tokenizer = load_tokenizer(base_model_dir)
    formatter = ChatFormatter.for_tokenizer(tokenizer)
    if spec.method == MethodType.SUPERVISED and formatter.training_template is None:
        say(
            "the chat template has no known assistant markers; assistant tokens are located "
            "by rendering conversation prefixes",
            "warn",
        )
    data = _load_data(spec, formatter, train_file, validation_file, max_length, say, files)
    prior = read_run_state(resume_from) if resume_from else {}
    plan = plan_job(
        spec,
        base_model_dir,
        data.n_train,
        max_length=max_length,
        max_steps=max_steps,
        device=device,
        cpu_threads=cpu_threads,
        metrics_every=metrics_every,
        valid_every=valid_every,
        prior=prior,
    )
    say(f"Quantization: {plan.quantization.reason}")
    say(f"Device: {plan.device.describe()}")
    say(f"Hyperparameters: {plan.describe_hyperparameters()}")
    run = RunState(
        total_steps=plan.expected_steps,
        tokens_offset=int(prior.get("trained_tokens", 0)),
        extra={"hyperparameters": plan.hp.model_dump(), "seed": spec.seed},
    )

    def result(status: Status, **kwargs: Any) -> TrainResult:
        return TrainResult(
            status=status,
            hyperparameters=plan.hp,
            total_steps=run.total_steps,
            quantization=plan.quantization.quantization,
            quantization_reason=plan.quantization.reason,
            device=plan.device.device,
            warnings=warnings,
            **kwargs,
        )

    early = callbacks.stop_request()
    if early is not None:
        return result(
            "cancelled" if early == StopRequest.CANCEL else "paused",
            step=int(prior.get("step", 0)),
            trained_tokens=run.tokens_offset,
            checkpoint_dir=resume_from if early == StopRequest.PAUSE else None,
        )

    results = ResultsCsv(output_dir / "results.csv")
    if resume_from is not None:
        results.load(Path(resume_from) / "results.csv", up_to_step=int(prior.get("step", 0)))
    bridge = ProgressBridge(
        callbacks,
        run,
        results,
        served_model_name=served_model_name,
        valid_every=plan.valid_every,
    )

    threads_before = torch.get_num_threads()
    if plan.device.device == "cpu" and plan.device.cpu_threads:
        torch.set_num_threads(plan.device.cpu_threads)
    try:
        from transformers import set_seed

        set_seed(spec.seed)
        model = load_base_model(base_model_dir, plan.device, plan.quantization.quantization)
        trainer = _build_trainer(
            spec,
            plan,
            model=model,
            tokenizer=tokenizer,
            data=data,
            args=_training_args(spec, plan, output_dir, max_steps),
            max_length=max_length,
            bridge=bridge,
        )
        del model
        _quiet(trainer)
        bridge.trainer = trainer
        if data.valid is not None:
            bridge.evaluator = Evaluator(
                trainer,
                trainer.eval_dataset,
                plan.micro_batch,
                dpo=spec.method == MethodType.DPO,
            )

        started = time.time()
        try:
            trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        except TrainingError:
            raise
        except Exception as exc:
            if _is_oom(exc):
                raise TrainingError(
                    OUT_OF_MEMORY,
                    f"out of memory on {plan.device.device} with batch_size="
                    f"{plan.hp.batch_size} and max_length={max_length}; lower the batch size or "
                    "the sequence length, or train the base in 4-bit (lora.quantization='4bit')",
                ) from exc
            raise
        step = int(trainer.state.global_step)
        run.total_steps = int(trainer.state.max_steps) or run.total_steps
        trained_tokens = bridge.trained_tokens()
        results_csv = results.write()

        if run.stop_reason is not None:
            _release(trainer)
            paused = run.stop_reason == StopRequest.PAUSE
            saved = (run.last_checkpoint.name.removeprefix("checkpoint-")
                     if run.last_checkpoint else None)
            say(
                f"Training paused at step {step}; it resumes from checkpoint step-{saved}"
                if paused and saved
                else f"Training paused at step {step}"
                if paused
                else f"Training cancelled at step {step}"
            )
            return result(
                "paused" if paused else "cancelled",
                step=step,
                trained_tokens=trained_tokens,
                metrics=run.last_metrics,
                checkpoint_dir=run.last_checkpoint if paused else None,
                results_csv=results_csv,
            )

        final = {**run.last_metrics, "step": step, "total_steps": run.total_steps}
        final["trained_tokens"] = trained_tokens
        if bridge.evaluator is not None:
            full = bridge.evaluator.full()
            final["full_valid_loss"] = full["loss"]
            final["full_valid_mean_token_accuracy"] = full["accuracy"]
            results.add(
                {
                    "step": step,
                    "valid_loss": full["loss"],
                    "valid_mean_token_accuracy": full["accuracy"],
                }
            )
            results_csv = results.write()
        final["estimated_finish"] = int(time.time())
        callbacks.on_metrics(final)

        adapter_dir = save_adapter(trainer.model, output_dir / "adapter", served_model_name)
        _release(trainer)
        merged_dir = None
        if merge:
            merged_dir = merge_adapter(
                base_model_dir, adapter_dir, output_dir / "merged", tokenizer
            )
        say(
            f"Training finished: {step} steps, {trained_tokens} tokens in "
            f"{time.time() - started:.0f} s"
        )
        return result(
            "succeeded",
            step=step,
            trained_tokens=trained_tokens,
            metrics=final,
            adapter_dir=adapter_dir,
            merged_dir=merged_dir,
            results_csv=results_csv,
        )
    finally:
        torch.set_num_threads(threads_before)
