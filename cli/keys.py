"""``backprop keys create|list|revoke``: manage API keys in the database."""

from __future__ import annotations

import json
import unicodedata
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)

OWNER_MAX_LENGTH = 200  # the length of the owner columns


def check_owner(value: str) -> str:
    """An owner name: not blank, at most 200 characters, no control characters, no space
    around it. Refused with a usage error (exit code 2) that says why."""
    if not value.strip():
        raise typer.BadParameter("must not be empty")
    if len(value) > OWNER_MAX_LENGTH:
        raise typer.BadParameter(
            f"is {len(value)} characters long; the limit is {OWNER_MAX_LENGTH}"
        )
    control = next((c for c in value if unicodedata.category(c) == "Cc"), None)
    if control is not None:
        raise typer.BadParameter(f"must not contain control characters (it holds {control!r})")
    if value != value.strip():
        raise typer.BadParameter("must not begin or end with whitespace")
    return value


@keys_app.command("create")
def create(
    owner: Annotated[
        str,
        typer.Option(
            help="Who the key acts for; owns what it creates (1-200 characters).",
            callback=check_owner,
        ),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Create a key and print it once (only its hash is stored)."""
    from core.keys import create_key

    new = create_key(owner)
    if as_json:
        typer.echo(json.dumps(new.__dict__))
        return
    typer.echo(f"key id:         {new.id}")
    typer.echo(f"owner:          {new.owner}")
    typer.echo(f"API key:        {new.key}")
    typer.echo(f"webhook secret: {new.webhook_secret}")
    typer.echo("Store the key and the secret now: they are not shown again.", err=True)


@keys_app.command("list")
def list_(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List keys (id, owner, prefix, created, revoked)."""
    from core.keys import list_keys

    keys = list_keys()
    if as_json:
        typer.echo(
            json.dumps(
                [
                    {
                        "id": k.id,
                        "owner": k.owner,
                        "prefix": k.prefix,
                        "created_at": k.created_at.isoformat(),
                        "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None,
                    }
                    for k in keys
                ]
            )
        )
        return
    table = Table("id", "owner", "prefix", "created", "revoked")
    for k in keys:
        table.add_row(
            k.id, k.owner, k.prefix + "…", f"{k.created_at:%Y-%m-%d %H:%M}",
            f"{k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "",
        )  # fmt: skip
    Console().print(table)


@keys_app.command("revoke")
def revoke(
    key_id: Annotated[
        str,
        typer.Argument(help="The key's id (from `keys list`), or a unique prefix of it (6+)."),
    ],
) -> None:
    """Revoke a key; requests with it get 401 from then on."""
    from core.ids import AmbiguousId
    from core.keys import revoke_key

    try:
        revoked = revoke_key(key_id)
    except AmbiguousId as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=1) from None
    if revoked is None:
        typer.echo(f"no key with id {key_id}", err=True)
        raise typer.Exit(code=1)
    typer.echo(f"revoked {revoked}")
