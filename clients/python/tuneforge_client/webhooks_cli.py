"""`tuneforge webhooks …`: manage webhook endpoints and read their delivery log."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from tuneforge_client.cli import JsonFlag, _fail, _print_json, _show, _when, app, options, out
from tuneforge_client.errors import TuneForgeError
from tuneforge_client.webhooks import EVENT_TYPES

webhooks_app = typer.Typer(help="Manage webhook endpoints and read their deliveries.",
                           no_args_is_help=True)
app.add_typer(webhooks_app, name="webhooks")


@webhooks_app.command("create")
def webhooks_create(
    url: str,
    name: Annotated[str | None, typer.Option(help="A name for the endpoint.")] = None,
    event: Annotated[list[str] | None, typer.Option(
        "--event", help=f"An event type to send (repeat; default all: {', '.join(EVENT_TYPES)})."
    )] = None,
    as_json: JsonFlag = False,
) -> None:
    """Add an endpoint. Prints its signing secret: it is shown this once."""
    with options.client() as client:
        try:
            endpoint = client.webhooks.create(url, name=name, event_types=event)
        except TuneForgeError as exc:
            _fail(exc, as_json)
    _show(endpoint, as_json)


@webhooks_app.command("list")
def webhooks_list(as_json: JsonFlag = False) -> None:
    """List your webhook endpoints."""
    with options.client() as client:
        try:
            page = client.webhooks.list(limit=100)
        except TuneForgeError as exc:
            _fail(exc, as_json)
    if as_json:
        _print_json(page.to_dict())
        return
    table = Table("id", "url", "events", "created")
    for e in page.data:
        table.add_row(e.id, escape(e.url), ", ".join(e.event_types), _when(e.created_at))
    out.print(table)


@webhooks_app.command("get")
def webhooks_get(endpoint_id: str, as_json: JsonFlag = False) -> None:
    """Show a webhook endpoint."""
    with options.client() as client:
        try:
            endpoint = client.webhooks.get(endpoint_id)
        except TuneForgeError as exc:
            _fail(exc, as_json)
    _show(endpoint, as_json)


@webhooks_app.command("delete")
def webhooks_delete(endpoint_id: str, as_json: JsonFlag = False) -> None:
    """Delete a webhook endpoint: it gets no more events."""
    with options.client() as client:
        try:
            deleted = client.webhooks.delete(endpoint_id)
        except TuneForgeError as exc:
            _fail(exc, as_json)
    _print_json(deleted.to_dict()) if as_json else out.print(f"deleted {escape(deleted.id)}")


@webhooks_app.command("deliveries")
def webhooks_deliveries(
    endpoint_id: str,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
    as_json: JsonFlag = False,
) -> None:
    """The endpoint's delivery log: each event, its attempts and the last answer."""
    with options.client() as client:
        try:
            page = client.webhooks.deliveries(endpoint_id, limit=limit)
        except TuneForgeError as exc:
            _fail(exc, as_json)
    if as_json:
        _print_json(page.to_dict())
        return
    table = Table("event", "type", "job", "status", "attempts", "last answer", "created")
    for d in page.data:
        last = str(d.last_status_code or "") if not d.last_error else d.last_error
        table.add_row(d.event_id, d.event_type, str(d.event.get("data", {}).get("id", "")),
                      d.status, str(d.attempts), escape(last), _when(d.created_at))
    out.print(table)
