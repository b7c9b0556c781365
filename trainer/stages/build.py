"""Stage 3: the model (through `trainer.tuning`), the method's TRL trainer, and what watches
it: the progress bridge, the evaluator and early stopping."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.builders import BUILDERS, training_args
from trainer.early_stopping import EarlyStopping
from trainer.evaluation import Evaluator
from trainer.planning import JobPlan
from trainer.progress import ProgressBridge, RunState, TrainCallbacks
from trainer.results import ResultsCsv
from trainer.stages.load_data import TrainingData
from trainer.tuning import PreparedModel, prepare_model
from tuneforge.domain import JobSpec, MethodType

Say = Callable[..., None]


@dataclass
class Session:
    """A built run: the TRL trainer and its observers."""

    trainer: Any
    bridge: ProgressBridge
    results: ResultsCsv
    run: RunState
    prepared: PreparedModel
    early_stopping: EarlyStopping | None


def build_session(
    spec: JobSpec,
    plan: JobPlan,
    data: TrainingData,
    *,
    tokenizer: Any,
    base_model_dir: Path,
    parent_dir: Path | None,
    output_dir: Path,
    callbacks: TrainCallbacks,
    run: RunState,
    served_model_name: str,
    resume_from: Path | None,
    prior: dict[str, Any],
    max_steps: int | None,
    say: Say,
) -> Session:
    from transformers import set_seed

    set_seed(spec.seed)
    prepared = prepare_model(spec, plan.decision, plan.device, base_model_dir, parent_dir, say)
    say(f"Trainable: {prepared.trainable}")
    results = ResultsCsv(output_dir / "results.csv")
    if resume_from is not None:
        results.load(Path(resume_from) / "results.csv", up_to_step=int(prior.get("step", 0)))
    early = None
    if plan.training.early_stopping is not None and data.valid is not None:
        early = EarlyStopping(plan.training.early_stopping, output_dir / "best",
                              prior.get("early_stopping"))
        if resume_from is not None:
            early.take_from(resume_from)
    bridge = ProgressBridge(callbacks, run, results, served_model_name=served_model_name,
                            valid_every=plan.valid_every, early_stopping=early)
    trainer = BUILDERS[MethodType(spec.method)](
        plan,
        prepared,
        tokenizer=tokenizer,
        train=data.train,
        valid=data.valid,
        args=training_args(spec, plan, output_dir, max_steps),
        callbacks=[bridge],
    )
    prepared.model = prepared.ref_model = None  # the trainer holds them (possibly wrapped)
    _quiet(trainer)
    bridge.trainer = trainer
    if data.valid is not None:
        bridge.evaluator = Evaluator(trainer, trainer.eval_dataset, plan.micro_batch,
                                     dpo=spec.method == MethodType.DPO)
    return Session(trainer, bridge, results, run, prepared, early)


def _quiet(trainer: Any) -> None:
    """Progress goes through our callbacks; drop the Trainer's stdout printers."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
