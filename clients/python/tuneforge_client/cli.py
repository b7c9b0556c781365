"""`tuneforge`: the command line of TuneForge, built on the SDK.

Connection settings come from the global flags, else the environment (`TUNEFORGE_BASE_URL`,
`TUNEFORGE_API_KEY`, `TUNEFORGE_GRPC_TARGET`, `TUNEFORGE_TRANSPORT`), else the config file
(`~/.config/tuneforge/config.toml`; see `tuneforge_client.config`). Every command takes `--json`
for scripts: the API's JSON object on stdout, and on failure `{"error": {...}}` and exit code 1.

Other distributions add command groups through the entry-point group `tuneforge.cli_plugins`:
each entry point is a `register(app: typer.Typer) -> None` (the server adds `server` and
`keys`).
"""

from __future__ import annotations

import functools
import inspect
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressBar,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from tuneforge_client import types as t
from tuneforge_client._client import JobParams, TuneForge
from tuneforge_client._plan_view import show_plan  # plan (TuneForge extension)
from tuneforge_client.errors import APIError, TuneForgeError

PLUGIN_GROUP = "tuneforge.cli_plugins"

app = typer.Typer(help="TuneForge: fine-tuning as a service.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
files_app = typer.Typer(help="Upload, list, inspect and delete files.", no_args_is_help=True)
jobs_app = typer.Typer(help="Create, control and follow fine-tuning jobs.",
                       no_args_is_help=True)
models_app = typer.Typer(help="List, inspect and delete models.", no_args_is_help=True)
app.add_typer(files_app, name="files")
app.add_typer(jobs_app, name="jobs")
app.add_typer(models_app, name="models")

out = Console()
err = Console(stderr=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")]


@dataclass
class Options:
    base_url: str | None = None
    api_key: str | None = None
    grpc_target: str | None = None
    transport: str | None = None
    timeout: float | None = None
    config: Path | None = None

    def client(self) -> TuneForge:
        return TuneForge(base_url=self.base_url, api_key=self.api_key,
                         grpc_target=self.grpc_target,
                         transport=self.transport,  # type: ignore[arg-type]
                         timeout=self.timeout, config_file=self.config)


options = Options()


@app.callback()
def main_options(
    base_url: Annotated[str | None, typer.Option(
        help="REST base URL, e.g. http://127.0.0.1:8000/v1 (env TUNEFORGE_BASE_URL)")] = None,
    api_key: Annotated[str | None, typer.Option(
        help="API key (env TUNEFORGE_API_KEY)")] = None,
    grpc_target: Annotated[str | None, typer.Option(
        help="gRPC host:port (env TUNEFORGE_GRPC_TARGET; default: the base URL's "
             "host, port 50051)")] = None,
    transport: Annotated[str | None, typer.Option(
        help="grpc (default) or rest (env TUNEFORGE_TRANSPORT)")] = None,
    timeout: Annotated[float | None, typer.Option(
        help="Seconds per call, default 60 (env TUNEFORGE_TIMEOUT)")] = None,
    config: Annotated[Path | None, typer.Option(
        help="Config file (env TUNEFORGE_CLIENT_CONFIG; default "
             "~/.config/tuneforge/config.toml)")] = None,
) -> None:
    """TuneForge: fine-tuning as a service (OpenAI-compatible)."""
    options.base_url, options.api_key, options.grpc_target = base_url, api_key, grpc_target
    options.transport, options.timeout, options.config = transport, timeout, config


# ---- output helpers ----------------------------------------------------------------------


def _print_json(value: Any) -> None:
    out.print_json(json.dumps(value), indent=2, highlight=False) if out.is_terminal else \
        print(json.dumps(value, indent=2))


def _fail(exc: TuneForgeError, as_json: bool) -> NoReturn:
    if as_json:
        body = {"message": str(exc), "type": "connection_error", "param": None, "code": None}
        if isinstance(exc, APIError):
            body = {"message": exc.message, "type": exc.type, "param": exc.param,
                    "code": exc.code}
        print(json.dumps({"error": body}))
    else:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
    raise typer.Exit(1)


def _when(ts: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _show(obj: t._Object, as_json: bool) -> None:
    if as_json:
        _print_json(obj.to_dict())
        return
    table = Table(show_header=False, box=None)
    for key, value in obj.to_dict().items():
        if value is None or value == [] or value == {}:
            continue
        table.add_row(f"[bold]{key}[/bold]", escape(
            json.dumps(value) if isinstance(value, dict | list) else str(value)))
    out.print(table)


def _files_table(files: list[t.FileObject]) -> Table:
    table = Table("id", "filename", "purpose", "bytes", "created")
    for f in files:
        table.add_row(f.id, escape(f.filename), f.purpose, _size(f.bytes), _when(f.created_at))
    return table


_STATUS_STYLE = {"succeeded": "green", "failed": "red", "cancelled": "yellow",
                 "running": "cyan", "paused": "magenta"}


def _status(status: str) -> str:
    style = _STATUS_STYLE.get(status)
    return f"[{style}]{status}[/{style}]" if style else status


def _jobs_table(jobs: list[t.FineTuningJob]) -> Table:
    table = Table("id", "model", "status", "fine_tuned_model", "created")
    for j in jobs:
        table.add_row(j.id, escape(j.model), _status(j.status), escape(j.fine_tuned_model or "-"),
                      _when(j.created_at))
    return table


def _key_values(pairs: list[str] | None, option: str) -> dict[str, str] | None:
    if not pairs:
        return None
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint=option)
        result[key] = value
    return result


def _number_or_auto(value: str | None, kind: type, option: str) -> Any:
    if value is None or value == "auto":
        return value
    try:
        return kind(value)
    except ValueError:
        raise typer.BadParameter(f"expected a number or 'auto', got {value!r}",
                                 param_hint=option) from None


# ---- the `training` extension's flags (shared by `jobs create` and `jobs plan`) -------------


def training_options(
    tuning: Annotated[str | None, typer.Option(
        help="lora (default), qlora, full, spectrum or auto.",
        rich_help_panel="Training")] = None,
    spectrum_fraction: Annotated[float | None, typer.Option(
        help="Spectrum: fraction of each kind of weight matrix trained (default 0.25).",
        rich_help_panel="Training")] = None,
    max_seq_length: Annotated[int | None, typer.Option(
        help="Longest example in tokens (default 1024).", rich_help_panel="Training")] = None,
    warmup_ratio: Annotated[str | None, typer.Option(
        help="A number or auto (0.05).", rich_help_panel="Training")] = None,
    lr_scheduler: Annotated[str | None, typer.Option(
        help="auto (cosine), linear, cosine or constant.", rich_help_panel="Training")] = None,
    weight_decay: Annotated[str | None, typer.Option(
        help="A number or auto (0.01).", rich_help_panel="Training")] = None,
    gradient_accumulation_steps: Annotated[str | None, typer.Option(
        help="A number or auto.", rich_help_panel="Training")] = None,
    optimizer: Annotated[str | None, typer.Option(
        help="auto (AdamW), adamw or paged_adamw_8bit.", rich_help_panel="Training")] = None,
    gradient_checkpointing: Annotated[str | None, typer.Option(
        help="auto, on or off.", rich_help_panel="Training")] = None,
    validation_split: Annotated[float | None, typer.Option(
        help="Hold out this fraction of the training file for validation.",
        rich_help_panel="Training")] = None,
    eval_interval: Annotated[str | None, typer.Option(
        help="Optimizer steps between evaluations: a number or auto.",
        rich_help_panel="Training")] = None,
    early_stopping_patience: Annotated[int | None, typer.Option(
        help="Stop after this many evaluations without improvement (needs validation data).",
        rich_help_panel="Training")] = None,
    early_stopping_min_delta: Annotated[float | None, typer.Option(
        help="The least validation-loss decrease that counts as improvement.",
        rich_help_panel="Training")] = None,
) -> t.TrainingParams | None:
    """The `training` object of a job request from the Training flags (None: none given)."""
    early_stopping = {k: v for k, v in {"patience": early_stopping_patience,
                                        "min_delta": early_stopping_min_delta}.items()
                      if v is not None}
    training = {k: v for k, v in {
        "tuning": tuning, "spectrum_fraction": spectrum_fraction,
        "max_seq_length": max_seq_length,
        "warmup_ratio": _number_or_auto(warmup_ratio, float, "--warmup-ratio"),
        "lr_scheduler": lr_scheduler,
        "weight_decay": _number_or_auto(weight_decay, float, "--weight-decay"),
        "gradient_accumulation_steps": _number_or_auto(
            gradient_accumulation_steps, int, "--gradient-accumulation-steps"),
        "optimizer": optimizer, "gradient_checkpointing": gradient_checkpointing,
        "validation_split": validation_split,
        "eval_interval": _number_or_auto(eval_interval, int, "--eval-interval"),
        "early_stopping": early_stopping or None,
    }.items() if v is not None}
    return t.TrainingParams(**training) if training else None  # type: ignore[typeddict-item]


F = TypeVar("F", bound=Callable[..., Any])


def _with_flags(builder: Callable[..., Any], into: str, *, first: bool = False
                ) -> Callable[[F], F]:
    """A decorator that gives a command the flags of `builder` (its parameters): the command
    declares a parameter `into` and receives what `builder` makes of them. `first`: the flags
    come before the command's own (they must when some have no default)."""
    flags = list(inspect.signature(builder, eval_str=True).parameters.values())
    names = {p.name for p in flags}

    def decorate(command: F) -> F:
        own = [p for p in inspect.signature(command, eval_str=True).parameters.values()
               if p.name != into]

        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            chosen = {name: kwargs.pop(name) for name in list(kwargs) if name in names}
            return command(*args, **{into: builder(**chosen)}, **kwargs)

        wrapper.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            flags + own if first else own + flags)
        del wrapper.__wrapped__  # typer reads the signature above, not the command's
        return wrapper  # type: ignore[return-value]

    return decorate


# A command with `training: TrainingParams | None` gets the Training flags.
with_training_options = _with_flags(training_options, "training")


# ---- files -------------------------------------------------------------------------------


@files_app.command("upload")
def files_upload(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True,
                                         help="The file to upload.")],
    purpose: Annotated[str, typer.Option(help="fine-tune, user_data, batch, ...")] = "fine-tune",
    as_json: JsonFlag = False,
) -> None:
    """Upload a file, streamed, with a progress bar (bytes, rate, ETA)."""
    show_progress = not as_json and err.is_terminal
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
                        TransferSpeedColumn(), TimeRemainingColumn(), console=err,
                        transient=False, disable=not show_progress)
    task = progress.add_task(escape(path.name), total=path.stat().st_size)
    with options.client() as client, progress:
        try:
            created = client.files.upload(
                path, purpose=purpose,
                progress=lambda sent, total: progress.update(task, completed=sent, total=total))
        except TuneForgeError as exc:
            progress.stop()
            _fail(exc, as_json)
    if as_json:
        _print_json(created.to_dict())
    else:
        out.print(f"uploaded {escape(created.filename)} ({_size(created.bytes)}): "
                  f"[bold]{created.id}[/bold]")


@files_app.command("list")
def files_list(
    purpose: Annotated[str | None, typer.Option(help="Only files with this purpose.")] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many.")] = None,
    order: Annotated[str | None, typer.Option(help="asc or desc (default).")] = None,
    after: Annotated[str | None, typer.Option(help="Cursor: a file id.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List files, newest first."""
    with options.client() as client:
        try:
            page = client.files.list(purpose=purpose, limit=limit, order=order,  # type: ignore[arg-type]
                                     after=after)
        except TuneForgeError as exc:
            _fail(exc, as_json)
    _print_json(page.to_dict()) if as_json else out.print(_files_table(page.data))


@files_app.command("get")
def files_get(file_id: str, as_json: JsonFlag = False) -> None:
    """Show a file."""
    with options.client() as client:
        try:
            _show(client.files.get(file_id), as_json)
        except TuneForgeError as exc:
            _fail(exc, as_json)


@files_app.command("delete")
def files_delete(file_id: str, as_json: JsonFlag = False) -> None:
    """Delete a file."""
    with options.client() as client:
        try:
            deleted = client.files.delete(file_id)
        except TuneForgeError as exc:
            _fail(exc, as_json)
    _print_json(deleted.to_dict()) if as_json else out.print(f"deleted {deleted.id}")


@files_app.command("content")
def files_content(
    file_id: str,
    output: Annotated[Path | None, typer.Option("--output", "-o",
                                                help="Write here instead of stdout.")] = None,
) -> None:
    """Download a file's content (streamed)."""
    with options.client() as client:
        try:
            if output is not None:
                written = client.files.download(file_id, output)
                err.print(f"wrote {_size(written)} to {escape(str(output))}")
            else:
                for chunk in client.files.iter_content(file_id):
                    sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()
        except TuneForgeError as exc:
            _fail(exc, False)


# ---- jobs --------------------------------------------------------------------------------


def job_options(
    model: Annotated[str, typer.Option(
        help="The base model, or your fine-tuned model (ft:…) or checkpoint to continue.")],
    training_file: Annotated[str, typer.Option(help="A file id (purpose fine-tune).")],
    validation_file: Annotated[str | None, typer.Option(help="A file id.")] = None,
    method: Annotated[str, typer.Option(help="supervised or dpo.")] = "supervised",
    n_epochs: Annotated[str | None, typer.Option(help="A number or auto.")] = None,
    batch_size: Annotated[str | None, typer.Option(help="A number or auto.")] = None,
    learning_rate_multiplier: Annotated[str | None, typer.Option(
        help="A number or auto.")] = None,
    beta: Annotated[str | None, typer.Option(help="DPO beta: a number or auto.")] = None,
    suffix: Annotated[str | None, typer.Option(help="Put into the model's name.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    metadata: Annotated[list[str] | None, typer.Option(help="KEY=VALUE (repeatable).")] = None,
    lora_rank: Annotated[int | None, typer.Option(help="LoRA rank r.")] = None,
    lora_alpha: Annotated[float | None, typer.Option(help="LoRA alpha.")] = None,
    lora_dropout: Annotated[float | None, typer.Option(help="LoRA dropout.")] = None,
    lora_target_modules: Annotated[str | None, typer.Option(
        help="all-linear or a comma-separated list of module names.")] = None,
    quantization: Annotated[str | None, typer.Option(help="auto, 4bit or none.")] = None,
) -> JobParams:
    """The job request (all but `training`) from the flags of `jobs create` and `jobs plan`."""
    hyperparameters = {
        k: v for k, v in {
            "n_epochs": _number_or_auto(n_epochs, int, "--n-epochs"),
            "batch_size": _number_or_auto(batch_size, int, "--batch-size"),
            "learning_rate_multiplier": _number_or_auto(learning_rate_multiplier, float,
                                                        "--learning-rate-multiplier"),
            "beta": _number_or_auto(beta, float, "--beta"),
        }.items() if v is not None}
    if method not in ("supervised", "dpo"):
        raise typer.BadParameter("expected supervised or dpo", param_hint="--method")
    if "beta" in hyperparameters and method != "dpo":
        raise typer.BadParameter("--beta needs --method dpo", param_hint="--beta")
    targets: str | list[str] | None = lora_target_modules
    if lora_target_modules and lora_target_modules != "all-linear":
        targets = [m.strip() for m in lora_target_modules.split(",") if m.strip()]
    lora = {k: v for k, v in {"rank": lora_rank, "alpha": lora_alpha, "dropout": lora_dropout,
                              "target_modules": targets, "quantization": quantization}.items()
            if v is not None}
    return JobParams(model=model, training_file=training_file, validation_file=validation_file,
                     suffix=suffix, seed=seed, metadata=_key_values(metadata, "--metadata"),
                     method={"type": method, method: {"hyperparameters": hyperparameters}},
                     lora=lora or None)


# A command with `request: JobParams` gets the job flags (before its own: two are required).
with_job_options = _with_flags(job_options, "request", first=True)


@jobs_app.command("create")
@with_job_options
@with_training_options
def jobs_create(
    request: JobParams,
    follow: Annotated[bool, typer.Option(help="Then follow it live (as `jobs follow`).")] = False,
    as_json: JsonFlag = False,
    training: t.TrainingParams | None = None,
) -> None:
    """Create a fine-tuning job."""
    with options.client() as client:
        try:
            job = client.jobs.create(**request, training=training)
        except TuneForgeError as exc:
            _fail(exc, as_json)
        if as_json and not follow:
            _print_json(job.to_dict())
            return
        if not as_json:
            out.print(f"created [bold]{job.id}[/bold] ({_status(job.status)})")
        if follow:
            raise typer.Exit(_follow(client, job.id, as_json))


# ---- plan (TuneForge extension) ----------------------------------------------------------


@jobs_app.command("plan")
@with_job_options
@with_training_options
def jobs_plan(
    request: JobParams,
    as_json: JsonFlag = False,
    training: t.TrainingParams | None = None,
) -> None:
    """Plan a fine-tuning job without creating it: the options of `jobs create`; shows the
    data format and every data error with its line, token counts, and per device (the CPU
    worker, each GPU size) the tuning, memory, steps and duration, with warnings."""
    with options.client() as client:
        try:
            plan = client.jobs.plan(**request, training=training)
        except TuneForgeError as exc:
            _fail(exc, as_json)
    if as_json:
        _print_json(plan.to_dict())
    else:
        show_plan(out, plan)


# ---- end plan ------------------------------------------------------------------------------


@jobs_app.command("list")
def jobs_list(
    limit: Annotated[int | None, typer.Option(help="At most this many (default 20).")] = None,
    after: Annotated[str | None, typer.Option(help="Cursor: a job id.")] = None,
    metadata: Annotated[list[str] | None, typer.Option(
        help="Only jobs with KEY=VALUE in their metadata (repeatable).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List fine-tuning jobs, newest first."""
    with options.client() as client:
        try:
            page = client.jobs.list(limit=limit, after=after,
                                    metadata=_key_values(metadata, "--metadata"))
        except TuneForgeError as exc:
            _fail(exc, as_json)
    _print_json(page.to_dict()) if as_json else out.print(_jobs_table(page.data))


def _job_command(name: str, doc: str) -> None:
    def command(job_id: str, as_json: JsonFlag = False) -> None:
        with options.client() as client:
            try:
                job = getattr(client.jobs, name)(job_id)
            except TuneForgeError as exc:
                _fail(exc, as_json)
        _show(job, as_json)

    command.__doc__ = doc
    jobs_app.command(name)(command)


_job_command("get", "Show a fine-tuning job.")
_job_command("cancel", "Cancel a fine-tuning job.")
_job_command("pause", "Pause a running job (it saves a checkpoint at the next step).")
_job_command("resume", "Resume a paused job from its last checkpoint.")


@jobs_app.command("events")
def jobs_events(
    job_id: str,
    limit: Annotated[int | None, typer.Option(help="At most this many (default 20).")] = None,
    after: Annotated[str | None, typer.Option(help="Cursor: an event id.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List a job's events, newest first."""
    with options.client() as client:
        try:
            page = client.jobs.events(job_id, limit=limit, after=after)
        except TuneForgeError as exc:
            _fail(exc, as_json)
    if as_json:
        _print_json(page.to_dict())
        return
    for event in reversed(page.data):
        out.print(_event_line(event))


@jobs_app.command("checkpoints")
def jobs_checkpoints(
    job_id: str,
    limit: Annotated[int | None, typer.Option(help="At most this many (default 10).")] = None,
    after: Annotated[str | None, typer.Option(help="Cursor: a checkpoint id.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List a job's checkpoints, newest first."""
    with options.client() as client:
        try:
            page = client.jobs.checkpoints(job_id, limit=limit, after=after)
        except TuneForgeError as exc:
            _fail(exc, as_json)
    if as_json:
        _print_json(page.to_dict())
        return
    table = Table("id", "step", "train loss", "valid loss", "model")
    for c in page.data:
        m = c.metrics
        table.add_row(c.id, str(c.step_number), _loss(m.train_loss), _loss(m.valid_loss),
                      escape(c.fine_tuned_model_checkpoint))
    out.print(table)


@jobs_app.command("follow")
def jobs_follow(
    job_id: str,
    as_json: Annotated[bool, typer.Option(
        "--json", help="One JSON object per line: events and job updates.")] = False,
) -> None:
    """Follow a job live until it ends: step/total, train and validation loss, ETA.

    Exit code 0 when the job succeeded, 1 when it failed or was cancelled.
    """
    with options.client() as client:
        code = _follow(client, job_id, as_json)
    raise typer.Exit(code)


def _loss(value: float | None) -> str:
    return f"{value:.4f}" if value is not None else "-"


def _event_line(event: t.FineTuningJobEvent) -> str:
    style = {"warn": "yellow", "error": "red"}.get(event.level)
    message = escape(event.message)
    if style:
        message = f"[{style}]{message}[/{style}]"
    return f"[dim]{_when(event.created_at)}[/dim] {message}"


class FollowView:
    """What `jobs follow` shows, kept current from the stream."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.job: t.FineTuningJob | None = None
        self.step: int | None = None
        self.total: int | None = None
        self.train_loss: float | None = None
        self.valid_loss: float | None = None
        self.first_step: tuple[float, int] | None = None
        self.last_message = ""

    def update(self, item: t.FineTuningJobEvent | t.FineTuningJob) -> None:
        if isinstance(item, t.FineTuningJob):
            self.job = item
            return
        self.last_message = item.message
        data = item.data or {}
        if item.type == "metrics" or "step" in data:
            if isinstance(data.get("step"), int | float):
                self.step = int(data["step"])
                if self.first_step is None:
                    self.first_step = (time.monotonic(), self.step)
            if isinstance(data.get("total_steps"), int | float):
                self.total = int(data["total_steps"])
            for key, attr in (("train_loss", "train_loss"), ("valid_loss", "valid_loss"),
                              ("full_valid_loss", "valid_loss")):
                if isinstance(data.get(key), int | float):
                    setattr(self, attr, float(data[key]))

    def eta_seconds(self) -> float | None:
        if self.job is not None and self.job.estimated_finish:
            return max(0.0, self.job.estimated_finish - time.time())
        if self.first_step and self.step is not None and self.total:
            started, first = self.first_step
            done = self.step - first
            if done > 0:
                rate = (time.monotonic() - started) / done
                return rate * (self.total - self.step)
        return None

    def render(self) -> Group:
        status = self.job.status if self.job else "…"
        eta = self.eta_seconds()
        eta_text = time.strftime("%H:%M:%S", time.gmtime(eta)) if eta is not None else "-"
        step = f"{self.step if self.step is not None else '-'}/{self.total or '-'}"
        head = Text.from_markup(f"[bold]{self.job_id}[/bold]  {_status(status)}")
        stats = Text.from_markup(
            f"step {step}  train loss {_loss(self.train_loss)}  "
            f"valid loss {_loss(self.valid_loss)}  ETA {eta_text}")
        parts: list[Any] = [head]
        if self.total:
            parts.append(ProgressBar(total=self.total, completed=self.step or 0, width=40))
        parts.append(stats)
        if self.last_message:
            parts.append(Text(self.last_message, style="dim"))
        return Group(*parts)


def _follow(client: TuneForge, job_id: str, as_json: bool) -> int:
    view = FollowView(job_id)
    try:
        if as_json:
            for item in client.jobs.watch(job_id):
                view.update(item)
                kind = "job" if isinstance(item, t.FineTuningJob) else "event"
                print(json.dumps({"type": kind, kind: item.to_dict()}), flush=True)
        elif out.is_terminal:
            with Live(view.render(), console=out, refresh_per_second=8) as live:
                for item in client.jobs.watch(job_id):
                    view.update(item)
                    if isinstance(item, t.FineTuningJobEvent):
                        live.console.print(_event_line(item))
                    live.update(view.render())
        else:
            for item in client.jobs.watch(job_id):
                view.update(item)
                if isinstance(item, t.FineTuningJobEvent):
                    out.print(_event_line(item))
    except TuneForgeError as exc:
        _fail(exc, as_json)
    except KeyboardInterrupt:
        err.print("interrupted: the job goes on (`tuneforge jobs cancel` stops it)")
        return 130
    job = view.job or client.jobs.get(job_id)
    if not as_json:
        summary = f"job {job.id} {_status(job.status)}"
        if job.fine_tuned_model:
            summary += f": [bold]{escape(job.fine_tuned_model)}[/bold]"
        if job.error:
            summary += f": {escape(job.error.message)}"
        out.print(summary)
    return 0 if job.status == "succeeded" else 1


# ---- models ------------------------------------------------------------------------------


@models_app.command("list")
def models_list(as_json: JsonFlag = False) -> None:
    """List base models and your fine-tuned models."""
    with options.client() as client:
        try:
            page = client.models.list()
        except TuneForgeError as exc:
            _fail(exc, as_json)
    if as_json:
        _print_json(page.to_dict())
        return
    table = Table("id", "owned_by", "created", "tuning", "parent", "context")
    for m in page.data:
        table.add_row(escape(m.id), m.owned_by, _when(m.created), m.tuning or "",
                      escape(m.parent or ""),
                      "" if m.context_length is None else str(m.context_length))
    out.print(table)


@models_app.command("get")
def models_get(model: str, as_json: JsonFlag = False) -> None:
    """Show a model: a base model with what it supports (context, methods, tools, stop
    tokens), a fine-tuned one with its base, tuning and parent."""
    with options.client() as client:
        try:
            found = client.models.get(model)
        except TuneForgeError as exc:
            _fail(exc, as_json)
    if as_json:
        _print_json(found.to_dict())
        return
    table = Table(show_header=False, box=None)
    for key, value in found.to_dict().items():
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        elif isinstance(value, bool):
            value = "yes" if value else "no"
        elif key == "created":
            value = _when(value)
        table.add_row(f"[bold]{key}[/bold]", escape(str(value)))
    out.print(table)


@models_app.command("delete")
def models_delete(model: str, as_json: JsonFlag = False) -> None:
    """Delete a fine-tuned model."""
    with options.client() as client:
        try:
            deleted = client.models.delete(model)
        except TuneForgeError as exc:
            _fail(exc, as_json)
    _print_json(deleted.to_dict()) if as_json else out.print(f"deleted {escape(deleted.id)}")


# ---- chat --------------------------------------------------------------------------------


@app.command("chat")
def chat(
    model: Annotated[str, typer.Option(help="A base or fine-tuned model (ft:…).")],
    message: Annotated[str | None, typer.Argument(
        help="Ask once and exit; without it, an interactive session.")] = None,
    system: Annotated[str | None, typer.Option(help="A system prompt.")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Per answer.")] = None,
    temperature: Annotated[float | None, typer.Option()] = None,
    stream: Annotated[bool, typer.Option(help="Stream tokens as they come.")] = True,
    as_json: JsonFlag = False,
) -> None:
    """Chat with a model (POST /v1/chat/completions), streaming the answer."""
    history: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    interactive = message is None
    if interactive and not as_json:
        err.print(f"chatting with [bold]{escape(model)}[/bold]; an empty line or Ctrl-D ends")
    with options.client() as client:
        while True:
            if interactive:
                try:
                    text = input("you> ") if sys.stdin.isatty() else sys.stdin.readline()
                except (EOFError, KeyboardInterrupt):
                    break
                text = text.strip()
                if not text:
                    break
            else:
                text = message or ""
            history.append({"role": "user", "content": text})
            try:
                answer = _ask(client, model, history, stream and not as_json, as_json,
                              max_tokens=max_tokens, temperature=temperature)
            except TuneForgeError as exc:
                _fail(exc, as_json)
            history.append({"role": "assistant", "content": answer})
            if not interactive:
                break


def _ask(client: TuneForge, model: str, history: list[dict[str, Any]], stream: bool,
         as_json: bool, **params: Any) -> str:
    if stream:
        parts = []
        for chunk in client.chat(model, history, stream=True, **params):
            parts.append(chunk.text)
            sys.stdout.write(chunk.text)
            sys.stdout.flush()
        sys.stdout.write("\n")
        return "".join(parts)
    completion = client.chat(model, history, **params)
    if as_json:
        print(json.dumps(completion.raw))
    else:
        print(completion.content)
    return completion.content


# `tuneforge webhooks …` lives in its own module, which adds itself to `app`.
from tuneforge_client import organization_cli, webhooks_cli  # noqa: E402, F401

# ---- entry point -------------------------------------------------------------------------


def load_plugins(target: typer.Typer) -> None:
    """Let installed distributions add commands (entry-point group `tuneforge.cli_plugins`)."""
    for entry_point in entry_points(group=PLUGIN_GROUP):
        try:
            entry_point.load()(target)
        except Exception as exc:  # a broken plugin must not break the client commands
            err.print(f"[yellow]warning:[/yellow] plugin {entry_point.name!r} not loaded: "
                      f"{escape(str(exc))}")


def main() -> None:
    load_plugins(app)
    app()


if __name__ == "__main__":
    main()
