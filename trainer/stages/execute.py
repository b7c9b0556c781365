"""Stage 4: the training loop itself, on the planned CPU threads, out-of-memory made clear."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch

from trainer.errors import OUT_OF_MEMORY, TrainingError
from trainer.planning import JobPlan
from trainer.stages.build import Session


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError | torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


@contextlib.contextmanager
def planned_threads(plan: JobPlan) -> Iterator[None]:
    before = torch.get_num_threads()
    if plan.device.device == "cpu" and plan.device.cpu_threads:
        torch.set_num_threads(plan.device.cpu_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def execute_training(session: Session, plan: JobPlan, resume_from: Path | None) -> None:
    try:
        session.trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    except TrainingError:
        raise
    except Exception as exc:
        if is_oom(exc):
            raise TrainingError(
                OUT_OF_MEMORY,
                f"out of memory on {plan.device.device} with batch_size={plan.hp.batch_size} "
                f"and max_seq_length={plan.training.max_seq_length}; lower the batch size or "
                "the sequence length, or train the base in 4-bit (lora.quantization='4bit')",
            ) from exc
        raise
    trainer = session.trainer
    session.run.total_steps = int(trainer.state.max_steps) or session.run.total_steps
