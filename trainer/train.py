"""`train`: one fine-tuning job (SFT or DPO; LoRA, QLoRA, full or Spectrum) from local files to
local artifacts, as the named stages of `trainer.stages`.

The function takes local paths and a JobSpec, reports progress through `TrainCallbacks`, and
knows nothing of the DB, S3 or the queue. Output layout under `output_dir`:

    checkpoints/checkpoint-{step}/   end of each epoch, at each new best evaluation (early
                                     stopping) and on pause: a PEFT adapter (full weights for
                                     full/Spectrum jobs) + optimizer, scheduler and RNG state
                                     (resumable); the last 3 are kept, and the best one
    best/                            early stopping: the best evaluation's trainable weights
    adapter/                         final PEFT adapter (base_model_name_or_path = served name)
    merged/                          base + adapter merged, or a full/Spectrum job's weights
    results.csv                      OpenAI's per-step metrics table
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

from trainer.data import ValidatedFiles
from trainer.encode import ChatFormatter
from trainer.errors import TrainingError
from trainer.modeling import load_tokenizer
from trainer.progress import RunState, TrainCallbacks, read_run_state
from trainer.stages.build import build_session
from trainer.stages.execute import execute_training, is_oom, planned_threads
from trainer.stages.finish import TrainResult, finish
from trainer.stages.load_data import load_data
from trainer.stages.plan import plan_run
from trainer.stop import StopRequest
from tuneforge.base_models import offline
from tuneforge.domain import JobSpec, MethodType
from tuneforge.resolve import DEFAULT_MAX_SEQ_LENGTH

__all__ = ["StopRequest", "TrainCallbacks", "TrainResult", "TrainingError", "train"]

# Kept for callers of the stages' former private names.
_load_data = load_data
_is_oom = is_oom


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
    parent_dir: Path | None = None,
    max_length: int | None = None,
    max_steps: int | None = None,
    metrics_every: int | None = None,
    valid_every: int | None = None,
    device: str | None = None,
    cpu_threads: int | None = None,
    merge: bool = True,
    files: ValidatedFiles | None = None,
) -> TrainResult:
    """Fine-tune `base_model_dir` on `train_file` as `spec` says; see the module docstring.

    `parent_dir` is the local copy of the model the job starts from (`spec.parent`).
    `max_length` overrides `spec.training.max_seq_length` (default 1024). `metrics_every`
    (optimizer steps between metrics events; default 1, more for runs over 500 steps) and
    `valid_every` (steps between evaluations; default `training.eval_interval`) tune
    reporting. `device` forces "cpu" or "cuda"; `cpu_threads` sets torch's intra-op threads on
    CPU (default: the cores not kept busy by other processes). `merge=False` skips the merged
    model of an adapter. `files` are the examples the caller already validated from
    `train_file` and `validation_file` (read from them otherwise). Raises `TrainingError`
    (NaN loss, out of memory, an option this device cannot run) and `DataError`.
    """
    offline()
    base_model_dir, output_dir = Path(base_model_dir), Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    warnings: list[str] = []

    def say(message: str, level: str = "info") -> None:
        if level == "warn":
            warnings.append(message)
        callbacks.on_message(message, level)

    max_length = max_length or spec.training.max_seq_length or DEFAULT_MAX_SEQ_LENGTH
    tokenizer = load_tokenizer(base_model_dir)
    formatter = ChatFormatter.for_tokenizer(tokenizer, model_name=spec.base_model or None)
    if spec.method == MethodType.SUPERVISED:
        say(f"Loss mask: assistant tokens located by {formatter.mask_method.value}")
    data = load_data(spec, formatter, train_file, validation_file, max_length, say, files)
    prior = read_run_state(resume_from) if resume_from else {}
    plan = plan_run(spec, base_model_dir, data, say=say,
                    has_validation_file=validation_file is not None or (
                        files is not None and files.valid is not None),
                    max_length=max_length, max_steps=max_steps, device=device,
                    cpu_threads=cpu_threads, metrics_every=metrics_every,
                    valid_every=valid_every, prior=prior)
    run = RunState(total_steps=plan.expected_steps,
                   tokens_offset=int(prior.get("trained_tokens", 0)),
                   extra={"hyperparameters": plan.hp.model_dump(), "seed": spec.seed})
    result = functools.partial(
        TrainResult, hyperparameters=plan.hp, quantization=plan.decision.quantization,
        quantization_reason=plan.decision.reason, device=plan.device.device, warnings=warnings,
        tuning=plan.decision.tuning, tuning_reason=plan.decision.reason, training=plan.training)

    early = callbacks.stop_request()
    if early is not None:
        return result(status="cancelled" if early == StopRequest.CANCEL else "paused",
                      total_steps=run.total_steps, step=int(prior.get("step", 0)),
                      trained_tokens=run.tokens_offset,
                      checkpoint_dir=resume_from if early == StopRequest.PAUSE else None)

    with planned_threads(plan):
        session = build_session(
            spec, plan, data, tokenizer=tokenizer, base_model_dir=base_model_dir,
            parent_dir=parent_dir, output_dir=output_dir, callbacks=callbacks, run=run,
            served_model_name=served_model_name, resume_from=resume_from, prior=prior,
            max_steps=max_steps, say=say)
        started = time.time()
        execute_training(session, plan, resume_from)
        outcome = finish(session, spec, plan, tokenizer=tokenizer,
                         base_model_dir=base_model_dir, output_dir=output_dir,
                         served_model_name=served_model_name, merge=merge,
                         callbacks=callbacks, say=say, started=started)
    return result(total_steps=run.total_steps, **outcome)
