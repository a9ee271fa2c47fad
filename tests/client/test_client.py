"""``client.BackpropClient`` against the real service (uvicorn API + celery worker)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.datasets import load_iris

from cli.processes import free_port
from client import (
    BackpropClient,
    BackpropConnectionError,
    BackpropError,
    Dataset,
    Evaluation,
    Event,
    MetricItem,
    ModelWeights,
    Run,
)
from tests.client.conftest import EXAMPLES, SEED_NETWORK, SEED_TRAINING, SEED_X, SEED_Y
from tests.e2e.stack import Stack


@pytest.fixture
def bp(stack: Stack) -> Iterator[BackpropClient]:
    with BackpropClient(stack.base_url, timeout=10) as client:
        yield client


def _seed_run(bp: BackpropClient, epochs: int) -> Run:
    ds = bp.upload_dataset((SEED_X, SEED_Y), name="seed")
    return bp.submit_run(ds.id, SEED_NETWORK, {**SEED_TRAINING, "epochs": epochs}, name="seed")


def _check_stream(events: list[Event], epochs: int, final: str = "succeeded") -> None:
    metrics = [e.metric for e in events if e.event == "metric"]
    assert [m.epoch for m in metrics if m] == list(range(1, epochs + 1))
    assert events[-1].event == "status" and events[-1].status == final and events[-1].terminal
    assert sum(e.terminal for e in events) == 1
    ids = [e.id for e in events]
    assert all(ids) and len(set(ids)) == len(ids)


# -- the package itself -----------------------------------------------------------------------


def test_importing_the_client_pulls_in_no_service_code_or_numpy() -> None:
    code = (
        "import json, sys, client\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'numpy', 'core', 'api', 'workers', 'sqlalchemy', 'celery', 'redis', 'cli'})\n"
        "print(json.dumps({'bad': bad, 'httpx': 'httpx' in sys.modules}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result == {"bad": [], "httpx": True}


class _Recorder(BaseHTTPRequestHandler):
    """Answers every request 404 with a JSON detail and remembers the request headers."""

    seen: list[dict[str, str]] = []

    def do_GET(self) -> None:  # noqa: N802 - the http.server naming
        self.seen.append(dict(self.headers))
        body = json.dumps({"detail": {"why": "nothing here", "path": self.path}}).encode()
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_environment_defaults_bearer_key_and_error_detail(monkeypatch: pytest.MonkeyPatch) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("BACKPROP_URL", f"http://127.0.0.1:{server.server_port}/")
        monkeypatch.setenv("BACKPROP_API_KEY", "secret-key-1")
        with BackpropClient() as bp:
            assert bp.base_url == f"http://127.0.0.1:{server.server_port}"
            with pytest.raises(BackpropError) as caught:
                bp.get_run("r1")
        assert caught.value.status_code == 404
        assert caught.value.detail == {"why": "nothing here", "path": "/api/v1/runs/r1"}
        assert _Recorder.seen[-1]["Authorization"] == "Bearer secret-key-1"

        monkeypatch.delenv("BACKPROP_API_KEY")
        with BackpropClient() as bp, pytest.raises(BackpropError):
            bp.get_dataset("d1")
        assert "Authorization" not in _Recorder.seen[-1]
        with BackpropClient(api_key="explicit") as bp, pytest.raises(BackpropError):
            bp.list_runs()
        assert _Recorder.seen[-1]["Authorization"] == "Bearer explicit"
    finally:
        server.shutdown()
        server.server_close()

    monkeypatch.delenv("BACKPROP_URL")
    assert BackpropClient().base_url == "http://127.0.0.1:8000"


def test_unreachable_server_is_a_connection_error() -> None:
    with BackpropClient(f"http://127.0.0.1:{free_port()}", timeout=5) as bp:
        with pytest.raises(BackpropConnectionError) as caught:
            bp.list_datasets()
    assert caught.value.status_code is None
    assert "cannot reach" in str(caught.value)


# -- datasets ---------------------------------------------------------------------------------


def test_dataset_uploads_from_arrays_csv_json_and_npz(bp: BackpropClient, tmp_path: Path) -> None:
    # dedupe=False: new records named as asked, whatever this module uploaded before
    from_arrays = bp.upload_dataset(
        (np.array(SEED_X), np.array(SEED_Y)), name="arrays", dedupe=False
    )
    assert isinstance(from_arrays, Dataset)
    assert (from_arrays.n_samples, from_arrays.n_features, from_arrays.n_targets) == (1, 2, 2)
    assert from_arrays.name == "arrays" and from_arrays.task == "regression"

    iris = bp.upload_dataset(EXAMPLES / "iris" / "iris.csv", target="species")
    assert iris.task == "classification" and iris.name == "iris"
    assert (iris.n_samples, iris.n_features, iris.n_targets) == (150, 4, 3)
    assert sorted(iris.classes or []) == ["setosa", "versicolor", "virginica"]

    seed = bp.upload_dataset(EXAMPLES / "seed" / "data.json", dedupe=False)
    assert (seed.n_samples, seed.n_features, seed.name) == (1, 2, "seed")

    npz = tmp_path / "xor.npz"
    np.savez(npz, X=np.array([[0, 0], [0, 1], [1, 0], [1, 1]]), y=np.array([0, 1, 1, 0]))
    xor = bp.upload_dataset(npz, name="xor", task="classification")
    assert xor.task == "classification" and xor.classes is not None and len(xor.classes) == 2

    listed = [d.id for d in bp.list_datasets()]
    for ds in (from_arrays, iris, seed, xor):
        assert ds.id in listed
        assert bp.get_dataset(ds.id) == ds
    assert len(bp.list_datasets(limit=2)) == 2

    bp.delete_dataset(xor.id)
    with pytest.raises(BackpropError) as caught:
        bp.get_dataset(xor.id)
    assert caught.value.status_code == 404 and xor.id in caught.value.detail


def test_content_uploaded_before_is_the_same_dataset(bp: BackpropClient, tmp_path: Path) -> None:
    X = np.random.default_rng(int.from_bytes(os.urandom(8), "little")).normal(size=(6, 3))
    y = X.sum(axis=1)
    first = bp.upload_dataset((X, y), name="first")
    assert first.name == "first"
    assert bp.upload_dataset((X, y), name="again") == first  # the first record, as it is
    as_file = tmp_path / "same.npz"
    np.savez(as_file, X=X, y=y)
    assert bp.upload_dataset(as_file) == first  # another format, the same parsed content
    copy = bp.upload_dataset((X, y), name="copy", dedupe=False)
    assert copy.id != first.id and copy.sha256 == first.sha256 and copy.name == "copy"
    assert [d.id for d in bp.list_datasets() if d.sha256 == first.sha256] == [copy.id, first.id]


def test_bad_uploads_carry_the_servers_detail(bp: BackpropClient, tmp_path: Path) -> None:
    with pytest.raises(BackpropError) as caught:
        bp.upload_dataset(EXAMPLES / "iris" / "iris.csv", target="colour")
    assert caught.value.status_code == 422 and "colour" in caught.value.detail
    odd = tmp_path / "data.txt"
    odd.write_text("1,2\n")
    with pytest.raises(BackpropError) as caught:
        bp.upload_dataset(odd)
    assert caught.value.status_code == 415


# -- runs -------------------------------------------------------------------------------------


def test_run_lifecycle_metrics_weights_and_predictions(bp: BackpropClient, tmp_path: Path) -> None:
    run = _seed_run(bp, epochs=20)
    assert run.status == "queued" and run.progress.epochs == 20 and run.name == "seed"
    done = bp.wait(run.id, timeout=60, poll=0.1)
    assert done.status == "succeeded" and done.done and done.progress.epoch == 20

    items = bp.metrics(run.id)
    assert all(isinstance(m, MetricItem) for m in items)
    assert [m.epoch for m in items] == list(range(1, 21))
    assert items[-1].loss < items[0].loss
    assert done.metrics["loss"] == items[-1].loss

    layers = bp.weights(run.id)
    assert [np.shape(layer["W"]) for layer in layers] == [(2, 2), (2, 2)]
    assert [np.shape(layer["b"]) for layer in layers] == [(2,), (2,)]
    path = bp.download_weights(run.id, tmp_path / "model.npz")
    with np.load(path, allow_pickle=False) as arrays:
        assert sorted(arrays.files) == ["W0", "W1", "b0", "b1", "meta"]
        np.testing.assert_array_equal(arrays["W1"], layers[1]["W"])
        meta = json.loads(str(arrays["meta"]))
    model = bp.get_weights(run.id)
    assert isinstance(model, ModelWeights)
    assert (model.format, model.version, model.dtype) == (meta["format"], meta["version"],
                                                          meta["dtype"])  # fmt: skip
    assert model.spec == meta["spec"] and model.classes is None and model.preprocessing is None
    assert [layer.model_dump() for layer in model.layers] == layers

    pred = bp.predict(run.id, np.array([[0.05, 0.10], [0.5, 0.5]]))
    assert np.shape(pred.outputs) == (2, 2) and pred.labels is None
    # Trained towards (0.01, 0.99): the first output is now the smaller one.
    assert pred.outputs[0][0] < pred.outputs[0][1]

    bp.delete_run(run.id)
    with pytest.raises(BackpropError) as caught:
        bp.get_run(run.id)
    assert caught.value.status_code == 404


def test_classification_predictions_have_labels(bp: BackpropClient) -> None:
    ds = bp.upload_dataset(EXAMPLES / "iris" / "iris.csv", target="species")
    network = json.loads((EXAMPLES / "iris" / "network.json").read_text())
    training = json.loads((EXAMPLES / "iris" / "training.json").read_text())
    run = bp.submit_run(ds.id, network, training)
    done = bp.wait(run.id, timeout=60, poll=0.1)
    assert done.status == "succeeded", done.error
    assert (done.metrics["val_accuracy"] or 0) >= 0.85
    pred = bp.predict(run.id, [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]])
    assert pred.labels == ["setosa", "virginica"]


def test_scikit_learn_style_integer_labels_train_a_classifier_that_evaluates(
    bp: BackpropClient,
) -> None:
    X, y = load_iris(return_X_y=True)  # y: integer classes 0, 1, 2
    order = np.random.default_rng(0).permutation(len(y))
    train, test = order[:100], order[100:]
    ds = bp.upload_dataset((X[train], y[train]), name="iris ints")
    assert ds.task == "regression" and ds.n_targets == 1  # numbers, until the loss decides
    network = json.loads((EXAMPLES / "iris" / "network.json").read_text())
    training = json.loads((EXAMPLES / "iris" / "training.json").read_text())
    run = bp.submit_run(ds.id, network, training)
    done = bp.wait(run.id, timeout=60, poll=0.1)
    assert done.status == "succeeded", done.error
    assert (done.metrics["val_accuracy"] or 0) >= 0.85

    pred = bp.predict(run.id, X[test])
    assert pred.labels is not None and set(pred.labels) <= {0, 1, 2}
    held_out = bp.upload_dataset((X[test], y[test]), name="iris ints test")
    result = bp.evaluate(run.id, held_out.id)
    assert isinstance(result, Evaluation)
    assert (result.task, result.n_samples, result.classes) == ("classification", 50, [0, 1, 2])
    assert result.accuracy == pytest.approx(skm.accuracy_score(y[test], pred.labels), rel=1e-12)
    macro = skm.f1_score(y[test], pred.labels, average="macro", zero_division=0)
    assert result.macro_f1 == pytest.approx(macro, rel=1e-12)
    assert result.confusion_matrix == skm.confusion_matrix(y[test], pred.labels).tolist()
    assert result.per_class is not None and [c.label for c in result.per_class] == [0, 1, 2]
    assert result.mse is None and result.per_target is None

    with pytest.raises(BackpropError) as caught:
        bp.evaluate(run.id, "no-such-dataset")
    assert caught.value.status_code == 404 and "no-such-dataset" in caught.value.detail


def test_list_runs_follows_every_page(stack: Stack) -> None:
    with BackpropClient(stack.base_url, page_size=2) as bp:
        ds = bp.upload_dataset((SEED_X, SEED_Y))
        ids = [bp.submit_run(ds.id, SEED_NETWORK, SEED_TRAINING, name=f"p{i}").id for i in range(5)]
        for run_id in ids:
            bp.wait(run_id, timeout=60, poll=0.1)
        everything = bp.list_runs()
        got = [r.id for r in everything]
        assert len(got) == len(set(got)) >= 5
        assert [i for i in got if i in ids] == list(reversed(ids))
        assert len(bp.list_runs(limit=3)) == 3
        succeeded = bp.list_runs(status="succeeded")
        assert {r.status for r in succeeded} == {"succeeded"} and set(ids) <= {
            r.id for r in succeeded
        }
        with pytest.raises(BackpropError) as caught:
            bp.list_runs(status="bogus")
        assert caught.value.status_code == 422


def test_wait_timeout_cancel_and_conflicts(bp: BackpropClient) -> None:
    run = _seed_run(bp, epochs=500_000)
    with pytest.raises(TimeoutError):
        bp.wait(run.id, timeout=0.3, poll=0.1)
    with pytest.raises(BackpropError) as caught:
        bp.delete_run(run.id)
    assert caught.value.status_code == 409
    with pytest.raises(BackpropError) as caught:
        bp.delete_dataset(run.dataset_id)
    assert caught.value.status_code == 409 and "queued or running" in caught.value.detail
    deadline = time.monotonic() + 30
    while bp.get_run(run.id).progress.epoch == 0 and time.monotonic() < deadline:
        time.sleep(0.05)  # it trains an epoch first, so that it has weights to keep
    bp.cancel_run(run.id)
    final = bp.wait(run.id, timeout=20, poll=0.1)
    assert final.status == "cancelled"
    with pytest.raises(BackpropError) as caught:
        bp.cancel_run(run.id)
    assert caught.value.status_code == 409 and "already ended" in caught.value.detail
    # A run cancelled after some epochs keeps the weights it stopped with, marked partial.
    assert final.progress.epoch > 0
    model = bp.get_weights(run.id)
    assert (model.partial, model.epoch) == (True, final.progress.epoch)


def test_submit_errors_carry_the_detail(bp: BackpropClient) -> None:
    ds = bp.upload_dataset((SEED_X, SEED_Y))
    wide = {**SEED_NETWORK, "input_dim": 3}
    wide.pop("initial_weights")
    with pytest.raises(BackpropError) as caught:
        bp.submit_run(ds.id, wide, SEED_TRAINING)
    assert caught.value.status_code == 422 and "input_dim" in caught.value.detail
    # A 422 from request validation: one "field.path: message" per invalid value.
    with pytest.raises(BackpropError) as caught:
        bp.submit_run(ds.id, SEED_NETWORK, {**SEED_TRAINING, "loss": "mse2", "batch_size": 0})
    assert caught.value.status_code == 422 and caught.value.problems == [
        "training.loss: Input should be 'mse', 'mae', 'binary_crossentropy' or "
        "'categorical_crossentropy'; did you mean 'mse'?",
        "training.batch_size: Input should be greater than or equal to 1",
    ]
    assert str(caught.value) == "HTTP 422: " + "; ".join(caught.value.problems)
    with pytest.raises(BackpropError) as caught:
        bp.submit_run("no-such-dataset", SEED_NETWORK, SEED_TRAINING)
    assert caught.value.status_code == 422 and "no-such-dataset" in caught.value.detail
    with pytest.raises(BackpropError) as caught:
        list(bp.events("no-such-run"))
    assert caught.value.status_code == 404


# -- events -----------------------------------------------------------------------------------


def test_events_give_every_epoch_in_order_then_the_terminal_status(bp: BackpropClient) -> None:
    run = _seed_run(bp, epochs=60)
    with bp.events(run.id) as stream:
        events = list(stream)
    _check_stream(events, 60)
    assert stream.reconnects == 0
    stored = bp.metrics(run.id)
    assert [e.metric for e in events if e.metric] == stored
    # After the end, a new stream replays the whole history at once.
    _check_stream(list(bp.events(run.id)), 60)


def test_events_resume_after_the_connection_is_closed_mid_stream(bp: BackpropClient) -> None:
    run = _seed_run(bp, epochs=300)
    stream = bp.events(run.id, retry_delay=0.05)
    events: list[Event] = []
    for event in stream:
        events.append(event)
        if len(events) in (15, 40, 41) and stream.response is not None:
            stream.response.close()  # the next read fails: the stream must reconnect
    _check_stream(events, 300)
    assert stream.reconnects >= 2


class _CuttingProxy:
    """A loopback TCP proxy that drops every connection after ``cut_after`` response bytes."""

    def __init__(self, upstream_port: int, cut_after: int) -> None:
        self.upstream_port = upstream_port
        self.cut_after = cut_after
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pump, args=(downstream, upstream, None)).start()
            threading.Thread(target=self._pump, args=(upstream, downstream, self.cut_after)).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, limit: int | None) -> None:
        sent = 0
        try:
            while limit is None or sent < limit:
                chunk = src.recv(4096 if limit is None else min(4096, limit - sent))
                if not chunk:
                    break
                dst.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def close(self) -> None:
        self.listener.close()


def test_events_resume_through_a_proxy_that_keeps_dropping_the_connection(
    stack: Stack, bp: BackpropClient
) -> None:
    run = _seed_run(bp, epochs=150)
    proxy = _CuttingProxy(stack.port, cut_after=1500)
    try:
        with BackpropClient(f"http://127.0.0.1:{proxy.port}", timeout=10) as flaky:
            stream = flaky.events(run.id, retry_delay=0.02)
            events = list(stream)
    finally:
        proxy.close()
    _check_stream(events, 150)
    assert stream.reconnects >= 5 and proxy.connections == stream.reconnects + 1
    assert [e.metric for e in events if e.metric] == bp.metrics(run.id)


def test_events_of_a_cancelled_run_end_with_cancelled(bp: BackpropClient) -> None:
    run = _seed_run(bp, epochs=500_000)
    stream = bp.events(run.id)
    first = [next(stream) for _ in range(3)]
    assert any(e.metric is not None for e in first)
    bp.cancel_run(run.id)
    rest = list(stream)
    events = first + rest
    assert events[-1].status == "cancelled"
    epochs = [e.metric.epoch for e in events if e.metric]
    assert epochs == list(range(1, len(epochs) + 1))
    assert len(bp.metrics(run.id)) == len(epochs)


class _CutStream(BaseHTTPRequestHandler):
    """An event stream that the first connection gets cut inside its second event; a
    reconnection with ``Last-Event-ID: 1-r`` gets that event whole and the final status.
    The other answers: 404 as JSON for ``/api/v1/runs/gone/events``, plain text else."""

    seen: list[str | None] = []

    def do_GET(self) -> None:  # noqa: N802 - the http.server naming
        self.seen.append(self.headers.get("Last-Event-ID"))
        if self.path.endswith("/gone/events"):
            self._answer(404, "application/json", b'{"detail": "run gone not found"}')
        elif self.path.endswith("/plain/events"):
            self._answer(200, "text/plain", b"not an event stream")
        elif self.headers.get("Last-Event-ID") == "1-r":
            self._answer(200, "text/event-stream", b'id: 2-r\nevent: metric\ndata: {"epoch": 2}'
                         b'\n\nretry: 10\n\nid: 2-s\nevent: status\ndata: {"status": '
                         b'"succeeded"}\n\n')  # fmt: skip
        else:  # a keep-alive comment, an event whose data spans two lines, then a cut
            self._answer(200, "text/event-stream", b': ping\n\nid: 1-r\nevent: metric\n'
                         b'data: {"epoch":\ndata:  1}\n\n'
                         b'id: 2-r\nevent: metric\ndata: {"ep')  # fmt: skip

    def _answer(self, status: int, media: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", media)
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)  # then the connection closes: the stream ends there

    def log_message(self, *args: object) -> None:
        pass


def test_events_drop_a_cut_off_event_join_data_lines_and_resume_after_it() -> None:
    """The event-stream parsing (httpx-sse) over a real connection: a comment is skipped,
    ``data`` lines are joined with a newline, an event cut before its blank line is never
    yielded, and the reconnection asks for what follows the last event yielded."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _CutStream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with BackpropClient(f"http://127.0.0.1:{server.server_port}", timeout=5) as bp:
            stream = bp.events("r1", retry_delay=0.01)
            events = [(e.event, e.id, e.data) for e in stream]
            assert events == [
                ("metric", "1-r", {"epoch": 1}),
                ("metric", "2-r", {"epoch": 2}),
                ("status", "2-s", {"status": "succeeded"}),
            ]
            assert stream.reconnects == 1 and _CutStream.seen[-2:] == [None, "1-r"]
            with pytest.raises(BackpropError) as caught:
                list(bp.events("gone"))
            assert (caught.value.status_code, caught.value.detail) == (404, "run gone not found")
            with pytest.raises(BackpropError) as caught:
                list(bp.events("plain"))
            assert caught.value.status_code == 200 and "text/event-stream" in caught.value.detail
    finally:
        server.shutdown()
        server.server_close()


# -- sweeps -----------------------------------------------------------------------------------


def test_a_sweep_over_an_optimizer_given_by_name_alone(bp: BackpropClient) -> None:
    """``"optimizer": "adam"`` in a sweep's base, its learning rate searched: each trial
    trains Adam with its own rate. A misspelt swept name fails its trial, with the hint."""
    ds = bp.upload_dataset((SEED_X, SEED_Y), name="seed")
    base = {"dataset_id": ds.id, "network": SEED_NETWORK,
            "training": {**SEED_TRAINING, "optimizer": "adam", "epochs": 3}}  # fmt: skip
    space = {"type": "grid", "parameters": {"training.optimizer.learning_rate": [0.1, 0.01]}}
    sweep = bp.create_sweep({"base": base, "search": space, "metric": "loss"})
    done = bp.wait_sweep(sweep.id[:8], timeout=60, poll=0.2)  # a prefix works too
    assert done.id == sweep.id and done.status == "succeeded"
    trained = {}
    for entry in done.leaderboard:
        optimizer = bp.get_run(entry["run_id"]).training["optimizer"]
        trained[optimizer["learning_rate"]] = optimizer
    assert set(trained) == {0.1, 0.01}
    assert all(o["name"] == "adam" and o["beta2"] == 0.999 for o in trained.values())

    misspelt = {"type": "grid", "parameters": {"training.optimizer": ["adam", "rmsprp"]}}
    with pytest.raises(BackpropError) as caught:
        bp.create_sweep({"base": base, "search": misspelt, "metric": "loss"})
    assert caught.value.status_code == 422
    assert "trial 1" in caught.value.detail and "rmsprp" in caught.value.detail
    assert caught.value.detail.endswith("did you mean 'rmsprop'?")


# -- organising runs: filters, sorts, names, tags and notes (issue #13) -----------------------


def test_list_filters_sorts_and_updates_of_runs_sweeps_and_datasets(stack: Stack) -> None:
    marker = f"lists{os.getpid()}"
    rng = np.random.default_rng(11)
    X = rng.uniform(-1, 1, size=(24, 2))
    Y = 1 / (1 + np.exp(-X[:, ::-1]))
    with BackpropClient(stack.base_url, page_size=2) as bp:
        ds = bp.upload_dataset((X, Y), name=f"{marker} data", dedupe=False)
        start = datetime.now(UTC)
        runs = []
        for k, lr in enumerate((0.5, 0.05, 2.0)):
            training = {**SEED_TRAINING, "epochs": 3, "batch_size": 4, "validation_split": 0.25,
                        "optimizer": {"name": "sgd", "learning_rate": lr}}  # fmt: skip
            runs.append(bp.submit_run(ds.id, SEED_NETWORK, training, name=f"{marker} r{k}"))
        done = [bp.wait(r.id, timeout=60, poll=0.1) for r in runs]
        assert all(r.status == "succeeded" and r.tags == {} and r.notes is None for r in done)

        # update_run: only what is given changes; None removes; tags merge.
        first = bp.update_run(runs[0].id, tags={"grp": "a", "lr": "0.5"}, notes="fastest")
        assert (first.name, first.tags, first.notes) == (f"{marker} r0", {"grp": "a", "lr": "0.5"},
                                                         "fastest")  # fmt: skip
        first = bp.update_run(runs[0].id, name=None, tags={"lr": None})
        assert (first.name, first.tags, first.notes) == (None, {"grp": "a"}, "fastest")
        bp.update_run(runs[1].id, tags={"grp": "a"})
        bp.update_run(runs[2].id, tags={"grp": "b"}, name=f"{marker} R2 slow")
        assert bp.update_run(runs[1].id).tags == {"grp": "a"}  # nothing given: no change
        assert bp.get_run(runs[1].id).tags == {"grp": "a"}

        mine = {"dataset_id": ds.id}
        by_loss = sorted(done, key=lambda r: r.metrics["val_loss"])
        assert [r.id for r in bp.list_runs(**mine, sort="val_loss")] == [r.id for r in by_loss]
        assert [r.id for r in bp.list_runs(**mine, sort="val_loss", order="desc")] == [
            r.id for r in reversed(by_loss)
        ]
        assert [r.id for r in bp.list_runs(**mine)] == [r.id for r in reversed(runs)]
        assert {r.id for r in bp.list_runs(**mine, tags={"grp": "a"})} == {runs[0].id, runs[1].id}
        assert [r.id for r in bp.list_runs(**mine, tags=["grp:b"])] == [runs[2].id]
        assert [r.id for r in bp.list_runs(q=f"{marker} r2")] == [runs[2].id]
        assert len(bp.list_runs(**mine, status=["succeeded", "failed"], top_level=True)) == 3
        assert bp.list_runs(**mine, status="queued") == []
        assert len(bp.list_runs(**mine, created_after=start)) == 3
        assert bp.list_runs(**mine, created_before=start) == []
        assert bp.list_runs(**mine, created_after=datetime.now(UTC) + timedelta(hours=1)) == []
        with pytest.raises(BackpropError) as caught:
            bp.update_run(runs[0].id, tags={"bad key": "v"})
        assert caught.value.status_code == 422
        assert caught.value.problems[0].startswith("tags.bad key")

        # Datasets and sweeps alike.
        edited = bp.update_dataset(ds.id, name=f"{marker} renamed", tags={"src": marker})
        assert isinstance(edited, Dataset) and edited.tags == {"src": marker}
        assert [d.id for d in bp.list_datasets(tags={"src": marker})] == [ds.id]
        assert [d.id for d in bp.list_datasets(q=f"{marker} RENAMED")] == [ds.id]
        with pytest.raises(BackpropError) as caught:
            bp.update_dataset(ds.id, name=None)
        assert caught.value.status_code == 422
        sweep = bp.create_sweep({
            "name": f"{marker} sweep",
            "base": {"dataset_id": ds.id, "network": SEED_NETWORK,
                     "training": {**SEED_TRAINING, "epochs": 1, "validation_split": 0.25}},
            "search": {"type": "grid",
                       "parameters": {"training.optimizer.learning_rate": [0.1, 0.2]}},
        })  # fmt: skip
        edited_sweep = bp.update_sweep(sweep.id, tags={"src": marker}, notes="two rates")
        assert (edited_sweep.tags, edited_sweep.notes) == ({"src": marker}, "two rates")
        assert [s.id for s in bp.list_sweeps(tags={"src": marker}, q=marker)] == [sweep.id]
        assert [s.id for s in bp.list_sweeps(status=["running", "queued", "succeeded"],
                                             tags={"src": marker})] == [sweep.id]  # fmt: skip
        bp.wait_sweep(sweep.id, timeout=60)
        trials = bp.list_runs(sweep_id=sweep.id)
        assert len(trials) == 2 and all(t.sweep_id == sweep.id for t in trials)
        assert not {t.id for t in trials} & {r.id for r in bp.list_runs(**mine, top_level=True)}
