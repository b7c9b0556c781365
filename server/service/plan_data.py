"""The plan's data pass over one local file: every error (up to a limit) instead of the first,
the detected format, and the examples that passed, with their token counts.

The rules and messages are the API-side validation's (`server.service.validation`, on
`tuneforge.jsonl` and `tuneforge.data_formats`): the same `JsonlLines.take` per line and the
same `FormatCheck` per object, only continued after a bad line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.service.validation import INVALID_N_EXAMPLES
from tuneforge.data_formats import DpoExample, FormatCheck, SftExample
from tuneforge.domain import MethodType
from tuneforge.jsonl import MAX_LINE_BYTES, JsonlLines, LineError
from tuneforge.token_counts import ChatTokenizer, TokenStats


@dataclass(frozen=True)
class DataError:
    line: int | None  # None: about the whole file (too few examples)
    code: str
    message: str


@dataclass
class FileReport:
    code: str  # the worker's code for this file's errors
    max_errors: int = 100  # errors listed; the rest are only counted
    format: str | None = None
    n_lines: int = 0
    examples: list[SftExample | DpoExample] = field(default_factory=list)
    errors: list[DataError] = field(default_factory=list)
    n_errors: int = 0
    tokens: TokenStats | None = None
    token_error: str | None = None

    def error(self, line: int | None, message: str, code: str | None = None) -> None:
        self.n_errors += 1
        if len(self.errors) < self.max_errors:
            self.errors.append(DataError(line, code or self.code, message))

    @property
    def errors_truncated(self) -> bool:
        return self.n_errors > len(self.errors)


def _raw_lines(path: Path) -> Any:
    """Each line's bytes (without `\\n`), at most `MAX_LINE_BYTES` + 1 of them: a longer line
    is cut there (the line rule refuses it) and the rest of it skipped."""
    with open(path, "rb") as f:
        while raw := f.readline(MAX_LINE_BYTES + 1):
            if raw.endswith(b"\n"):
                yield raw[:-1]
                continue
            yield raw
            if len(raw) > MAX_LINE_BYTES:
                while (rest := f.readline(MAX_LINE_BYTES + 1)) and not rest.endswith(b"\n"):
                    pass


def check_file(path: Path, method: MethodType, *, min_examples: int, code: str,
               tokenizer: ChatTokenizer | None, max_seq_length: int,
               max_errors: int = 100) -> FileReport:
    """Every line of a file through the validation's rules; the good examples counted."""
    report = FileReport(code=code, max_errors=max_errors)
    lines = JsonlLines()
    check = FormatCheck(method)
    stats = TokenStats(max_seq_length) if tokenizer is not None else None
    for raw in _raw_lines(path):
        try:
            obj = lines.take(raw)
            if obj is None:
                continue
            example = check.add(lines.lines, obj)
        except LineError as exc:
            report.error(exc.line, exc.message)
            continue
        report.examples.append(example)
        if stats is not None and tokenizer is not None and report.token_error is None:
            try:
                stats.add(tokenizer.count(example))
            except Exception as exc:  # a template that raises for this conversation
                report.token_error = f"line {lines.lines}: the chat template failed: {exc}"
    report.n_lines = lines.lines
    report.format = check.format.value if check.format else None
    if report.token_error is None:
        report.tokens = stats
    examples = lines.examples  # JSON objects, as the validation counts them
    if not examples or examples < min_examples:
        report.error(None, f"The file has {examples} example(s), but must have at least "
                           f"{max(min_examples, 1)} examples", code=INVALID_N_EXAMPLES)
    return report
