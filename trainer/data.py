"""Validate a JSONL training file and convert it to chat examples.

`load_dataset_file` streams the file line by line (bounded memory), detects the format from
the first example, requires every later line to have the same format, validates each example
and converts it to chat messages. Rule violations raise `DataError` with OpenAI's codes.
`build_report` (re-exported from `trainer.data_report`) summarises a loaded file.
"""

from __future__ import annotations

from pathlib import Path

from trainer.data_report import build_report
from trainer.errors import INVALID_N_EXAMPLES, INVALID_TRAINING_FILE, DataError
from trainer.examples import FORMAT_METHOD, DataFormat, DpoExample, LoadedData, SftExample
from trainer.formats import PARSERS, FormatViolation, detect_format
from trainer.jsonl import DEFAULT_MAX_LINE_BYTES, iter_jsonl
from tuneforge.domain import MethodType

__all__ = [
    "DataError",
    "DataFormat",
    "DpoExample",
    "LoadedData",
    "SftExample",
    "build_report",
    "load_dataset_file",
]


def load_dataset_file(
    path: Path,
    method: MethodType,
    *,
    min_examples: int = 10,
    code: str = INVALID_TRAINING_FILE,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> LoadedData:
    """Read, validate and convert `path` for `method`.

    `code` is the error code for rule violations (`invalid_training_file`; pass
    `invalid_validation_file` for a validation file). Fewer than `min_examples` examples
    raises `DataError("invalid_n_examples", ...)`.
    """
    method = MethodType(method)
    file_format: DataFormat | None = None
    first_line = 0
    examples: list[SftExample | DpoExample] = []
    lines = 0
    for lineno, obj in iter_jsonl(Path(path), code=code, max_line_bytes=max_line_bytes):
        lines += 1
        try:
            line_format = detect_format(obj)
        except FormatViolation as exc:
            raise DataError(code, f"line {lineno}: {exc}", lineno) from None
        if file_format is None:
            file_format, first_line = line_format, lineno
            wanted = FORMAT_METHOD[file_format]
            if wanted != method:
                kind = "preference (DPO)" if wanted == MethodType.DPO else "supervised (SFT)"
                raise DataError(
                    code,
                    f"line {lineno}: the file is in {file_format.value} format, which is "
                    f"{kind} data, but the job's method is {method.value}",
                    lineno,
                )
        elif line_format != file_format:
            raise DataError(
                code,
                f"line {lineno}: example is in {line_format.value} format but the file is in "
                f"{file_format.value} format (line {first_line}); one file must use one format",
                lineno,
            )
        try:
            example = PARSERS[file_format](obj)
        except FormatViolation as exc:
            raise DataError(code, f"line {lineno}: {exc}", lineno) from None
        example.line = lineno
        examples.append(example)
    if not examples or len(examples) < min_examples:
        raise DataError(
            INVALID_N_EXAMPLES,
            f"The file has {len(examples)} example(s), but must have at least "
            f"{max(min_examples, 1)} examples",
        )
    assert file_format is not None
    return LoadedData(format=file_format, method=method, examples=examples, lines=lines)
