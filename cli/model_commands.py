"""``backprop models …``: the model registry from the command line (list, show, register,
predict, delete), through :class:`client.BackpropClient`.

A model is a name whose versions are succeeded runs; predictions use its current version
unless ``--version`` says otherwise (API.md §5c). Options, ``--json`` and exit codes are
those of the other client commands (:mod:`cli.client_commands`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from cli.client_commands import (
    JsonOpt,
    KeyOpt,
    RunArg,
    UrlOpt,
    _dump,
    _emit_json,
    _fmt,
    _prediction_table,
    _read_rows,
    _session,
    _short_ids,
    out,
)
from client import RegisteredModelDetail

models_app = typer.Typer(
    help="The model registry: names other services call, whose versions are runs.",
    no_args_is_help=True,
)
NameArg = Annotated[
    str,
    typer.Argument(
        metavar="NAME",
        help="The model's name: 1-100 letters, digits, '.', '_' and '-', beginning with a "
        "letter or digit.",
        show_default=False,
    ),
]
METRICS = ("loss", "val_loss", "accuracy", "val_accuracy")


def _current_line(model: RegisteredModelDetail) -> str:
    current = model.current
    again = (
        f" again (the latest is version {model.latest_version})"
        if model.current_version != model.latest_version
        else ""
    )
    return (
        f"model [bold]{escape(model.name)}[/]: version {current.version} (run "
        f"[bold]{current.run_id}[/]) is current{again}"
    )


def _versions_table(model: RegisteredModelDetail) -> Table:
    """One line per version, oldest first, in 80 columns: the current one starred, its run
    (shortened: any unique prefix works as an id), when it was registered, its run's
    metrics, then the run's name if any has one (--json has everything)."""
    keys = [k for k in METRICS if any(v.metrics.get(k) is not None for v in model.versions)]
    named = any(v.run_name for v in model.versions)
    short = _short_ids([v.run_id for v in model.versions])
    table = Table(box=None, padding=(0, 2, 0, 0), pad_edge=False, header_style="bold",
                  title="versions (* current)", title_justify="left")  # fmt: skip
    for column in ("version", "run", "registered", *keys):
        table.add_column(column, no_wrap=True)
    if named:
        table.add_column("run name", no_wrap=True, overflow="ellipsis")
    for v in model.versions:
        cells = [
            f"{v.version} *" if v.current else str(v.version),
            short[v.run_id],
            v.created_at.strftime("%m-%d %H:%M"),
            *(_fmt(v.metrics.get(k)) for k in keys),
        ]
        table.add_row(*cells, *([escape(v.run_name or "")] if named else []))  # fmt: skip
    return table


@models_app.command("list")
def models_list(
    limit: Annotated[int, typer.Option(help="At most this many models, newest first.")] = 50,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List your models: name, current version and its run, when it last changed."""
    with _session(url, api_key) as bp:
        items = bp.list_models(limit=limit)
    if as_json:
        _emit_json([_dump(m) for m in items])
        return
    short = _short_ids([m.run_id for m in items])
    table = Table(box=None, padding=(0, 2, 0, 0), pad_edge=False, header_style="bold")
    for column in ("name", "version", "run", "updated"):
        table.add_column(column, no_wrap=column != "name", overflow="fold")
    for m in items:
        table.add_row(escape(m.name), f"{m.current_version} of {m.latest_version}",
                      short[m.run_id], m.updated_at.strftime("%m-%d %H:%M"))  # fmt: skip
    out.print(table)


@models_app.command("show")
def models_show(
    name: NameArg, url: UrlOpt = None, api_key: KeyOpt = None, as_json: JsonOpt = False
) -> None:
    """Show a model: its current version and every version's run, times and metrics."""
    with _session(url, api_key) as bp:
        model = bp.get_model(name)
    if as_json:
        _emit_json(_dump(model))
        return
    out.print(_current_line(model), soft_wrap=True)
    out.print(_versions_table(model))


@models_app.command("register")
def models_register(
    name: NameArg, run_id: RunArg, url: UrlOpt = None, api_key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:  # fmt: skip
    """Make a succeeded run the model's current version (or roll back to it).

    A run that is not yet a version becomes the next version; the run of an older version
    makes that version current again, with no new number.
    """
    with _session(url, api_key) as bp:
        run = bp.get_run(run_id)  # a prefix becomes the whole id, which the registry takes
        model = bp.register_model(name, run.id)
    if as_json:
        _emit_json(_dump(model))
    else:
        out.print(_current_line(model), soft_wrap=True)


@models_app.command("predict")
def models_predict(
    name: NameArg,
    input_file: Annotated[
        Path,
        typer.Option(
            "--input", help="CSV of feature rows; a first row that is not all numbers is a header."
        ),
    ],
    drop: Annotated[
        str | None, typer.Option(help="Comma-separated header columns to leave out (the target).")
    ] = None,
    version: Annotated[
        int | None,
        typer.Option(help="Predict with this version [default: the current one].", min=1),
    ] = None,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Predict with a model's current version (or --version).

    One output row (and label) per input row, and which version and run answered.
    """
    with _session(url, api_key) as bp:
        rows = _read_rows(input_file, [d.strip() for d in drop.split(",")] if drop else [])
        result = bp.predict_model(name, rows, version=version)
    if as_json:
        _emit_json(_dump(result))
        return
    out.print(f"model [bold]{escape(result.model)}[/] version {result.version} (run "
              f"[bold]{result.run_id}[/])", soft_wrap=True)  # fmt: skip
    out.print(_prediction_table(result))


@models_app.command("delete")
def models_delete(
    name: NameArg, url: UrlOpt = None, api_key: KeyOpt = None, as_json: JsonOpt = False
) -> None:
    """Delete a model name and its versions; the runs stay."""
    with _session(url, api_key) as bp:
        bp.delete_model(name)
    if as_json:
        _emit_json({"deleted": name})
    else:
        out.print(f"deleted model [bold]{escape(name)}[/] (its runs stay)")
