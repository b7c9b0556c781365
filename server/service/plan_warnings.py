"""The seeds' warnings about a planned job, each with a stable code:

- `invalid_data`: the files have errors; the job would fail validation.
- `few_examples`: under 100 training examples — prompting (instructions and a few examples in
  the prompt) may be enough.
- `overfitting_risk`: 100 to 1,000 examples — hold out a validation split and stop early
  (said only when the job does not do both already).
- `few_steps`: fewer than 10 optimizer steps on a device — too few to learn anything.
- `truncated_examples`: examples longer than `max_seq_length`, truncated in training.
- `does_not_fit`: the asked tuning does not fit a device (the worker would fail the job).
- `token_counts_unavailable`: tokens could not be counted here (no durations either).
"""

from __future__ import annotations

from server.service.plan_data import FileReport
from server.service.plan_devices import JobData
from server.service.plan_objects import PlanDevice, PlanWarning
from tuneforge.domain import TuningType
from tuneforge.memory import GIB

FEW_EXAMPLES = 100
OVERFITTING_EXAMPLES = 1000
MIN_USEFUL_STEPS = 10


def _names(devices: list[PlanDevice]) -> str:
    return ", ".join(d.name for d in devices)


def plan_warnings(job: JobData, train: FileReport, valid: FileReport | None,
                  devices: list[PlanDevice], token_problem: str | None) -> list[PlanWarning]:
    warnings: list[PlanWarning] = []

    def warn(code: str, message: str) -> None:
        warnings.append(PlanWarning(code=code, message=message))

    errors = train.n_errors + (valid.n_errors if valid else 0)
    if errors:
        warn("invalid_data", f"The files have {errors} error(s) (listed with their lines): "
                             "the job would fail validation. Fix them and upload again.")
    n = len(train.examples)
    if n < FEW_EXAMPLES:
        warn("few_examples", f"Only {n} training example(s): under {FEW_EXAMPLES}, prompting "
                             "(instructions and a few examples in the prompt) may be enough; "
                             "fine-tuning usually needs a few hundred or more.")
    elif n <= OVERFITTING_EXAMPLES and not (
            (valid is not None or job.training.validation_split is not None)
            and job.training.early_stopping is not None):
        warn("overfitting_risk", f"{n} training examples: watch for overfitting. Hold out a "
                                 "validation split (training.validation_split, e.g. 0.1) and "
                                 "use early stopping (training.early_stopping).")
    few = [d for d in devices if d.steps < MIN_USEFUL_STEPS]
    if few:
        steps = sorted({d.steps for d in few})
        warn("few_steps", f"Only {'/'.join(map(str, steps))} optimizer step(s) on "
                          f"{_names(few)}: under {MIN_USEFUL_STEPS} steps the model learns "
                          "next to nothing. Use more epochs, a smaller batch size or "
                          "gradient accumulation, or more data.")
    for report, what in ((train, "training"), (valid, "validation")):
        if report is not None and report.tokens is not None and report.tokens.over:
            over = report.tokens.over
            lines = ", ".join(map(str, over[:10])) + (" …" if len(over) > 10 else "")
            warn("truncated_examples",
                 f"{len(over)} {what} example(s) are longer than max_seq_length "
                 f"({job.max_length} tokens) and will be truncated (lines {lines}).")
    asked = job.training.tuning
    unfit = [d for d in devices if d.fits is False]
    if unfit:
        what = {TuningType.FULL: "A full fine-tune", TuningType.SPECTRUM: "A Spectrum job"}.get(
            asked, "This job")
        sizes = "; ".join(
            f"{d.name}: needs about {d.estimated_peak_memory_bytes / GIB:.1f} GiB"
            if d.estimated_peak_memory_bytes else f"{d.name}: {d.reason}" for d in unfit)
        warn("does_not_fit", f"{what} does not fit {_names(unfit)} ({sizes}); the worker "
                             "would fail it at once there.")
    if token_problem:
        warn("token_counts_unavailable", f"Tokens were not counted: {token_problem}.")
    return warnings
