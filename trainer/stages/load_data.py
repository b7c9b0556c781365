"""Stage 1: the job's examples as tokenized rows, with the validation split held out."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.data import ValidatedFiles, validate_files
from trainer.encode import ChatFormatter, MaskError
from trainer.errors import (
    INVALID_TRAINING_FILE,
    INVALID_VALIDATION_FILE,
    TRAINING_FAILED,
    TrainingError,
)
from trainer.tokenized import dpo_rows, sft_rows, to_dataset
from tuneforge.domain import JobSpec, MethodType
from tuneforge.resolve import held_out_count

Say = Callable[..., None]


@dataclass
class TrainingData:
    train: Any  # datasets.Dataset
    valid: Any | None
    n_train: int
    n_held_out: int = 0  # examples of the training file held out for validation


def split_examples(examples: list[Any], fraction: float, seed: int
                   ) -> tuple[list[Any], list[Any]]:
    """(train, held out): `held_out_count` examples drawn with the job's seed, so that a
    resumed run holds out the same ones; both keep the file's order."""
    n_out = held_out_count(len(examples), fraction)
    out = set(random.Random(seed).sample(range(len(examples)), n_out))
    return ([e for i, e in enumerate(examples) if i not in out],
            [e for i, e in enumerate(examples) if i in out])


def load_data(
    spec: JobSpec,
    formatter: ChatFormatter,
    train_file: Path,
    validation_file: Path | None,
    max_length: int,
    say: Say,
    files: ValidatedFiles | None,
) -> TrainingData:
    method = MethodType(spec.method)
    rows_fn = dpo_rows if method == MethodType.DPO else sft_rows
    if files is None:  # the library used on its own; the worker passes what it validated
        files = validate_files(train_file, validation_file, method, min_examples=1)
    examples, valid_examples = files.train.examples, None
    split = spec.training.validation_split
    if files.valid is not None:
        valid_examples = files.valid.examples
    elif split is not None:
        examples, valid_examples = split_examples(examples, split, spec.seed)
        if valid_examples:
            say(f"Validation split: {len(valid_examples)} of {len(files.train.examples)} "
                f"training examples held out for validation ({split:g})")
        else:
            say("the training file has a single example: nothing held out for validation",
                "warn")
    try:
        rows, stats = rows_fn(examples, formatter, max_length)
    except MaskError as exc:
        raise exc.data_error() from None
    if not rows:
        raise TrainingError(
            TRAINING_FAILED,
            f"no training example has anything to train on within {max_length} tokens",
        )
    say(
        f"Training data: {len(rows)} examples ({files.train.format.value}), "
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
    if valid_examples:
        try:
            valid_rows, _ = rows_fn(valid_examples, formatter, max_length)
        except MaskError as exc:
            code = INVALID_TRAINING_FILE if files.valid is None else INVALID_VALIDATION_FILE
            raise exc.data_error(code) from None
        if valid_rows:
            valid = to_dataset(valid_rows)
            say(f"Validation data: {len(valid_rows)} examples")
        else:
            say("no validation example has anything to evaluate; validation skipped", "warn")
    held_out = len(valid_examples or []) if files.valid is None else 0
    return TrainingData(train=to_dataset(rows), valid=valid, n_train=len(rows),
                        n_held_out=held_out)
