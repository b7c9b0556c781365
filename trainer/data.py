"""Validate a JSONL training file and convert it to chat examples, once per job run.

`load_dataset_file` streams the file line by line (bounded memory) through the same rules the
upload applies (`tuneforge.jsonl`), then the structural pass for the job's method
(`tuneforge.data_formats`: one recognized format per file, each example valid in it,
converted to chat). Rule violations raise `DataError` with OpenAI's codes and the line.
`build_report` (re-exported from `trainer.data_report`) is the model-aware pass over the result.

Training does not read the files again: `validate_files` returns the examples of a job's
training and validation files (`ValidatedFiles`), which the worker passes to
`trainer.train.train`; only the library used on its own reads the files there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trainer.data_report import build_report
from trainer.errors import (
    INVALID_N_EXAMPLES,
    INVALID_TRAINING_FILE,
    INVALID_VALIDATION_FILE,
    DataError,
)
from trainer.examples import LoadedData
from tuneforge.data_formats import DataFormat, DpoExample, FormatCheck, SftExample
from tuneforge.domain import MethodType
from tuneforge.jsonl import MIN_TRAINING_EXAMPLES, LineError, read_jsonl

__all__ = [
    "DataError",
    "DataFormat",
    "DpoExample",
    "LoadedData",
    "SftExample",
    "ValidatedFiles",
    "build_report",
    "load_dataset_file",
    "validate_files",
]


def load_dataset_file(
    path: Path,
    method: MethodType,
    *,
    min_examples: int = MIN_TRAINING_EXAMPLES,
    code: str = INVALID_TRAINING_FILE,
) -> LoadedData:
    """Read, validate and convert `path` for `method`.

    `code` is the error code for rule violations (`invalid_training_file`; pass
    `invalid_validation_file` for a validation file). Fewer than `min_examples` examples
    raises `DataError("invalid_n_examples", ...)`.
    """
    method = MethodType(method)
    check = FormatCheck(method)
    examples: list[SftExample | DpoExample] = []
    try:
        for line, obj in read_jsonl(Path(path)):
            examples.append(check.add(line, obj))
    except LineError as exc:
        raise DataError(code, exc.message, exc.line) from None
    if not examples or len(examples) < min_examples:
        raise DataError(
            INVALID_N_EXAMPLES,
            f"The file has {len(examples)} example(s), but must have at least "
            f"{max(min_examples, 1)} examples",
        )
    assert check.format is not None
    return LoadedData(format=check.format, method=method, examples=examples, lines=len(examples))


@dataclass(frozen=True)
class ValidatedFiles:
    """A job's files, validated and converted: what training consumes."""

    train: LoadedData
    valid: LoadedData | None


def validate_files(train_path: Path, valid_path: Path | None, method: MethodType, *,
                   min_examples: int = MIN_TRAINING_EXAMPLES) -> ValidatedFiles:
    """Both files of a job; a validation file's errors carry `invalid_validation_file`."""
    train = load_dataset_file(train_path, method, min_examples=min_examples)
    valid = None
    if valid_path is not None:
        try:
            valid = load_dataset_file(valid_path, method, min_examples=1)
        except DataError as exc:
            raise DataError(INVALID_VALIDATION_FILE, exc.message, exc.line) from exc
    return ValidatedFiles(train, valid)
