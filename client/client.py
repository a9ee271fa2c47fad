"""``BackpropClient``: a small synchronous HTTP client of the Backprop Service (API.md).

It needs only ``httpx``, ``httpx-sse`` and ``pydantic``; it does not import the service's
own packages or NumPy, so another service can depend on it alone. Array-likes (NumPy arrays,
pandas frames) are accepted wherever rows are expected, through their ``tolist()`` method.

Every method raises :class:`~client.errors.BackpropError` with the server's ``detail`` when
the server answers 4xx/5xx, and :class:`~client.errors.BackpropConnectionError` when it
cannot be reached.
"""

from __future__ import annotations

import json
import mimetypes
import os
import time
from collections.abc import Generator, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import httpx
from httpx_sse import SSEError, connect_sse

from client.errors import BackpropConnectionError, BackpropError
from client.models import (
    Dataset,
    Evaluation,
    Event,
    MetricItem,
    ModelPrediction,
    ModelWeights,
    Prediction,
    RegisteredModel,
    RegisteredModelDetail,
    Run,
    Sweep,
)

DEFAULT_URL = "http://127.0.0.1:8000"
API = "/api/v1"
PAGE_SIZE = 200

__all__ = ["DEFAULT_URL", "UNSET", "BackpropClient", "EventStream"]


def _rows(value: Any) -> Any:
    """Plain lists from an array-like (anything with ``tolist()``), else ``value`` itself."""
    tolist = getattr(value, "tolist", None)
    return tolist() if callable(tolist) else value


class _Unset:
    """The default of an ``update_*`` argument: leave that field as it is."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


def _edit_body(name: Any, tags: Any, notes: Any) -> dict[str, Any]:
    """The ``PATCH`` body: the fields given (``None`` removes), none of the others."""
    given = {"name": name, "tags": tags, "notes": notes}
    return {key: (dict(value) if key == "tags" and value is not None else value)
            for key, value in given.items() if value is not UNSET}  # fmt: skip


def _time(value: datetime | str | None) -> str | None:
    """A time for a query: ISO 8601 (a time without a zone is UTC to the server)."""
    return value.isoformat() if isinstance(value, datetime) else value


def _tag_filters(tags: Mapping[str, str] | Sequence[str] | None) -> list[str]:
    """``?tag=`` values: ``{"project": "iris"}`` or ``["project:iris"]`` → ``["project:iris"]``."""
    if tags is None:
        return []
    if isinstance(tags, Mapping):
        return [f"{key}:{value}" for key, value in tags.items()]
    return [tags] if isinstance(tags, str) else list(tags)


def _list_filters(
    *,
    status: str | Sequence[str] | None = None,
    tags: Mapping[str, str] | Sequence[str] | None = None,
    q: str | None = None,
    **more: Any,
) -> dict[str, Any]:
    """The query parameters of a list, leaving out those not given (httpx repeats lists)."""
    params: dict[str, Any] = {
        "status": [status] if isinstance(status, str) else list(status or ()),
        "tag": _tag_filters(tags),
        "q": q,
        **more,
    }
    return {k: v for k, v in params.items() if v is not None and v is not False and v != []}


def _error_from(resp: httpx.Response) -> BackpropError:
    try:
        body = resp.json()
        detail = body.get("detail", body) if isinstance(body, dict) else body
    except (ValueError, UnicodeDecodeError):
        detail = resp.text or resp.reason_phrase
    return BackpropError(resp.status_code, detail)


class BackpropClient:
    """A client of one Backprop Service.

    Args:
        base_url: the service's root URL; default ``$BACKPROP_URL`` or ``http://127.0.0.1:8000``.
        api_key: sent as ``Authorization: Bearer <key>``; default ``$BACKPROP_API_KEY`` (none
            when unset or empty).
        timeout: seconds for connecting and for each read.
        page_size: items per request when a list method follows ``next_cursor``.

    Use it as a context manager, or call :meth:`close` when done.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 30,
        *,
        page_size: int = PAGE_SIZE,
    ) -> None:
        self.base_url = (base_url or os.environ.get("BACKPROP_URL") or DEFAULT_URL).rstrip("/")
        key = api_key if api_key is not None else os.environ.get("BACKPROP_API_KEY")
        self.api_key = key or None
        self.timeout = timeout
        self.page_size = page_size
        headers = {"User-Agent": "backprop-client/0.1", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    # -- plumbing ------------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            resp = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise BackpropConnectionError(
                f"cannot reach the Backprop Service at {self.base_url}: {type(exc).__name__}: {exc}"
            ) from exc
        if resp.status_code >= 400:
            raise _error_from(resp)
        return resp

    def _pages(self, path: str, params: dict[str, Any], limit: int | None) -> Iterator[Any]:
        """Items of a paginated list, following ``next_cursor`` until ``limit`` or the end."""
        cursor: str | None = None
        seen = 0
        while True:
            size = self.page_size if limit is None else max(1, min(self.page_size, limit - seen))
            query = {**params, "limit": size, **({"cursor": cursor} if cursor else {})}
            body = self._request("GET", path, params=query).json()
            for item in body["items"]:
                yield item
                seen += 1
                if limit is not None and seen >= limit:
                    return
            cursor = body.get("next_cursor")
            if not cursor:
                return

    # -- datasets ------------------------------------------------------------------------
    def upload_dataset(
        self,
        data: str | os.PathLike[str] | tuple[Any, Any],
        *,
        target: str | Sequence[str] | None = None,
        name: str | None = None,
        task: str | None = None,
        dedupe: bool = True,
    ) -> Dataset:
        """Upload a dataset and return its record.

        ``data`` is a path to a ``.csv`` (with a header row; ``target`` names the target
        column(s)), a ``.npz`` (arrays ``X`` and ``y``) or a ``.json`` file
        (``{"X": [[...]], "y": [...]}``), or an ``(X, y)`` pair of lists or arrays, as
        scikit-learn takes them: ``y`` may be 1-D integer (or text) class labels, which a run
        with a cross-entropy loss trains as classes (API.md §3).
        ``task`` (``"classification"`` / ``"regression"``) overrides the server's guess.

        Content you uploaded before is not stored again: the record returned is then the
        existing dataset's (its id and name). ``dedupe=False`` stores a copy anyway.
        """
        params = {} if dedupe else {"dedupe": "false"}
        if isinstance(data, tuple):
            X, y = data
            return self._upload_json({"X": _rows(X), "y": _rows(y)}, name, task, params)
        path = Path(data)
        if path.suffix.lower() == ".json":
            payload = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(payload, dict) or "X" not in payload or "y" not in payload:
                raise ValueError(f"{path}: a JSON dataset is an object with keys 'X' and 'y'")
            name = name or payload.get("name") or path.stem
            return self._upload_json(payload, name, task, params)
        fields: dict[str, str] = {"name": name or path.stem}
        if target is not None:
            fields["target"] = target if isinstance(target, str) else ",".join(target)
        if task is not None:
            fields["task"] = task
        media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        with path.open("rb") as fh:
            resp = self._request(
                "POST", f"{API}/datasets", params=params, data=fields,
                files={"file": (path.name, fh, media)},
            )  # fmt: skip
        return Dataset.model_validate(resp.json())

    def _upload_json(
        self, payload: dict[str, Any], name: str | None, task: str | None, params: dict[str, str]
    ) -> Dataset:
        body = {"X": payload["X"], "y": payload["y"]}
        if name is not None:
            body["name"] = name
        if task or payload.get("task"):
            body["task"] = task or payload["task"]
        resp = self._request("POST", f"{API}/datasets", params=params, json=body)
        return Dataset.model_validate(resp.json())

    def list_datasets(
        self,
        limit: int | None = None,
        *,
        tags: Mapping[str, str] | Sequence[str] | None = None,
        q: str | None = None,
    ) -> list[Dataset]:
        """All datasets, newest first (at most ``limit``); ``tags`` and ``q`` narrow the
        list as in :meth:`list_runs`."""
        params = _list_filters(tags=tags, q=q)
        return [Dataset.model_validate(d) for d in self._pages(f"{API}/datasets", params, limit)]

    def update_dataset(
        self, dataset_id: str, *, name: Any = UNSET, tags: Any = UNSET, notes: Any = UNSET
    ) -> Dataset:
        """Rename, tag or annotate a dataset, as :meth:`update_run` (a dataset keeps a name:
        ``name=None`` is refused)."""
        body = _edit_body(name, tags, notes)
        resp = self._request("PATCH", f"{API}/datasets/{dataset_id}", json=body)
        return Dataset.model_validate(resp.json())

    def get_dataset(self, dataset_id: str) -> Dataset:
        """One dataset's record."""
        return Dataset.model_validate(self._request("GET", f"{API}/datasets/{dataset_id}").json())

    def delete_dataset(self, dataset_id: str) -> None:
        """Delete a dataset (409 while a queued or running run uses it)."""
        self._request("DELETE", f"{API}/datasets/{dataset_id}")

    # -- runs ----------------------------------------------------------------------------
    def submit_run(
        self,
        dataset_id: str,
        network: dict[str, Any],
        training: dict[str, Any] | None = None,
        *,
        name: str | None = None,
        priority: int | None = None,
    ) -> Run:
        """Queue a training run of ``network`` (API.md §2) on a dataset with ``training`` (§3).

        ``priority`` (0-9): among queued runs, higher ones start first.
        """
        body: dict[str, Any] = {"dataset_id": dataset_id, "network": network}
        if training is not None:
            body["training"] = training
        if name is not None:
            body["name"] = name
        if priority is not None:
            body["priority"] = priority
        return Run.model_validate(self._request("POST", f"{API}/runs", json=body).json())

    def list_runs(
        self,
        status: str | Sequence[str] | None = None,
        limit: int | None = None,
        *,
        tags: Mapping[str, str] | Sequence[str] | None = None,
        q: str | None = None,
        dataset_id: str | None = None,
        sweep_id: str | None = None,
        created_after: datetime | str | None = None,
        created_before: datetime | str | None = None,
        top_level: bool = False,
        sort: str | None = None,
        order: str | None = None,
    ) -> list[Run]:
        """Runs, newest first unless ``sort``/``order`` say otherwise; all pages unless
        ``limit``. The filters narrow the list together (API.md §5):

        - ``status``: one status or several (any of them);
        - ``tags``: ``{"project": "iris"}`` or ``["project:iris"]``, all of them;
        - ``q``: the name contains it, case aside;
        - ``dataset_id``, ``sweep_id`` (whole ids); ``top_level=True``: no sweep trials;
        - ``created_after`` (inclusive), ``created_before`` (exclusive): datetimes or ISO text.

        ``sort``: ``created_at``, ``loss``, ``val_loss``, ``accuracy``, ``val_accuracy`` or
        ``best_epoch`` (runs without the value last); ``order``: ``asc`` or ``desc``
        (default: newest first, lowest loss or best epoch first, highest accuracy first).
        """
        params = _list_filters(
            status=status, tags=tags, q=q, dataset_id=dataset_id, sweep_id=sweep_id,
            created_after=_time(created_after), created_before=_time(created_before),
            top_level=top_level, sort=sort, order=order,
        )  # fmt: skip
        return [Run.model_validate(r) for r in self._pages(f"{API}/runs", params, limit)]

    def update_run(
        self, run_id: str, *, name: Any = UNSET, tags: Any = UNSET, notes: Any = UNSET
    ) -> Run:
        """Change a run's ``name``, ``tags`` or ``notes``; the record as it is now.

        Only what is given changes; ``None`` removes (``tags=None``: every tag). ``tags``
        merges: ``{"stage": "final", "old": None}`` sets one tag and removes another,
        leaving the rest. The run's training and status are never affected.
        """
        body = _edit_body(name, tags, notes)
        return Run.model_validate(self._request("PATCH", f"{API}/runs/{run_id}", json=body).json())

    def get_run(self, run_id: str) -> Run:
        """One run's record."""
        return Run.model_validate(self._request("GET", f"{API}/runs/{run_id}").json())

    def cancel_run(self, run_id: str) -> Run:
        """Ask a queued or running run to stop (409 when it already ended)."""
        return Run.model_validate(self._request("POST", f"{API}/runs/{run_id}/cancel").json())

    def delete_run(self, run_id: str) -> None:
        """Delete a finished run and its weights (409 while it is active)."""
        self._request("DELETE", f"{API}/runs/{run_id}")

    def metrics(self, run_id: str) -> list[MetricItem]:
        """Every finished epoch's metrics, in order."""
        body = self._request("GET", f"{API}/runs/{run_id}/metrics").json()
        return [MetricItem.model_validate(item) for item in body["items"]]

    def weights(self, run_id: str) -> list[dict[str, Any]]:
        """The trained layers: ``[{"W": [[...]], "b": [...]}, ...]``, W of shape (in, units).

        Only the layers; :meth:`get_weights` has the whole model (standardisation, classes).
        """
        return self._request("GET", f"{API}/runs/{run_id}/weights").json()["layers"]

    def get_weights(self, run_id: str) -> ModelWeights:
        """The whole trained model as JSON: ``dtype``, ``spec``, ``classes``,
        ``preprocessing`` (``x_mean``/``x_std`` or None) and ``layers`` (docs/models.md)."""
        resp = self._request("GET", f"{API}/runs/{run_id}/weights")
        return ModelWeights.model_validate(resp.json())

    def download_weights(self, run_id: str, path: str | os.PathLike[str]) -> Path:
        """Save the model artifact as ``.npz`` at ``path``: arrays ``W0, b0, W1, b1, ...``,
        ``x_mean``/``x_std`` when standardised, and ``meta`` (JSON text: spec, dtype,
        classes); docs/models.md runs it in plain NumPy."""
        resp = self._request("GET", f"{API}/runs/{run_id}/weights", params={"format": "npz"})
        out = Path(path)
        out.write_bytes(resp.content)
        return out

    def predict(self, run_id: str, inputs: Any) -> Prediction:
        """Outputs (and class labels, for classification) of a succeeded run for input rows."""
        body = {"inputs": _rows(inputs)}
        resp = self._request("POST", f"{API}/runs/{run_id}/predict", json=body)
        return Prediction.model_validate(resp.json())

    def evaluate(self, run_id: str, dataset_id: str) -> Evaluation:
        """Score a succeeded run's model on every row of a dataset with the columns of its
        training data: the run's loss, and classification or regression figures."""
        body = {"dataset_id": dataset_id}
        resp = self._request("POST", f"{API}/runs/{run_id}/evaluate", json=body)
        return Evaluation.model_validate(resp.json())

    def wait(self, run_id: str, timeout: float | None = None, poll: float = 0.5) -> Run:
        """Poll until the run ends and return its final record.

        Raises:
            TimeoutError: the run had not ended after ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            run = self.get_run(run_id)
            if run.done:
                return run
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"run {run_id} is still {run.status} after {timeout} s")
            time.sleep(poll)

    # -- the model registry ----------------------------------------------------------------
    @staticmethod
    def _model_path(name: str) -> str:
        # Quoted whole: a name the server refuses (a space, a slash) reaches it, and its
        # 422 says what a name may be.
        return f"{API}/models/{quote(name, safe='')}"

    def register_model(self, name: str, run_id: str) -> RegisteredModelDetail:
        """Make a succeeded run the current version of the model ``name``.

        A run that is not yet one of its versions becomes the next version (1 for a new
        name); the run of an older version makes that version current again (a rollback:
        no new number). Names are 1-100 letters, digits, ``.``, ``_`` and ``-``, beginning
        with a letter or digit. ``run_id`` is a whole id.
        """
        resp = self._request("PUT", self._model_path(name), json={"run_id": run_id})
        return RegisteredModelDetail.model_validate(resp.json())

    def get_model(self, name: str) -> RegisteredModelDetail:
        """A registered model with its versions (run ids, times, metrics) and which is current."""
        resp = self._request("GET", self._model_path(name))
        return RegisteredModelDetail.model_validate(resp.json())

    def list_models(self, limit: int | None = None) -> list[RegisteredModel]:
        """Your registered models, the most recently created first (at most ``limit``)."""
        pages = self._pages(f"{API}/models", {}, limit)
        return [RegisteredModel.model_validate(m) for m in pages]

    def predict_model(self, name: str, inputs: Any, version: int | None = None) -> ModelPrediction:
        """Predict with the current version of a registered model (or with ``version``); the
        answer names the version and run that gave it."""
        params = {} if version is None else {"version": version}
        resp = self._request(
            "POST", f"{self._model_path(name)}/predict", params=params,
            json={"inputs": _rows(inputs)},
        )  # fmt: skip
        return ModelPrediction.model_validate(resp.json())

    def delete_model(self, name: str) -> None:
        """Remove a model name and its versions; the runs stay."""
        self._request("DELETE", self._model_path(name))

    # -- sweeps --------------------------------------------------------------------------
    def create_sweep(self, spec: dict[str, Any]) -> Sweep:
        """Start a hyperparameter sweep: ``spec`` is the body of ``POST /api/v1/sweeps``
        (``{"base": <run request>, "search": {...}, "metric": ..., ...}``, docs/sweeps.md)."""
        return Sweep.model_validate(self._request("POST", f"{API}/sweeps", json=spec).json())

    def list_sweeps(
        self,
        status: str | Sequence[str] | None = None,
        limit: int | None = None,
        *,
        tags: Mapping[str, str] | Sequence[str] | None = None,
        q: str | None = None,
    ) -> list[Sweep]:
        """Sweeps newest first; ``status``, ``tags`` and ``q`` narrow the list as in
        :meth:`list_runs`."""
        params = _list_filters(status=status, tags=tags, q=q)
        return [Sweep.model_validate(s) for s in self._pages(f"{API}/sweeps", params, limit)]

    def update_sweep(
        self, sweep_id: str, *, name: Any = UNSET, tags: Any = UNSET, notes: Any = UNSET
    ) -> Sweep:
        """Rename, tag or annotate a sweep, as :meth:`update_run` (its trials keep theirs)."""
        body = _edit_body(name, tags, notes)
        resp = self._request("PATCH", f"{API}/sweeps/{sweep_id}", json=body)
        return Sweep.model_validate(resp.json())

    def get_sweep(self, sweep_id: str) -> Sweep:
        """One sweep: status, progress and leaderboard (best first)."""
        return Sweep.model_validate(self._request("GET", f"{API}/sweeps/{sweep_id}").json())

    def cancel_sweep(self, sweep_id: str) -> Sweep:
        """Cancel a sweep: queued trials never start, running ones stop (409 when it ended)."""
        resp = self._request("POST", f"{API}/sweeps/{sweep_id}/cancel")
        return Sweep.model_validate(resp.json())

    def refit_sweep(self, sweep_id: str) -> Run:
        """Train the sweep's best setting on all the data (every fold, no validation
        hold-out) as a final run linked to the sweep (its ``refit_run_id``); returns the run.
        409 while the sweep runs or when no trial succeeded."""
        resp = self._request("POST", f"{API}/sweeps/{sweep_id}/refit")
        return Run.model_validate(resp.json())

    def extend_sweep(self, sweep_id: str, trials: int) -> Sweep:
        """Add ``trials`` configurations to a random or tpe sweep (409 for a grid); a sweep
        that ended runs again."""
        resp = self._request("POST", f"{API}/sweeps/{sweep_id}/extend", json={"trials": trials})
        return Sweep.model_validate(resp.json())

    def retry_failed_sweep(self, sweep_id: str) -> Sweep:
        """Run the sweep's failed trials again (new runs, same trial and fold; the
        leaderboard shows the latest attempt). 409 when none failed."""
        resp = self._request("POST", f"{API}/sweeps/{sweep_id}/retry-failed")
        return Sweep.model_validate(resp.json())

    def wait_sweep(self, sweep_id: str, timeout: float | None = None, poll: float = 1.0) -> Sweep:
        """Poll until the sweep and all its trials have ended; returns its final record.

        Raises:
            TimeoutError: it had not ended after ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            sweep = self.get_sweep(sweep_id)
            if sweep.done and sweep.progress.finished >= sweep.progress.total:
                return sweep
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"sweep {sweep_id} is still {sweep.status} after {timeout} s")
            time.sleep(poll)

    def events(
        self,
        run_id: str,
        *,
        last_event_id: str | None = None,
        max_retries: int = 5,
        retry_delay: float = 0.5,
        read_timeout: float | None = None,
    ) -> EventStream:
        """Live events of a run (see :class:`EventStream`); ends after the terminal status."""
        return EventStream(
            self,
            run_id,
            last_event_id=last_event_id,
            max_retries=max_retries,
            retry_delay=retry_delay,
            read_timeout=read_timeout,
        )


class EventStream(Iterator[Event]):
    """An iterator over a run's Server-Sent Events that survives dropped connections.

    It yields every earlier epoch's ``metric`` event, then live ones, and stops after the
    terminal ``status`` event (``succeeded``, ``failed`` or ``cancelled``). When the
    connection drops or times out it reconnects with ``Last-Event-ID`` set to the last event
    it yielded, so nothing is repeated or skipped. After ``max_retries`` reconnections in a
    row that yield nothing it raises :class:`BackpropConnectionError`.

    ``response`` is the HTTP response being read (None between connections) and
    ``reconnects`` counts reconnections so far.
    """

    def __init__(
        self,
        client: BackpropClient,
        run_id: str,
        *,
        last_event_id: str | None,
        max_retries: int,
        retry_delay: float,
        read_timeout: float | None,
    ) -> None:
        self.run_id = run_id
        self.last_event_id = last_event_id
        self.response: httpx.Response | None = None
        self.reconnects = 0
        self._client = client
        self._max_retries = max_retries
        self._delay = retry_delay
        self._timeout = httpx.Timeout(client.timeout, read=read_timeout or client.timeout)
        self._events = self._read()

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> Event:
        return next(self._events)

    def close(self) -> None:
        """Stop reading and close the connection."""
        self._events.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self) -> Generator[Event, None, None]:
        path = f"{API}/runs/{self.run_id}/events"
        failures = 0
        while True:
            headers = {"Last-Event-ID": self.last_event_id} if self.last_event_id else {}
            why = "the server closed the stream before the run ended"
            try:
                # httpx-sse parses the stream; an event cut off before its blank line is
                # never dispatched, so a dropped connection loses only what is sent again.
                with connect_sse(
                    self._client._http, "GET", path, headers=headers, timeout=self._timeout
                ) as source:
                    self.response = resp = source.response
                    if resp.status_code >= 400:
                        resp.read()
                        raise _error_from(resp)
                    for sse in source.iter_sse():
                        if sse.retry is not None:
                            self._delay = sse.retry / 1000
                        if not sse.data:  # a retry hint alone carries no event
                            continue
                        failures = 0
                        event = Event(event=sse.event, id=sse.id or None, data=json.loads(sse.data))
                        if event.id is not None:
                            self.last_event_id = event.id
                        yield event
                        if event.terminal:
                            return
            except SSEError as exc:  # an answer that is no event stream
                status = self.response.status_code if self.response is not None else None
                raise BackpropError(status, f"{path}: {exc}") from None
            except (httpx.TransportError, httpx.StreamError) as exc:
                why = f"{type(exc).__name__}: {exc}"
            finally:
                self.response = None
            failures += 1
            if failures > self._max_retries:
                raise BackpropConnectionError(
                    f"lost the event stream of run {self.run_id} after {self._max_retries} "
                    f"reconnections ({why})"
                )
            self.reconnects += 1
            time.sleep(self._delay)
