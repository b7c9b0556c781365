"""Errors the training library raises, each with an OpenAI-style error code."""

from __future__ import annotations

# Data errors (OpenAI's codes for a rejected training file).
INVALID_TRAINING_FILE = "invalid_training_file"
INVALID_VALIDATION_FILE = "invalid_validation_file"
INVALID_N_EXAMPLES = "invalid_n_examples"

# Training errors.
NAN_LOSS = "nan_loss"
OUT_OF_MEMORY = "out_of_memory"
UNSUPPORTED = "unsupported"
TRAINING_FAILED = "training_failed"


class DataError(Exception):
    """A training or validation file breaks a rule. `message` starts with `line N: ` when
    the problem is on one line, and `line` is then N (1-based)."""

    def __init__(self, code: str, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.line = line

    def __repr__(self) -> str:
        return f"DataError({self.code!r}, {self.message!r}, line={self.line!r})"


class TrainingError(Exception):
    """Training cannot go on (NaN loss, out of memory, unsupported setup)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"TrainingError({self.code!r}, {self.message!r})"
