"""End to end: every class of bad input gets its 4xx, and the service keeps working."""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Iterator

import numpy as np
import pytest

from tests.e2e.stack import Stack
from tests.e2e.test_runs import SEED_NETWORK, SEED_TRAINING, SEED_X, SEED_Y


def _csv(stack: Stack, text: str, target: str = "y", filename: str = "d.csv"):  # type: ignore[no-untyped-def]
    return stack.client.post(
        "/api/v1/datasets",
        files={"file": (filename, text.encode(), "text/csv")},
        data={"target": target},
    )


@pytest.mark.parametrize(
    ("text", "target", "status", "says"),
    [
        ("a,b,y\n1,2,3\n4,,6\n", "y", 422, "b"),  # missing value: names the column
        ("a,b,y\n1,2,3\n4,nan,6\n", "y", 422, "b"),
        ("a,b,y\n1,2,3\n4,inf,6\n", "y", 422, "b"),
        ("a,b,y\n1,2,3\n4,5\n", "y", 400, "3"),  # ragged: names the line
        ("a,b,y\n1,2,3\n", "label", 422, "label"),  # unknown target column
        ("a,b,y\n", "y", 422, "row"),  # zero rows
        ("a,b,y\n1,x,3\n", "y", 422, "b"),  # non-numeric feature
    ],
)
def test_bad_csv_is_rejected_with_what_and_where(
    stack: Stack, text: str, target: str, status: int, says: str
) -> None:
    resp = _csv(stack, text, target)
    assert resp.status_code == status, resp.text
    detail = resp.json()["detail"]
    assert isinstance(detail, str) and says in detail, detail


def test_upload_limits_and_formats(stack: Stack) -> None:
    cells = int(stack.env["BACKPROP_MAX_DATASET_CELLS"])
    many_rows = "a,y\n" + "1,2\n" * (cells // 2 + 1)
    resp = _csv(stack, many_rows, "y")
    assert resp.status_code == 413 and str(cells) in resp.json()["detail"], resp.text

    limit = int(stack.env["BACKPROP_MAX_UPLOAD_BYTES"])
    big = "a,y\n" + "1.000000,2.000000\n" * (limit // 18 + 10)
    resp = _csv(stack, big, "y")
    assert resp.status_code == 413 and str(limit) in resp.json()["detail"]

    resp = stack.client.post(
        "/api/v1/datasets",
        files={"file": ("d.pdf", b"%PDF-1.4 junk", "application/pdf")},
    )
    assert resp.status_code == 415, resp.text
    resp = stack.client.post("/api/v1/datasets", content=b"a,b\n1,2\n",
                             headers={"content-type": "text/csv"})  # fmt: skip
    assert resp.status_code == 415

    buf = io.BytesIO()
    np.savez(buf, X=np.array([[1, 2]], dtype=object), y=np.array([1.0]))
    resp = stack.client.post("/api/v1/datasets", files={"file": ("p.npz", buf.getvalue())})
    assert resp.status_code in (400, 422), resp.text
    resp = stack.client.post("/api/v1/datasets", files={"file": ("p.npz", b"not a zip")})
    assert resp.status_code == 400, resp.text

    resp = stack.client.post("/api/v1/datasets", content=b"{not json",
                             headers={"content-type": "application/json"})  # fmt: skip
    assert resp.status_code == 400
    resp = stack.client.post("/api/v1/datasets", json={"X": [[1, 2], [3]], "y": [1, 2]})
    assert resp.status_code in (400, 422)
    resp = stack.client.post("/api/v1/datasets", json={"X": [[1, 2]], "y": [1, 2]})
    assert resp.status_code == 422
    resp = stack.client.post("/api/v1/datasets", json={"X": [], "y": []})
    assert resp.status_code == 422
    resp = stack.client.post("/api/v1/datasets", json={"X": [[1]]})
    assert resp.status_code == 422 and "y" in str(resp.json()["detail"])


def _run_body(dataset_id: str, **changes) -> dict:  # type: ignore[no-untyped-def]
    network = {**SEED_NETWORK, **changes.pop("network", {})}
    training = {**SEED_TRAINING, **changes.pop("training", {})}
    return {"dataset_id": dataset_id, "network": network, "training": training, **changes}


def test_bad_run_requests(stack: Stack) -> None:
    ds = stack.upload_json(SEED_X, SEED_Y)
    one_softmax = [{"units": 2, "activation": "sigmoid"}, {"units": 1, "activation": "softmax"}]
    cases = [
        (_run_body("nope"), 422, "dataset_id"),
        (_run_body(ds["id"], network={"input_dim": 3, "initial_weights": None}), 422, "input_dim"),
        (
            _run_body(
                ds["id"],
                network={
                    "layers": [{"units": 3, "activation": "sigmoid"}],
                    "initial_weights": None,
                },
            ),
            422,
            "units",
        ),  # fmt: skip
        (
            _run_body(ds["id"], network={"layers": [{"units": 2, "activation": "swish"}] * 2}),
            422,
            "activation",
        ),  # fmt: skip
        (
            _run_body(ds["id"], network={"initial_weights": [{"W": [[1.0]], "b": [0.0]}] * 2}),
            422,
            "initial_weights",
        ),  # fmt: skip
        (
            _run_body(ds["id"], network={"layers": one_softmax, "initial_weights": None}),
            422,
            "softmax",
        ),  # fmt: skip
        (_run_body(ds["id"], training={"loss": "categorical_crossentropy"}), 422, "softmax"),
        (_run_body(ds["id"], training={"optimizer": {"name": "lbfgs"}}), 422, "optimizer"),
        (
            _run_body(ds["id"], training={"optimizer": {"name": "sgd", "learning_rate": -1}}),
            422,
            "learning_rate",
        ),  # fmt: skip
        (_run_body(ds["id"], training={"epochs": 0}), 422, "epochs"),
        (_run_body(ds["id"], training={"batch_size": 0}), 422, "batch_size"),
        (_run_body(ds["id"], training={"validation_split": 1.5}), 422, "validation_split"),
        (_run_body(ds["id"], training={"epochs": 10**9}), 422, "BACKPROP_MAX_EPOCHS"),
        (_run_body(ds["id"], training={"dtype": "float16"}), 422, "dtype"),
        (_run_body(ds["id"], training={"batch_size": 10**6}), 422, "BACKPROP_MAX_BATCH_SIZE"),
        (
            _run_body(
                ds["id"],
                network={
                    "initial_weights": None,
                    "layers": [
                        {"units": 3000, "activation": "relu"},
                        {"units": 3000, "activation": "relu"},
                        {"units": 2, "activation": "sigmoid"},
                    ],
                },
            ),
            422,
            "BACKPROP_MAX_PARAMETERS",
        ),  # fmt: skip
        (_run_body(ds["id"], colour="blue"), 422, "colour"),
        (_run_body(ds["id"], callback_url="http://127.0.0.1:9/hook"), 422, "loopback"),
        (_run_body(ds["id"], callback_url="http://169.254.169.254/"), 422, "link-local"),
        (_run_body(ds["id"], callback_url="file:///etc/passwd"), 422, "scheme"),
    ]
    for body, status, says in cases:
        resp = stack.client.post("/api/v1/runs", json=body)
        assert resp.status_code == status, (body, resp.text)
        assert says in str(resp.json()["detail"]), (says, resp.text)
    resp = stack.client.post("/api/v1/runs", content=b'{"dataset_id": ',
                             headers={"content-type": "application/json"})  # fmt: skip
    assert resp.status_code == 400


def test_unknown_ids_and_state_conflicts(stack: Stack) -> None:
    missing = "00000000-0000-4000-8000-000000000000"
    for method, path in [
        ("GET", f"/api/v1/runs/{missing}"),
        ("GET", f"/api/v1/runs/{missing}/metrics"),
        ("GET", f"/api/v1/runs/{missing}/events"),
        ("GET", f"/api/v1/runs/{missing}/weights"),
        ("POST", f"/api/v1/runs/{missing}/cancel"),
        ("DELETE", f"/api/v1/runs/{missing}"),
        ("GET", f"/api/v1/datasets/{missing}"),
        ("DELETE", f"/api/v1/datasets/{missing}"),
    ]:
        resp = stack.client.request(method, path)
        assert resp.status_code == 404, (method, path, resp.text)
        assert missing in resp.json()["detail"]
    resp = stack.client.post(f"/api/v1/runs/{missing}/predict", json={"inputs": [[1, 2]]})
    assert resp.status_code == 404
    # An id no resource can have (a NUL, or over 64 characters) is refused before any query.
    for bad_id in ("fuzz%00id", "x" * 65):
        for path in (f"/api/v1/runs/{bad_id}", f"/api/v1/datasets/{bad_id}",
                     f"/api/v1/sweeps/{bad_id}", f"/api/v1/runs/{bad_id}/plot.png"):  # fmt: skip
            resp = stack.client.get(path)
            assert resp.status_code == 422, (path, resp.text)
            assert resp.json()["detail"][0]["loc"][0] == "path", resp.text
    assert stack.client.get("/api/v1/runs", params={"cursor": "garbage!"}).status_code == 400
    far_past = base64.urlsafe_b64encode(b"0001-01-01T00:00:00+14:00|x").decode()
    assert stack.client.get("/api/v1/runs", params={"cursor": far_past}).status_code == 400
    assert stack.client.get("/api/v1/runs", params={"limit": 0}).status_code == 422


def test_bad_predictions_and_a_diverging_run_leave_the_service_working(stack: Stack) -> None:
    ds = stack.upload_json(SEED_X, SEED_Y)
    run = stack.submit(ds["id"], SEED_NETWORK, {**SEED_TRAINING, "epochs": 3})
    assert stack.wait_done(run["id"])["status"] == "succeeded"
    url = f"/api/v1/runs/{run['id']}/predict"
    assert stack.client.post(url, json={"inputs": [[1, 2, 3]]}).status_code == 422
    assert stack.client.post(url, json={"inputs": [["a", "b"]]}).status_code == 422
    assert stack.client.post(url, json={"inputs": []}).status_code == 422
    assert stack.client.post(url, json={"rows": [[1, 2]]}).status_code == 422

    rng = np.random.default_rng(0)
    X = rng.normal(size=(32, 2)) * 100
    diverge = stack.upload_json(X.tolist(), (X @ [[3.0], [2.0]]).tolist())
    network = {"input_dim": 2, "layers": [{"units": 8, "activation": "relu"},
                                          {"units": 1, "activation": "identity"}]}  # fmt: skip
    training = {"loss": "mse", "optimizer": {"name": "sgd", "learning_rate": 10.0},
                "epochs": 50, "batch_size": 4}  # fmt: skip
    bad = stack.submit(diverge["id"], network, training)
    failed = stack.wait_done(bad["id"])
    assert failed["status"] == "failed"
    assert "diverged" in failed["error"] and "epoch" in failed["error"]
    # The worker's log says the run failed, and nothing calls it a success.
    time.sleep(0.3)
    lines = [ln for w in stack.workers for ln in w.log.read_text().splitlines() if bad["id"] in ln]
    assert any("failed" in ln for ln in lines), lines
    assert not any("succeeded" in ln for ln in lines), lines

    again = stack.submit(ds["id"], SEED_NETWORK, SEED_TRAINING)
    assert stack.wait_done(again["id"])["status"] == "succeeded"
    assert stack.client.get("/readyz").status_code == 200


# -- nesting depth and size: bounded before any parser runs --------------------------------

DEEP = 100_000
MISSING = "00000000-0000-4000-8000-000000000000"
JSON_BODY_ROUTES = [
    ("POST", "/api/v1/datasets"),
    ("POST", "/api/v1/runs"),
    ("POST", "/api/v1/sweeps"),
    ("POST", f"/api/v1/runs/{MISSING}/predict"),
]


def _deep(levels: int, key: str = "X") -> bytes:
    return b'{"' + key.encode() + b'": ' + b"[" * levels + b"]" * levels + b', "y": [1]}'


def _deep_in_chunks(levels: int) -> Iterator[bytes]:
    """The same body without a Content-Length: sent chunked, scanned as it streams in."""
    yield b'{"X": '
    for _ in range(levels // 10_000):
        yield b"[" * 10_000
    for _ in range(levels // 10_000):
        yield b"]" * 10_000
    yield b', "y": [1]}'


@pytest.mark.parametrize(("method", "path"), JSON_BODY_ROUTES)
def test_a_hundred_thousand_levels_of_nesting_are_400_on_every_route(
    stack: Stack, method: str, path: str
) -> None:
    for content, headers in [
        (_deep(DEEP), {"content-type": "application/json"}),
        (_deep(DEEP).decode().encode("utf-16"), {"content-type": "application/json"}),
        (_deep_in_chunks(DEEP), {"content-type": "application/json"}),
        (_deep(DEEP), {}),  # no content type: FastAPI would still parse it as JSON
    ]:
        resp = stack.client.request(method, path, content=content, headers=headers)
        detail = resp.json()["detail"]
        if not headers and path == "/api/v1/datasets":  # it reads JSON only when told so
            assert resp.status_code == 415 and "unsupported content type" in detail, detail
            continue
        assert resp.status_code == 400, (path, headers, resp.text[:300])
        assert "limit of 64 levels" in detail and "BACKPROP_MAX_JSON_DEPTH" in detail, detail
    assert stack.client.get("/readyz").status_code == 200


def test_routes_without_a_body_ignore_a_deep_one(stack: Stack) -> None:
    for path in (f"/api/v1/runs/{MISSING}/cancel", f"/api/v1/sweeps/{MISSING}/cancel"):
        resp = stack.client.post(path, content=_deep(DEEP),
                                 headers={"content-type": "application/json"})  # fmt: skip
        assert resp.status_code == 404 and MISSING in resp.json()["detail"], resp.text


def test_nesting_up_to_the_limit_reaches_validation_and_size_is_413_first(stack: Stack) -> None:
    ds = stack.upload_json(SEED_X, SEED_Y)
    at_limit = {**_run_body(ds["id"]), "colour": json.loads("[" * 63 + "]" * 63)}  # 64 deep
    resp = stack.client.post("/api/v1/runs", json=at_limit)
    assert resp.status_code == 422 and "colour" in resp.text, resp.text
    over = {**at_limit, "colour": [at_limit["colour"]]}
    resp = stack.client.post("/api/v1/runs", json=over)
    assert resp.status_code == 400 and "64" in resp.json()["detail"], resp.text
    resp = stack.client.post("/api/v1/datasets", json={"X": json.loads("[" * 63 + "]" * 63)})
    assert resp.status_code == 422, resp.text  # parsed, then refused as a dataset

    upload_limit = int(stack.env["BACKPROP_MAX_UPLOAD_BYTES"])
    levels = upload_limit // 2 + 100_000
    resp = stack.client.post("/api/v1/datasets", content=_deep(levels),
                             headers={"content-type": "application/json"})  # fmt: skip
    assert resp.status_code == 413 and str(upload_limit) in resp.json()["detail"], resp.text
    request_limit = 10 * 1024 * 1024  # BACKPROP_MAX_REQUEST_BYTES's default
    resp = stack.client.post("/api/v1/runs", content=_deep(request_limit // 2 + 10),
                             headers={"content-type": "application/json"})  # fmt: skip
    assert resp.status_code == 413 and "BACKPROP_MAX_REQUEST_BYTES" in resp.text, resp.text


# -- strict types: nothing is coerced ---------------------------------------------------------


def test_numbers_in_run_specs_are_not_coerced(stack: Stack) -> None:
    ds = stack.upload_json(SEED_X, SEED_Y)
    sgd = {"name": "sgd", "learning_rate": 0.5}
    cases = [
        ({"training": {"epochs": "10"}}, ["training", "epochs"]),
        ({"training": {"epochs": True}}, ["training", "epochs"]),
        ({"training": {"epochs": 10.5}}, ["training", "epochs"]),
        ({"training": {"batch_size": "1"}}, ["training", "batch_size"]),
        ({"training": {"optimizer": {**sgd, "learning_rate": "0.1"}}},
         ["training", "optimizer", "sgd", "learning_rate"]),
        ({"training": {"optimizer": {**sgd, "learning_rate": True}}},
         ["training", "optimizer", "sgd", "learning_rate"]),
        ({"training": {"validation_split": "0.5"}}, ["training", "validation_split"]),
        ({"training": {"shuffle": "false"}}, ["training", "shuffle"]),
        ({"network": {"input_dim": "2"}}, ["network", "input_dim"]),
        ({"network": {"layers": [{"units": "2", "activation": "sigmoid"}] * 2}},
         ["network", "layers", 0, "units"]),
        ({"network": {"initial_weights": [{"W": [[0.15, "0.25"], [0.2, 0.3]]},
                                          {"W": [[0.4, 0.5], [0.45, 0.55]]}]}},
         ["network", "initial_weights", 0, "W", 0, 1]),
        ({"priority": "5"}, ["priority"]),
    ]  # fmt: skip
    for changes, loc in cases:
        resp = stack.client.post("/api/v1/runs", json=_run_body(ds["id"], **changes))
        assert resp.status_code == 422, (changes, resp.text)
        assert loc in [err["loc"][1:] for err in resp.json()["detail"]], (loc, resp.text)
    # An integer is a number: learning_rate 1 trains.
    run = stack.submit(ds["id"], SEED_NETWORK, {**SEED_TRAINING, "optimizer": {**sgd,
                                                "learning_rate": 1}})  # fmt: skip
    assert run["training"]["optimizer"]["learning_rate"] == 1.0
    assert stack.wait_done(run["id"])["status"] == "succeeded"


def test_booleans_in_a_json_dataset_are_refused_in_X_as_in_y(stack: Stack) -> None:
    for body, where in [
        ({"X": [[True, 1]], "y": [1]}, "X[0][0]"),
        ({"X": [[0.5, 1.5], [2.5, False]], "y": [1, 2]}, "X[1][1]"),
        ({"X": [[1, 2]], "y": [True]}, "y[0]"),
    ]:
        resp = stack.client.post("/api/v1/datasets", json=body)
        assert resp.status_code == 422, (body, resp.text)
        assert where in resp.json()["detail"] and "not a number" in resp.json()["detail"]


def test_a_sweep_over_the_default_optimizers_learning_rate(stack: Stack) -> None:
    """The base names no optimizer: it trains with the default (sgd), whose rate is swept."""
    ds = stack.upload_json(SEED_X, SEED_Y)
    training = {k: v for k, v in SEED_TRAINING.items() if k != "optimizer"}
    sweep = {
        "base": {"dataset_id": ds["id"], "network": SEED_NETWORK, "training": training},
        "search": {"type": "grid",
                   "parameters": {"training.optimizer.learning_rate": [0.5, 0.05]}},
        "metric": "loss",
    }  # fmt: skip
    resp = stack.client.post("/api/v1/sweeps", json=sweep)
    assert resp.status_code == 202, resp.text
    record = resp.json()
    rates = {}
    for entry in record["leaderboard"]:
        run = stack.client.get(f"/api/v1/runs/{entry['run_id']}").json()
        assert run["training"]["optimizer"]["name"] == "sgd"
        rates[entry["params"]["training.optimizer.learning_rate"]] = run["training"]["optimizer"]
    assert {rate: opt["learning_rate"] for rate, opt in rates.items()} == {0.5: 0.5, 0.05: 0.05}
    for entry in record["leaderboard"]:
        assert stack.wait_done(entry["run_id"])["status"] == "succeeded"

    for changes, says in [
        ({"max_concurrent": "2"}, "max_concurrent"),
        ({"search": {**sweep["search"], "type": "random", "n_trials": "2"}}, "n_trials"),
        ({"search": {"type": "grid", "parameters": {"training.epochs": [1, "2"]}}},
         "trial 1 (training.epochs='2'): invalid run request: training.epochs"),
    ]:  # fmt: skip
        resp = stack.client.post("/api/v1/sweeps", json={**sweep, **changes})
        assert resp.status_code == 422 and says in resp.text, (changes, resp.text)


def test_prediction_inputs_are_numbers_only(stack: Stack) -> None:
    ds = stack.upload_json(SEED_X, SEED_Y)
    run = stack.submit(ds["id"], SEED_NETWORK, SEED_TRAINING)
    assert stack.wait_done(run["id"])["status"] == "succeeded"
    url = f"/api/v1/runs/{run['id']}/predict"
    for inputs, column in (([[True, 1.0]], 0), ([["0.05", 0.1]], 0), ([[0.05, None]], 1)):
        resp = stack.client.post(url, json={"inputs": inputs})
        assert resp.status_code == 422, (inputs, resp.text)
        locs = [e["loc"] for e in resp.json()["detail"]]
        assert locs == [["body", "inputs", 0, column]], resp.text
    assert stack.client.post(url, json={"inputs": [[1, 0]]}).status_code == 200
