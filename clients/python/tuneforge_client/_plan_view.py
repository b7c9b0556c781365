"""How `tuneforge jobs plan` shows a plan to people (`--json` prints the object instead)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tuneforge_client.plans import JobPlan, PlanFile


def _bytes(n: int | None) -> str:
    return f"{n / 1024**3:.1f} GiB" if n is not None else "-"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _file(console: Console, what: str, data: PlanFile) -> None:
    head = (f"[bold]{what}[/bold] {escape(data.file_id)}: {data.format or 'unknown format'}, "
            f"{data.n_examples} example(s) on {data.n_lines} line(s)")
    if data.n_errors:
        head += f", [red]{data.n_errors} error(s)[/red]"
    console.print(head)
    if data.tokens is not None:
        tokens = data.tokens
        console.print(f"  tokens per example: min {tokens.min}, median {tokens.median:g}, max "
                      f"{tokens.max}; total {tokens.total}; {tokens.n_over_max_seq_length} "
                      f"over max_seq_length {tokens.max_seq_length}")
    for error in data.errors:
        console.print(f"  [red]{escape(error.message)}[/red] ({error.code})")
    if data.errors_truncated:
        console.print(f"  … and {data.n_errors - len(data.errors)} more")


def show_plan(console: Console, plan: JobPlan) -> None:
    model = escape(plan.model)
    if plan.parent_model:
        model += f" (continues {escape(plan.parent_model)} on {escape(plan.base_model)})"
    state = "[green]valid[/green]" if plan.valid else "[red]invalid data[/red]"
    console.print(f"[bold]plan[/bold] {plan.method} on {model}: {state}")
    _file(console, "training file", plan.training_data)
    if plan.validation_data is not None:
        _file(console, "validation file", plan.validation_data)
    table = Table("device", "tuning", "fits", "peak memory", "batch", "epochs", "steps",
                  "duration")
    for d in plan.devices:
        fits = {True: "yes", False: "[red]no[/red]", None: "?"}[d.fits]
        tuning = d.tuning + (" (4-bit)" if d.quantization == "4bit" else "")
        table.add_row(d.name, tuning, fits, _bytes(d.estimated_peak_memory_bytes),
                      str(d.hyperparameters.batch_size), str(d.hyperparameters.n_epochs),
                      str(d.steps), _duration(d.estimated_seconds))
    console.print(table)
    for warning in plan.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(warning.message)}")
