"""The main job: fine-tune the embedded model on the bundled dataset, then show the base and
the fine-tuned model answering the same held-out questions side by side.

Everything goes through the public API with the official `openai` SDK, as a user would.
A second run reuses the model a previous run trained on the same data.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path

from openai import OpenAI
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "data"
TRAIN_FILE = EXAMPLES / "sft_answer_format.jsonl"
VALIDATION_FILE = EXAMPLES / "sft_answer_format_validation.jsonl"
TERMINAL = {"succeeded", "failed", "cancelled"}


@dataclass
class DemoOptions:
    model: str = "SmolLM2-135M-Instruct"
    n_epochs: int = 2
    batch_size: int = 4
    learning_rate_multiplier: float = 5.0
    max_examples: int | None = None  # fewer examples for a quicker run (tests)
    prompts: int = 4


def _dataset(path: Path, limit: int | None) -> bytes:
    lines = path.read_bytes().splitlines(keepends=True)
    return b"".join(lines[:limit] if limit else lines)


def run_demo(client: OpenAI, options: DemoOptions, console: Console | None = None) -> dict:
    console = console or Console()
    train = _dataset(TRAIN_FILE, options.max_examples)
    validation = _dataset(VALIDATION_FILE, None)
    fingerprint = hashlib.sha256(
        train + json.dumps(options.__dict__, sort_keys=True).encode()).hexdigest()[:16]

    job = _reusable_job(client, fingerprint)
    if job is not None:
        console.print(f"[green]Reusing[/] {job.fine_tuned_model} (trained by an earlier run).")
    else:
        job = _train(client, options, train, validation, fingerprint, console)
    if job.status != "succeeded":
        console.print(f"[red]The job ended {job.status}:[/] {job.error}")
        return {"job": job.id, "status": job.status, "answers": []}
    wait_for_serving(client, options.model, console)
    answers = _compare(client, options, job.fine_tuned_model, console)
    return {"job": job.id, "status": job.status, "model": job.fine_tuned_model,
            "answers": answers}


def _reusable_job(client: OpenAI, fingerprint: str):  # type: ignore[no-untyped-def]
    for job in client.fine_tuning.jobs.list(limit=100, metadata={"demo": fingerprint}):
        if job.status == "succeeded" and job.fine_tuned_model:
            models = {m.id for m in client.models.list()}
            if job.fine_tuned_model in models:
                return job
    return None


def _train(client: OpenAI, options: DemoOptions, train: bytes, validation: bytes,
           fingerprint: str, console: Console):  # type: ignore[no-untyped-def]
    console.print(f"Uploading {TRAIN_FILE.name} ({len(train.splitlines())} examples)…")
    training_file = client.files.create(file=(TRAIN_FILE.name, io.BytesIO(train)),
                                        purpose="fine-tune")
    validation_file = client.files.create(file=(VALIDATION_FILE.name, io.BytesIO(validation)),
                                          purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model=options.model, training_file=training_file.id,
        validation_file=validation_file.id, suffix="demo", seed=42,
        metadata={"demo": fingerprint},
        method={"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": options.n_epochs, "batch_size": options.batch_size,
            "learning_rate_multiplier": options.learning_rate_multiplier}}},
    )
    console.print(f"Created fine-tuning job [bold]{job.id}[/]")
    return follow(client, job.id, console)


def follow(client: OpenAI, job_id: str, console: Console):  # type: ignore[no-untyped-def]
    """Show the job's messages and a progress bar (step, loss, ETA) until it ends."""
    seen: set[str] = set()
    columns = (TextColumn("[bold]training"), BarColumn(), TextColumn("step {task.completed}"
               "/{task.total}"), TextColumn("{task.fields[loss]}"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task("train", total=None, loss="")
        while True:
            events = list(client.fine_tuning.jobs.list_events(job_id, limit=100))[::-1]
            for event in events:
                if event.id in seen:
                    continue
                seen.add(event.id)
                if event.type == "metrics" and isinstance(event.data, dict):
                    data = event.data
                    loss = f"loss {data['train_loss']:.3f}" if data.get("train_loss") else ""
                    if data.get("valid_loss") is not None:
                        loss += f"  valid {data['valid_loss']:.3f}"
                    progress.update(bar, completed=data.get("step", 0),
                                    total=data.get("total_steps"), loss=loss)
                else:
                    progress.console.print(f"  {event.message}")
            job = client.fine_tuning.jobs.retrieve(job_id)
            if job.status in TERMINAL:
                return job
            time.sleep(1)


def wait_for_serving(client: OpenAI, base_model: str, console: Console,
                     within_s: float = 900) -> None:
    """Block until an inference server for `base_model` is ready (vLLM-CPU takes a minute or
    two to start; a reused model can be asked before that)."""
    deadline = time.monotonic() + within_s
    with console.status(f"waiting for the {base_model} inference server…"):
        while time.monotonic() < deadline:
            status = client.get("/serving/status", cast_to=dict)
            if any(r["base_model"] == base_model and r["state"] == "ready"
                   for r in status["replicas"]):
                return
            time.sleep(2)
    raise TimeoutError(f"no inference server for {base_model} became ready in {within_s:.0f} s")


def _compare(client: OpenAI, options: DemoOptions, fine_tuned: str,
             console: Console) -> list[dict]:
    prompts = [json.loads(line)["messages"][-2]["content"]
               for line in VALIDATION_FILE.read_text().splitlines()[: options.prompts]]
    table = Table(title="Held-out questions: base model vs fine-tuned", show_lines=True)
    table.add_column("question", max_width=30)
    table.add_column(options.model, max_width=45)
    table.add_column(fine_tuned, max_width=45)
    answers = []
    for prompt in prompts:
        replies = [_ask(client, model, prompt) for model in (options.model, fine_tuned)]
        table.add_row(prompt, *replies)
        answers.append({"prompt": prompt, "base": replies[0], "fine_tuned": replies[1]})
    console.print(table)
    return answers


def _ask(client: OpenAI, model: str, prompt: str) -> str:
    response = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], max_tokens=40,
        temperature=0)
    return (response.choices[0].message.content or "").strip()


def usage_text(base_url: str, api_key: str, grpc_target: str, model: str) -> str:
    return f"""
TuneForge is running. Use it with:

  the openai SDK
    from openai import OpenAI
    client = OpenAI(base_url="{base_url}", api_key="{api_key}")
    client.chat.completions.create(model="{model}",
                                   messages=[{{"role": "user", "content": "Hi"}}])

  the CLI
    export TUNEFORGE_BASE_URL={base_url} TUNEFORGE_API_KEY={api_key}
    tuneforge files upload examples/data/sft_answer_format.jsonl
    tuneforge jobs list

  the gRPC SDK (tuneforge-client)
    from tuneforge_client import TuneForge
    tf = TuneForge(base_url="{base_url}", api_key="{api_key}", transport="grpc")
    # gRPC endpoint: {grpc_target}

Press Ctrl-C to stop everything.
"""
