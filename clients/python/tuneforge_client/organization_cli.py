"""`tuneforge storage`: what your organization keeps in object storage."""

from __future__ import annotations

from rich.table import Table

from tuneforge_client.cli import JsonFlag, _fail, _print_json, _size, app, options, out
from tuneforge_client.errors import TuneForgeError


@app.command("storage")
def storage(as_json: JsonFlag = False) -> None:
    """Show the bytes your organization keeps: files, models' weights, checkpoints, and
    deleted models' weights not yet removed."""
    with options.client() as client:
        try:
            usage = client.organization.storage()
        except TuneForgeError as exc:
            _fail(exc, as_json)
    if as_json:
        _print_json(usage.to_dict())
        return
    table = Table("kind", "count", "size")
    for kind, share in (("files", usage.files), ("models", usage.models),
                        ("checkpoints", usage.checkpoints),
                        ("pending deletion", usage.pending_deletion)):
        table.add_row(kind, str(share.count), _size(share.bytes))
    table.add_row("[bold]total[/bold]", "", f"[bold]{_size(usage.total_bytes)}[/bold]")
    out.print(table)
