"""Client commands of ``backprop``: submit, runs, show, watch, cancel, weights, predict,
evaluate, tag, edit.

They talk to a running service over HTTP through :class:`client.BackpropClient` and import
nothing of the service itself. Every command takes ``--url`` / ``--api-key`` (defaults
``$BACKPROP_URL`` / ``$BACKPROP_API_KEY``) and ``--json`` (machine-readable JSON on stdout and
nothing else there).

Exit codes: 0 ok; 1 a watched run ended ``failed`` or ``cancelled``; 2 usage error (bad
option, unreadable or invalid file); 3 the server refused the request (4xx; its detail goes
to stderr, an invalid value as ``field.path: message``); 4 the server cannot be reached;
5 the server failed (5xx); 130 interrupted (Ctrl-C; a watched run or sweep goes on).

Ids are shown shortened (8 characters, more where two listed ids begin alike); any unique
prefix of 6 characters or more works wherever an id does (the server resolves it).
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from client import (
    BackpropClient,
    BackpropConnectionError,
    BackpropError,
    Evaluation,
    Prediction,
    Run,
)

EXIT_OK = 0
EXIT_RUN_FAILED = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_UNREACHABLE = 4
EXIT_SERVER_ERROR = 5
EXIT_INTERRUPTED = 130

DATA_SUFFIXES = (".csv", ".npz", ".json")

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="BACKPROP_URL",
        help="Service URL [default: http://127.0.0.1:8000].",
        show_default=False,
    ),
]
KeyOpt = Annotated[
    str | None,
    typer.Option(
        "--api-key", envvar="BACKPROP_API_KEY", help="API key (Bearer).", show_default=False
    ),
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print machine-readable JSON on stdout, nothing else.")
]
RunArg = Annotated[
    str,
    typer.Argument(
        metavar="RUN", help="Run id, or a unique prefix of it (6+ characters).", show_default=False
    ),
]


class UsageProblem(Exception):
    """A mistake in what the user gave us (a file that cannot be read, bad JSON, …)."""


@contextmanager
def _session(url: str | None, api_key: str | None) -> Iterator[BackpropClient]:
    """A client for one command; errors become messages on stderr and exit codes."""
    try:
        with BackpropClient(base_url=url, api_key=api_key) as bp:
            yield bp
    except UsageProblem as exc:
        err.print(f"error: {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(EXIT_USAGE) from None
    except BackpropConnectionError as exc:
        err.print(f"error: {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(EXIT_UNREACHABLE) from None
    except BackpropError as exc:
        if isinstance(exc.detail, list):  # a 422 from request validation: one line per value
            err.print(f"error: the server refused the request ({exc.status_code}):")
            for problem in exc.problems:
                err.print(f"  {escape(problem)}", soft_wrap=True)
        else:
            detail = exc.problems[0]
            err.print(f"error: the server answered {exc.status_code}: {escape(detail)}",
                      soft_wrap=True)  # fmt: skip
        code = EXIT_SERVER_ERROR if (exc.status_code or 0) >= 500 else EXIT_REFUSED
        raise typer.Exit(code) from None
    except KeyboardInterrupt:
        err.print("interrupted")
        raise typer.Exit(EXIT_INTERRUPTED) from None


def _emit_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, default=str))


def _dump(model: Any) -> Any:
    return model.model_dump(mode="json")


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _short_ids(ids: list[str], length: int = 8) -> dict[str, str]:
    """Each id's shortest prefix, of ``length`` characters or more, that begins none of the
    other ``ids`` (as git abbreviates commits): neighbours in sorted order share the most."""
    ordered = sorted(set(ids))
    short = {}
    for i, id_ in enumerate(ordered):
        shared = max(
            (len(os.path.commonprefix([id_, other])) for other in ordered[max(0, i - 1) : i + 2]
             if other != id_),
            default=0,
        )  # fmt: skip
        short[id_] = id_[: max(length, shared + 1)]
    return short


@contextmanager
def _goes_on(what: str, command: str) -> Iterator[None]:
    """Ctrl-C while following a run or sweep: it goes on at the server; say how to follow
    it again, and exit 130."""
    try:
        yield
    except KeyboardInterrupt:
        err.print(f"interrupted: {what} continues — `{command}`", soft_wrap=True, markup=False)
        raise typer.Exit(EXIT_INTERRUPTED) from None


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageProblem(f"cannot read the {what} file {path}: {exc.strerror}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageProblem(f"the {what} file {path} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise UsageProblem(f"the {what} file {path} must hold a JSON object")
    return value


# -- watching ---------------------------------------------------------------------------------


def _summary(run: Run) -> Table:
    table = Table(show_header=False)
    table.add_column(style="bold")
    table.add_column()
    style = {"succeeded": "green", "failed": "red", "cancelled": "yellow"}.get(run.status, "")
    table.add_row("run", run.id)
    table.add_row("status", f"[{style}]{run.status}[/]" if style else run.status)
    if run.name:
        table.add_row("name", escape(run.name))
    table.add_row("epochs", f"{run.progress.epoch}/{run.progress.epochs}")
    if run.transitions:  # why it has its status, in the run's own words
        table.add_row("why", escape(run.transitions[-1].reason))
    if run.best_epoch is not None:
        table.add_row("best epoch", f"{run.best_epoch} (the model's weights and metrics)")
    for key, value in run.metrics.items():
        table.add_row(key, _fmt(value))
    if run.started_at and run.finished_at:
        table.add_row("duration", f"{(run.finished_at - run.started_at).total_seconds():.2f} s")
    if run.error:
        table.add_row("error", escape(run.error))
    return table


def _watch(bp: BackpropClient, run: Run, as_json: bool) -> int:
    """Follow a run's events until it ends; the exit code says how it ended. Ctrl-C stops
    following, not the run."""
    with _goes_on("the run", f"backprop watch {run.id}"):
        return _follow(bp, run, as_json)


def _follow(bp: BackpropClient, run: Run, as_json: bool) -> int:
    if as_json:
        for _event in bp.events(run.id):
            pass
    else:
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("epoch"),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  val_loss {task.fields[val_loss]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=out) as progress:
            bar = progress.add_task(run.status, total=run.progress.epochs, loss="-", val_loss="-")
            for event in bp.events(run.id):
                if (item := event.metric) is not None:
                    progress.update(
                        bar,
                        completed=item.epoch,
                        loss=_fmt(item.loss),
                        val_loss=_fmt(item.val_loss),
                    )
                elif event.status:
                    progress.update(bar, description=event.status)
    final = bp.get_run(run.id)
    if as_json:
        _emit_json(_dump(final))
    else:
        out.print(_summary(final))
    return EXIT_OK if final.status == "succeeded" else EXIT_RUN_FAILED


# -- commands ---------------------------------------------------------------------------------


def submit(
    network: Annotated[Path, typer.Option(help="Network spec (JSON, API.md §2).")],
    data: Annotated[
        Path | None,
        typer.Option(
            help="Dataset file to upload: .csv (with header), .npz or .json (content you "
            "uploaded before is not stored again).",
            show_default=False,
        ),
    ] = None,
    dataset_id: Annotated[
        str | None,
        typer.Option(
            "--dataset-id",
            help="Train on a dataset already stored (instead of --data).",
            show_default=False,
        ),
    ] = None,
    training: Annotated[
        Path | None,
        typer.Option(help="Training config (JSON, API.md §3); server defaults if none."),
    ] = None,
    target: Annotated[
        str | None, typer.Option(help="Target column(s) of a CSV, comma-separated.")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Name of the run (and of the dataset).")] = None,
    task: Annotated[
        str | None, typer.Option(help="Force 'classification' or 'regression' for the dataset.")
    ] = None,
    watch: Annotated[
        bool, typer.Option("--watch", help="Follow the run live until it ends.")
    ] = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Submit a training run on a dataset file (uploaded first) or a stored dataset."""
    code = EXIT_OK
    with _session(url, api_key) as bp:
        net = _read_json(network, "network")
        train = _read_json(training, "training") if training is not None else None
        if data is not None and dataset_id is not None:
            raise UsageProblem("give --data FILE or --dataset-id ID, not both")
        if dataset_id is not None:
            if target is not None or task is not None:
                raise UsageProblem("--target and --task describe a --data file, not --dataset-id")
            dataset = bp.get_dataset(dataset_id)
        elif data is not None:
            if data.suffix.lower() not in DATA_SUFFIXES:
                raise UsageProblem(f"--data {data}: use a .csv, .npz or .json file")
            if not data.is_file():
                raise UsageProblem(f"--data {data}: no such file")
            if data.suffix.lower() == ".csv" and not target:
                raise UsageProblem("--target is required with a .csv dataset (the target column)")
            if task not in (None, "classification", "regression"):
                raise UsageProblem("--task must be 'classification' or 'regression'")
            dataset = bp.upload_dataset(data, target=target, name=name, task=task)
        else:
            raise UsageProblem("give --data FILE (to upload) or --dataset-id ID (stored)")
        run = bp.submit_run(dataset.id, net, train, name=name)
        if not as_json:
            out.print(
                f"dataset [bold]{dataset.id}[/] ({dataset.n_samples} samples, {dataset.task})\n"
                f"run [bold]{run.id}[/] {run.status}"
            )
        if watch:
            code = _watch(bp, run, as_json)
        elif as_json:
            _emit_json(_dump(run))
    raise typer.Exit(code)


_RELATIVE = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_METRIC_SORTS = ("loss", "val_loss", "accuracy", "val_accuracy", "best_epoch")


def _when(value: str | None, option: str) -> str | None:
    """A time for ``--since``/``--until``: ISO 8601 (a date, or a date and time; UTC unless
    it says otherwise), or a duration back from now: ``30m``, ``12h``, ``7d``, ``2w``."""
    if value is None:
        return None
    text = value.strip()
    if text[:-1].isdigit() and text[-1:] in _RELATIVE:
        back = timedelta(seconds=int(text[:-1]) * _RELATIVE[text[-1]])
        return (datetime.now(UTC) - back).isoformat()
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageProblem(
            f"{option} {value!r}: give an ISO 8601 date or time (2026-12-01, "
            "2026-12-01T09:30) or a duration back from now (30m, 12h, 7d, 2w)"
        ) from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat()


def _tag_filter(value: str) -> str:
    """``--tag`` as the API takes it, ``key:value``; ``key=value`` is read as the same when
    there is no ``:``."""
    if ":" not in value and "=" in value:
        key, _, rest = value.partition("=")
        return f"{key}:{rest}"
    return value


def _whole_id(bp: BackpropClient, kind: str, value: str | None) -> str | None:
    """The whole id a (possibly shortened) ``--dataset``/``--sweep`` id stands for: the
    lists filter by whole ids, and the server resolves a prefix on the resource's path."""
    if value is None or len(value) >= 36:
        return value
    found = bp.get_dataset(value) if kind == "dataset" else bp.get_sweep(value)
    return found.id


def _tags_text(tags: dict[str, str]) -> str:
    return " ".join(f"{key}={value}" for key, value in tags.items())


def runs(
    status: Annotated[
        list[str] | None,
        typer.Option(help="Only runs with this status (queued, running, …); repeat for several."),
    ] = None,
    tag: Annotated[
        list[str] | None,
        typer.Option(help="Only runs tagged KEY:VALUE; repeat for several (all must match)."),
    ] = None,
    search: Annotated[
        str | None, typer.Option(help="Only runs whose name contains this, case aside.")
    ] = None,
    dataset: Annotated[
        str | None, typer.Option(help="Only runs trained on this dataset (id or prefix).")
    ] = None,
    sweep: Annotated[
        str | None, typer.Option(help="Only the trials of this sweep (id or prefix).")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(help="Only runs created at or after this time: ISO 8601, or 30m/12h/7d."),
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Only runs created before this time (as --since).")
    ] = None,
    top_level: Annotated[bool, typer.Option("--top-level", help="Leave out sweep trials.")] = False,
    sort: Annotated[
        str | None,
        typer.Option(help="created_at, loss, val_loss, accuracy, val_accuracy or best_epoch."),
    ] = None,
    desc: Annotated[
        bool | None,
        typer.Option(
            "--desc/--asc",
            help="The order (default: newest first; lowest loss or best epoch first, "
            "highest accuracy first).",
            show_default=False,
        ),
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many runs.")] = 50,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List runs, newest first, or filtered and sorted as asked (filters combine)."""
    with _session(url, api_key) as bp:
        items = bp.list_runs(
            status=status, limit=limit, tags=[_tag_filter(t) for t in tag or ()], q=search,
            dataset_id=_whole_id(bp, "dataset", dataset), sweep_id=_whole_id(bp, "sweep", sweep),
            created_after=_when(since, "--since"), created_before=_when(until, "--until"),
            top_level=top_level, sort=sort, order=None if desc is None else ("desc" if desc
                                                                            else "asc"),
        )  # fmt: skip
    if as_json:
        _emit_json([_dump(r) for r in items])
        return
    # Fits the terminal (80 columns too): short ids (any unique prefix works as an id), one
    # line per run, the name and tags cut with "…" to the room left (all of it with --json).
    # The value column is the sort key's when the list is sorted by a metric, else the loss.
    shown = sort if sort in _METRIC_SORTS else "loss"

    def value(r: Run) -> str:
        return _fmt(r.best_epoch if shown == "best_epoch" else r.metrics.get(shown))

    short = _short_ids([r.id for r in items])
    rows = [
        (
            short[r.id],
            r.status,
            f"{r.progress.epoch}/{r.progress.epochs}",
            value(r),
            r.created_at.strftime("%m-%d %H:%M"),
        )
        for r in items
    ]
    table = Table(box=None, padding=(0, 2, 0, 0), pad_edge=False, header_style="bold")
    room = out.width
    for i, column in enumerate(("id", "status", "epoch", shown, "created")):
        width = max([len(column), *(len(row[i]) for row in rows)])
        table.add_column(column, no_wrap=True, min_width=width)
        room -= width + 2
    table.add_column("name", no_wrap=True, overflow="ellipsis", max_width=max(room, 4))
    for row, r in zip(rows, items, strict=True):
        tags = f" [dim]{escape(_tags_text(r.tags))}[/]" if r.tags else ""
        table.add_row(*row, escape(r.name or "") + tags)
    out.print(table)


def show(
    run_id: RunArg, url: UrlOpt = None, api_key: KeyOpt = None, as_json: JsonOpt = False
) -> None:
    """Show one run: its record and its last epochs."""
    with _session(url, api_key) as bp:
        run = bp.get_run(run_id)
        history = bp.metrics(run_id)
    if as_json:
        _emit_json({**_dump(run), "history": [_dump(m) for m in history]})
        return
    out.print(_summary(run))
    if history:
        keys = [
            k
            for k in ("loss", "val_loss", "accuracy", "val_accuracy")
            if any(getattr(m, k) is not None for m in history)
        ]
        table = Table("epoch", *keys, "elapsed_s", title="last epochs", title_justify="left")
        shown = history[-5:]
        if run.best_epoch is not None and all(m.epoch != run.best_epoch for m in shown):
            shown = [m for m in history if m.epoch == run.best_epoch] + shown
        for m in shown:
            epoch = f"{m.epoch} (best)" if m.epoch == run.best_epoch else str(m.epoch)
            table.add_row(epoch, *(_fmt(getattr(m, k)) for k in keys), _fmt(m.elapsed_s))
        out.print(table)


def watch(
    run_id: RunArg, url: UrlOpt = None, api_key: KeyOpt = None, as_json: JsonOpt = False
) -> None:
    """Follow a run live until it ends (exit 1 if it failed or was cancelled)."""
    with _session(url, api_key) as bp:
        code = _watch(bp, bp.get_run(run_id), as_json)
    raise typer.Exit(code)


def cancel(
    run_id: RunArg, url: UrlOpt = None, api_key: KeyOpt = None, as_json: JsonOpt = False
) -> None:
    """Cancel a queued or running run."""
    with _session(url, api_key) as bp:
        run = bp.cancel_run(run_id)
    if as_json:
        _emit_json(_dump(run))
    else:
        out.print(f"cancel requested: run [bold]{run.id}[/] is {run.status}")


def weights(
    run_id: RunArg,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Write the model as .npz (W0, b0, …, x_mean/x_std, meta); else print JSON.",
        ),
    ] = None,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Download a succeeded run's model: weights, standardisation, classes (docs/models.md)."""
    with _session(url, api_key) as bp:
        if output is None:
            _emit_json(_dump(bp.get_weights(run_id)))
            return
        try:
            path = bp.download_weights(run_id, output)
        except OSError as exc:
            raise UsageProblem(f"cannot write {output}: {exc.strerror}") from exc
    size = path.stat().st_size
    if as_json:
        _emit_json({"run_id": run_id, "path": str(path), "bytes": size})
    else:
        out.print(f"wrote {escape(str(path))} ({size} bytes)")


def _read_rows(path: Path, drop: list[str]) -> list[list[float]]:
    """Feature rows of a CSV; a first row that is not all numbers is a header."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = [row for row in csv.reader(fh) if any(cell.strip() for cell in row)]
    except OSError as exc:
        raise UsageProblem(f"cannot read {path}: {exc.strerror}") from exc
    header: list[str] | None = None

    def numeric(row: list[str]) -> bool:
        try:
            [float(cell) for cell in row]
        except ValueError:
            return False
        return True

    if rows and not numeric(rows[0]):
        header = [h.strip() for h in rows.pop(0)]
    if drop:
        if header is None:
            raise UsageProblem("--drop needs a CSV with a header row")
        missing = [d for d in drop if d not in header]
        if missing:
            raise UsageProblem(f"--drop: no column named {', '.join(missing)} in {path}")
        keep = [j for j, h in enumerate(header) if h not in drop]
        rows = [[row[j] for j in keep if j < len(row)] for row in rows]
    if not rows:
        raise UsageProblem(f"{path} holds no data rows")
    result: list[list[float]] = []
    for i, row in enumerate(rows, start=2 if header else 1):
        try:
            result.append([float(cell) for cell in row])
        except ValueError as exc:
            raise UsageProblem(f"{path} line {i}: {exc}") from exc
    return result


def predict(
    run_id: RunArg,
    input_file: Annotated[
        Path,
        typer.Option(
            "--input", help="CSV of feature rows; a first row that is not all numbers is a header."
        ),
    ],
    drop: Annotated[
        str | None, typer.Option(help="Comma-separated header columns to leave out (the target).")
    ] = None,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Predict with a succeeded run: one output row (and label) per input row."""
    with _session(url, api_key) as bp:
        rows = _read_rows(input_file, [d.strip() for d in drop.split(",")] if drop else [])
        result = bp.predict(run_id, rows)
    if as_json:
        _emit_json(_dump(result))
        return
    out.print(_prediction_table(result))


def _prediction_table(result: Prediction) -> Table:
    """One line per input row: its outputs, and its label for a classifier."""
    table = Table("row", "outputs", *(["label"] if result.labels is not None else []))
    for i, outputs in enumerate(result.outputs):
        label = [escape(str(result.labels[i]))] if result.labels is not None else []
        table.add_row(str(i + 1), ", ".join(_fmt(v) for v in outputs), *label)
    return table


def _evaluation_tables(result: Evaluation) -> list[Table]:
    """The figures, then per class (with the confusion matrix) or per target."""
    figures = Table("figure", "value", title="figures", title_justify="left")
    figures.add_row(f"loss ({result.loss_name})", _fmt(result.loss))
    names = (
        (("accuracy", "accuracy"), ("macro F1", "macro_f1"), ("log-loss", "log_loss"))
        if result.task == "classification"
        else (("MSE", "mse"), ("RMSE", "rmse"), ("MAE", "mae"), ("R²", "r2"))
    )
    for shown, key in names:
        figures.add_row(shown, _fmt(getattr(result, key)))
    tables = [figures]
    if result.task == "classification":
        per_class = Table("class", "precision", "recall", "F1", "support",
                          title="per class", title_justify="left")  # fmt: skip
        for c in result.per_class or []:
            per_class.add_row(escape(str(c.label)), _fmt(c.precision), _fmt(c.recall),
                              _fmt(c.f1), str(c.support))  # fmt: skip
        labels = [escape(str(c)) for c in result.classes or []]
        matrix = Table("true \\ predicted", *labels, title="confusion matrix",
                       title_justify="left")  # fmt: skip
        for label, row in zip(labels, result.confusion_matrix or [], strict=True):
            matrix.add_row(label, *(str(n) for n in row))
        tables += [per_class, matrix]
    else:
        per_target = Table("target", "MSE", "RMSE", "MAE", "R²", title="per target (averaged "
                           "above with equal weights)", title_justify="left")  # fmt: skip
        for t in result.per_target or []:
            per_target.add_row(str(t.target), _fmt(t.mse), _fmt(t.rmse), _fmt(t.mae), _fmt(t.r2))
        tables.append(per_target)
    return tables


def evaluate(
    run_id: RunArg,
    dataset: Annotated[
        str,
        typer.Argument(
            metavar="DATASET",
            help="Id of a dataset with the columns of the run's training data, or a .csv, "
            ".npz or .json file to upload first.",
            show_default=False,
        ),
    ],
    target: Annotated[
        str | None, typer.Option(help="Target column(s) of a CSV DATASET, comma-separated.")
    ] = None,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Score a succeeded run on a dataset: its loss, and accuracy, per-class F1 and the
    confusion matrix, or MSE, RMSE, MAE and R²."""
    with _session(url, api_key) as bp:
        dataset_id = dataset
        path = Path(dataset)
        if path.suffix.lower() in DATA_SUFFIXES:
            if not path.is_file():
                raise UsageProblem(f"DATASET {dataset}: no such file")
            if path.suffix.lower() == ".csv" and not target:
                raise UsageProblem("--target is required with a .csv dataset (the target column)")
            dataset_id = bp.upload_dataset(path, target=target).id
        result = bp.evaluate(run_id, dataset_id)
    if as_json:
        _emit_json(_dump(result))
        return
    out.print(
        f"run [bold]{result.run_id}[/] on dataset [bold]{result.dataset_id}[/]: "
        f"{result.n_samples} rows, {result.task}"
    )
    for table in _evaluation_tables(result):
        out.print(table)


# -- organising: names, tags, notes ------------------------------------------------------------

IdArg = Annotated[
    str,
    typer.Argument(
        metavar="ID",
        help="A run's id (a sweep's with --sweep, a dataset's with --dataset), or a unique "
        "prefix of it (6+ characters).",
        show_default=False,
    ),
]
SweepFlag = Annotated[bool, typer.Option("--sweep", help="ID is a sweep's.")]
DatasetFlag = Annotated[bool, typer.Option("--dataset", help="ID is a dataset's.")]


def _tag_pairs(pairs: list[str], remove: list[str]) -> dict[str, str | None]:
    """``KEY=VALUE`` arguments and ``--remove KEY`` options as a merge patch of tags."""
    patch: dict[str, str | None] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageProblem(f"{pair!r}: give a tag as KEY=VALUE (an empty VALUE is allowed)")
        patch[key] = value
    patch.update(dict.fromkeys(remove))
    return patch


def _apply_edit(bp: BackpropClient, resource_id: str, kind: str, **fields: Any) -> Any:
    """PATCH the run, sweep or dataset (``kind``) with ``fields``; its record after."""
    if kind == "sweep":
        return bp.update_sweep(resource_id, **fields)
    if kind == "dataset":
        return bp.update_dataset(resource_id, **fields)
    return bp.update_run(resource_id, **fields)


def _read(bp: BackpropClient, resource_id: str, kind: str) -> Any:
    """The record of the run, sweep or dataset (``kind``)."""
    if kind == "sweep":
        return bp.get_sweep(resource_id)
    if kind == "dataset":
        return bp.get_dataset(resource_id)
    return bp.get_run(resource_id)


def _kind(sweep: bool, dataset: bool) -> str:
    if sweep and dataset:
        raise UsageProblem("--sweep and --dataset: give at most one")
    return "sweep" if sweep else "dataset" if dataset else "run"


def _print_organised(kind: str, record: Any) -> None:
    out.print(f"{kind} [bold]{record.id}[/]")
    out.print(f"  name:  {escape(record.name) if record.name else '-'}")
    out.print(f"  tags:  {escape(_tags_text(record.tags)) if record.tags else '-'}")
    if record.notes:
        out.print("  notes: " + escape(record.notes).replace("\n", "\n         "))


def tag(
    resource_id: IdArg,
    pairs: Annotated[
        list[str] | None,
        typer.Argument(metavar="[KEY=VALUE]...", help="Tags to set.", show_default=False),
    ] = None,
    remove: Annotated[
        list[str] | None, typer.Option("--remove", "-r", help="A tag KEY to remove; repeat.")
    ] = None,
    sweep: SweepFlag = False,
    dataset: DatasetFlag = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Tag a run (or a sweep, a dataset): set KEY=VALUE tags, remove others; the rest stay.
    Without KEY=VALUE or --remove, show its tags."""
    with _session(url, api_key) as bp:
        kind = _kind(sweep, dataset)
        patch = _tag_pairs(pairs or [], remove or [])
        if patch:
            record = _apply_edit(bp, resource_id, kind, tags=patch)
        else:
            record = _read(bp, resource_id, kind)
    if as_json:
        _emit_json(_dump(record))
    else:
        _print_organised(kind, record)


def edit(
    resource_id: IdArg,
    name: Annotated[
        str | None, typer.Option(help="A new name (\"\" removes a run's or a sweep's).")
    ] = None,
    notes: Annotated[
        str | None,
        typer.Option(help='New notes ("" removes them; "-" reads them from stdin).'),
    ] = None,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", "-t", help="A tag KEY=VALUE to set; repeat.")
    ] = None,
    remove_tag: Annotated[
        list[str] | None, typer.Option("--remove-tag", help="A tag KEY to remove; repeat.")
    ] = None,
    clear_tags: Annotated[
        bool, typer.Option("--clear-tags", help="Remove every tag first.")
    ] = False,
    sweep: SweepFlag = False,
    dataset: DatasetFlag = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Rename a run (or a sweep, a dataset), change its notes or tags; what is not given
    stays as it is. Training and status are never affected."""
    fields: dict[str, Any] = {}
    if name is not None:
        fields["name"] = name or None
    if notes is not None:
        text = typer.get_text_stream("stdin").read() if notes == "-" else notes
        fields["notes"] = text or None
    with _session(url, api_key) as bp:
        kind = _kind(sweep, dataset)
        patch = _tag_pairs(tag or [], remove_tag or [])
        if clear_tags and patch:  # every tag not set again is removed, in the same edit
            patch = {**dict.fromkeys(_read(bp, resource_id, kind).tags), **patch}
        if patch or clear_tags:
            fields["tags"] = patch or None
        record = _apply_edit(bp, resource_id, kind, **fields)
    if as_json:
        _emit_json(_dump(record))
    else:
        _print_organised(kind, record)


def register(app: typer.Typer) -> None:
    """Add the client commands to ``app``."""
    for command in (submit, runs, show, watch, cancel, weights, predict, evaluate, tag, edit):
        app.command()(command)
    app.add_typer(sweep_app, name="sweep")


# -- sweeps -----------------------------------------------------------------------------------

sweep_app = typer.Typer(
    help="Hyperparameter sweeps: create one from a JSON spec, show its leaderboard, cancel, "
    "extend or retry it, refit its best setting.",
    no_args_is_help=True,
)
SweepArg = Annotated[
    str,
    typer.Argument(
        metavar="SWEEP",
        help="Sweep id, or a unique prefix of it (6+ characters).",
        show_default=False,
    ),
]


def _sweep_table(sweep: Any, top: int | None = None) -> Table:
    metric = sweep.metric
    table = Table(title=f"leaderboard ({metric}, {'lowest' if sweep.mode == 'min' else 'highest'}"
                  " first)", title_justify="left")  # fmt: skip
    for column in ("#", "run", "status", metric, "epoch", "params"):
        table.add_column(column, overflow="fold")
    for rank, entry in enumerate(sweep.leaderboard[:top] if top else sweep.leaderboard, 1):
        value = _fmt(entry.get(metric))
        if entry.get(f"{metric}_std") is not None:
            value += f" ± {_fmt(entry[f'{metric}_std'])}"
        reason = entry.get("stop_reason")
        status = entry["status"] + (f" ({reason})" if reason else "")
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in entry["params"].items())
        table.add_row(str(rank), entry["run_id"], status, value, _fmt(entry.get("epoch")),
                      escape(params))  # fmt: skip
    return table


def _print_sweep(sweep: Any, top: int | None = None) -> None:
    p = sweep.progress
    out.print(
        f"sweep [bold]{sweep.id}[/] {sweep.status}: {p.finished}/{p.total} runs ended "
        f"({p.running} running, {p.queued} queued, {p.pruned} pruned)"
    )
    out.print(_sweep_table(sweep, top))
    if sweep.best:
        out.print(f"best: run [bold]{sweep.best['run_id']}[/] {sweep.metric}="
                  f"{_fmt(sweep.best.get(sweep.metric))}")  # fmt: skip


@sweep_app.command("create")
def sweep_create(
    spec: Annotated[Path, typer.Option(help="Sweep spec: the JSON body of POST /api/v1/sweeps.")],
    data: Annotated[
        Path | None,
        typer.Option(help="Upload this dataset file first and use it as base.dataset_id."),
    ] = None,
    target: Annotated[
        str | None, typer.Option(help="Target column(s) of a CSV --data, comma-separated.")
    ] = None,
    watch: Annotated[bool, typer.Option("--watch", help="Wait for the sweep to end.")] = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Start a sweep (docs/sweeps.md); with --watch, follow it until it ends."""
    code = EXIT_OK
    with _session(url, api_key) as bp:
        body = _read_json(spec, "sweep spec")
        if data is not None:
            if not data.is_file():
                raise UsageProblem(f"--data {data}: no such file")
            if data.suffix.lower() == ".csv" and not target:
                raise UsageProblem("--target is required with a .csv dataset (the target column)")
            dataset = bp.upload_dataset(data, target=target)
            body.setdefault("base", {})["dataset_id"] = dataset.id
        sweep = bp.create_sweep(body)
        if not as_json:
            out.print(f"sweep [bold]{sweep.id}[/] {sweep.status}: {sweep.progress.total} runs, "
                      f"{sweep.max_concurrent} at a time")  # fmt: skip
        if watch:
            last = -1
            with _goes_on("the sweep", f"backprop sweep show {sweep.id}"):
                while not (sweep.done and sweep.progress.finished >= sweep.progress.total):
                    if not as_json and sweep.progress.finished != last:
                        last = sweep.progress.finished
                        out.print(f"{last}/{sweep.progress.total} runs ended")
                    time.sleep(1.0)
                    sweep = bp.get_sweep(sweep.id)
            code = EXIT_OK if sweep.status == "succeeded" else EXIT_RUN_FAILED
            if not as_json:
                _print_sweep(sweep, top=10)
        if as_json:
            _emit_json(_dump(sweep))
    raise typer.Exit(code)


@sweep_app.command("show")
def sweep_show(
    sweep_id: SweepArg,
    top: Annotated[int | None, typer.Option(help="Only the best N entries.")] = None,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a sweep: status, progress and leaderboard (best first)."""
    with _session(url, api_key) as bp:
        sweep = bp.get_sweep(sweep_id)
    if as_json:
        _emit_json(_dump(sweep))
    else:
        _print_sweep(sweep, top)


@sweep_app.command("list")
def sweep_list(
    limit: Annotated[int, typer.Option(help="At most this many sweeps, newest first.")] = 20,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List sweeps, newest first."""
    with _session(url, api_key) as bp:
        items = bp.list_sweeps(limit=limit)
    if as_json:
        _emit_json([_dump(s) for s in items])
        return
    table = Table(box=None, padding=(0, 2, 0, 0), pad_edge=False, header_style="bold")
    for column in ("id", "status", "runs", "metric", "best", "name"):
        table.add_column(column, no_wrap=column != "name")
    for s in items:
        best = _fmt(s.best.get(s.metric)) if s.best else "-"
        table.add_row(s.id, s.status, f"{s.progress.finished}/{s.progress.total}", s.metric,
                      best, escape(s.name or ""))  # fmt: skip
    out.print(table)


@sweep_app.command("cancel")
def sweep_cancel(
    sweep_id: SweepArg, url: UrlOpt = None, api_key: KeyOpt = None, as_json: JsonOpt = False
) -> None:
    """Cancel a sweep: queued trials never start, running ones stop within an epoch."""
    with _session(url, api_key) as bp:
        sweep = bp.cancel_sweep(sweep_id)
    if as_json:
        _emit_json(_dump(sweep))
    else:
        out.print(f"sweep [bold]{sweep.id}[/] {sweep.status}")


@sweep_app.command("refit")
def sweep_refit(
    sweep_id: SweepArg,
    watch: Annotated[bool, typer.Option("--watch", help="Follow the refit run.")] = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Train the sweep's best setting on all the data (every fold, no validation hold-out)
    as a final run linked to the sweep."""
    with _session(url, api_key) as bp:
        run = bp.refit_sweep(sweep_id)
        if not watch:
            if as_json:
                _emit_json(_dump(run))
            else:
                out.print(f"refit run [bold]{run.id}[/] {run.status} (sweep {run.sweep_id})")
            return
        if not as_json:
            out.print(f"refit run [bold]{run.id}[/] {run.status} (sweep {run.sweep_id})")
        code = _watch(bp, run, as_json)
    raise typer.Exit(code)


@sweep_app.command("extend")
def sweep_extend(
    sweep_id: SweepArg,
    trials: Annotated[int, typer.Option(min=1, help="How many configurations to add.")],
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add trials to a random or tpe sweep; a sweep that ended runs again."""
    with _session(url, api_key) as bp:
        sweep = bp.extend_sweep(sweep_id, trials)
    if as_json:
        _emit_json(_dump(sweep))
    else:
        out.print(f"sweep [bold]{sweep.id}[/] {sweep.status}: {sweep.n_trials} trials, "
                  f"{sweep.progress.finished}/{sweep.progress.total} runs ended")  # fmt: skip


@sweep_app.command("retry-failed")
def sweep_retry_failed(
    sweep_id: SweepArg, url: UrlOpt = None, api_key: KeyOpt = None, as_json: JsonOpt = False
) -> None:
    """Run the sweep's failed trials again (the leaderboard shows the latest attempt)."""
    with _session(url, api_key) as bp:
        sweep = bp.retry_failed_sweep(sweep_id)
    if as_json:
        _emit_json(_dump(sweep))
    else:
        out.print(f"sweep [bold]{sweep.id}[/] {sweep.status}: "
                  f"{sweep.progress.finished}/{sweep.progress.total} runs ended")  # fmt: skip
