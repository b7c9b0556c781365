"""The `tuneforge` command line."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tuneforge.settings import Settings

if TYPE_CHECKING:
    from stack.embedded import Stack

app = typer.Typer(help="TuneForge: fine-tuning as a service.", no_args_is_help=True)
keys_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


def _private_files() -> None:
    """Every file this process (and its children) creates is for this user only: databases,
    S3 data, adapters, logs and credentials become 0600, directories 0700."""
    os.umask(0o077)


def register(target: typer.Typer) -> None:
    """Add this module's commands and groups (`server`, `keys`, ...) to `target`.

    The `tuneforge` command itself comes from the `tuneforge-client` distribution, which calls
    this function through the `tuneforge.cli_plugins` entry-point group.
    """
    target.registered_commands.extend(app.registered_commands)
    target.registered_groups.extend(app.registered_groups)


@app.command()
def server(
    host: Annotated[str | None, typer.Option(help="Bind address (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="REST port.")] = None,
    grpc_port: Annotated[int | None, typer.Option(help="gRPC port.")] = None,
) -> None:
    """Run the API server, REST and gRPC (migrates the database first)."""
    from server.main import run

    _private_files()
    overrides = {k: v for k, v in {"host": host, "port": port, "grpc_port": grpc_port}.items()
                 if v is not None}
    run(Settings(**overrides))


@keys_app.command("create")
def keys_create(
    org: Annotated[str, typer.Option(help="Organization id or name (created if new).")],
    name: Annotated[str, typer.Option(help="A label for the key.")] = "",
) -> None:
    """Create an API key; prints it once (only its hash is stored)."""
    from server.admin import create_api_key

    _private_files()
    org_id, key = create_api_key(Settings(), org, name)
    typer.echo(f"organization: {org_id}")
    typer.echo(f"api key:      {key}")


@app.command()
def worker() -> None:
    """Run a training worker (takes fine-tuning jobs from the queue, one at a time)."""
    from trainer.worker import run

    _private_files()
    run(Settings())


def _run_stack(after_start: Callable[[Stack], None] | None = None) -> None:
    import signal
    import time

    from stack.embedded import Credentials, PortTaken, Stack, embedded_settings, prepare_models
    from tuneforge.processes import private_dir

    _private_files()
    base = Settings()
    private_dir(base.data_dir)
    creds = Credentials.load_or_create(base.data_dir)
    stack = Stack(embedded_settings(base, creds), creds, log=lambda m: typer.echo(f"· {m}"))

    def stop_on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop_on_signal)
    # The children run in sessions of their own (so that each can be stopped as a group): a
    # closed terminal reaches only this process, which must then stop them.
    signal.signal(signal.SIGHUP, stop_on_signal)
    try:
        stack.check_ports()
        typer.echo("· preparing the base model (converted once, then cached)…")
        prepare_models(stack.settings)
        stack.start()
        typer.echo(f"· TuneForge is up: REST {stack.base_url}, gRPC {stack.grpc_target}; "
                   f"logs in {stack.settings.data_dir / 'logs'}")
        typer.echo(f"· API key: {creds.api_key}")
        if after_start:
            after_start(stack)
        while True:
            stack.supervise_once()
            time.sleep(1)
    except PortTaken as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
    except KeyboardInterrupt:
        typer.echo("\n· stopping…")
    finally:
        stack.stop()


@app.command()
def up() -> None:
    """Run the whole embedded stack on this machine until Ctrl-C: Redis (valkey), S3
    (weed mini), the API (REST + gRPC) and a worker, all on 127.0.0.1."""
    _run_stack()


@app.command()
def demo(
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 2,
    max_examples: Annotated[int | None, typer.Option(help="Train on fewer examples.")] = None,
    exit_after: Annotated[bool, typer.Option(help="Stop the stack when the demo ends.")] = False,
    result_json: Annotated[Path | None, typer.Option(
        help="Also write the job and the side-by-side answers to this JSON file.")] = None,
) -> None:
    """The main job: start the embedded stack, fine-tune on the bundled dataset while showing
    progress, then compare base and fine-tuned answers; keeps running until Ctrl-C."""
    from openai import OpenAI

    from stack.demo import DemoOptions, run_demo, usage_text

    def after_start(stack: Stack) -> None:
        client = OpenAI(base_url=stack.base_url, api_key=stack.credentials.api_key or "",
                        max_retries=2, timeout=120)
        result = run_demo(client, DemoOptions(n_epochs=epochs, max_examples=max_examples))
        if result_json:
            result_json.write_text(json.dumps(result, indent=2))
        if result["status"] != "succeeded":
            raise typer.Exit(1)
        typer.echo(usage_text(stack.base_url, stack.credentials.api_key or "",
                              stack.grpc_target, result["model"]))
        if exit_after:
            raise KeyboardInterrupt

    _run_stack(after_start)


if __name__ == "__main__":
    app()
