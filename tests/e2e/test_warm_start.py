"""Warm starts through the real service: ``training.warm_start`` continues from an earlier
run's model, exactly as the Python API's second ``fit`` continues from current weights, and
every request that cannot work is refused with a 422 that names the problem."""

from __future__ import annotations

import numpy as np

from core.engine import Network
from tests.e2e.stack import Stack, wait_for

RNG = np.random.default_rng(8)
X = RNG.normal(size=(48, 3)) * np.array([1.0, 50.0, 0.1]) + np.array([0.0, 200.0, -1.0])
Y = (X @ np.array([[0.5], [0.01], [3.0]])) + RNG.normal(0, 0.05, size=(48, 1))
NETWORK = {"input_dim": 3, "layers": [{"units": 8, "activation": "tanh"},
                                      {"units": 1, "activation": "identity"}]}  # fmt: skip
TRAINING = {"loss": "mse", "optimizer": {"name": "adam", "learning_rate": 0.01}, "epochs": 15,
            "batch_size": 8, "seed": 3, "standardize": True, "dtype": "float64"}  # fmt: skip


def _layers(stack: Stack, run_id: str) -> list[dict[str, np.ndarray]]:
    body = stack.client.get(f"/api/v1/runs/{run_id}/weights").json()
    return [{"W": np.array(layer["W"]), "b": np.array(layer["b"])} for layer in body["layers"]]


def test_a_warm_start_continues_from_the_parent_model(stack: Stack) -> None:
    ds = stack.upload_json(X.tolist(), Y.tolist(), name="warm")
    parent = stack.wait_done(stack.submit(ds["id"], NETWORK, TRAINING)["id"])
    assert parent["status"] == "succeeded"
    more = {**TRAINING, "epochs": 10, "warm_start": {"run_id": parent["id"]}}
    child = stack.wait_done(stack.submit(ds["id"], NETWORK, more)["id"])
    assert child["status"] == "succeeded" and child["parent_run_id"] == parent["id"]

    # The same two fits in-process: 15 epochs, then 10 more from those weights.
    reference = Network.from_spec(NETWORK, seed=3)
    reference.fit(X, Y, TRAINING)
    reference.fit(X, Y, {**TRAINING, "epochs": 10})
    for got, want in zip(_layers(stack, child["id"]), reference.weights, strict=True):
        np.testing.assert_array_equal(got["W"], want["W"])
        np.testing.assert_array_equal(got["b"], want["b"])
    # It kept the parent's standardisation, and starting warm it learns on from there.
    assert child["metrics"]["loss"] < parent["metrics"]["loss"]


def test_warm_starts_that_cannot_work_are_refused_naming_the_problem(stack: Stack) -> None:
    ds = stack.upload_json(X.tolist(), Y.tolist(), name="warm-refusals")
    parent = stack.wait_done(stack.submit(ds["id"], NETWORK, TRAINING)["id"])
    waiting = stack.submit(ds["id"], NETWORK, {**TRAINING, "epochs": 100_000})  # no model yet

    def refusal(network: dict, training: dict) -> str:
        resp = stack.client.post(
            "/api/v1/runs", json={"dataset_id": ds["id"], "network": network, "training": training}
        )
        assert resp.status_code == 422, resp.text
        return str(resp.json()["detail"])

    def warm(run_id: str, **changes: object) -> dict:
        return {**TRAINING, **changes, "warm_start": {"run_id": run_id}}

    assert refusal(NETWORK, warm("no-such-run")) == (
        "training.warm_start.run_id: no run with id no-such-run"
    )
    assert f"run {waiting['id']} is " in refusal(NETWORK, warm(waiting["id"]))
    assert "has no stored model" in refusal(NETWORK, warm(waiting["id"]))
    wider = {**NETWORK, "layers": [{"units": 16, "activation": "tanh"}, NETWORK["layers"][1]]}
    assert refusal(wider, warm(parent["id"])) == (
        f"training.warm_start.run_id: network.layers[0] has 16 units but layer 0 of run "
        f"{parent['id']} has 8"
    )
    deeper = {**NETWORK, "layers": [NETWORK["layers"][0], *NETWORK["layers"]]}
    assert "the network has 3 layers but run" in refusal(deeper, warm(parent["id"]))
    assert refusal(NETWORK, warm(parent["id"], standardize=False)).startswith(
        f"training.standardize: run {parent['id']} was trained with standardize=true"
    )
    # Once cancelled after some epochs, it has the weights it stopped with: a valid start.
    wait_for(lambda: stack.client.get(f"/api/v1/runs/{waiting['id']}").json()["progress"]["epoch"],
             60, "the long run to train an epoch")  # fmt: skip
    stack.client.post(f"/api/v1/runs/{waiting['id']}/cancel")
    cancelled = stack.wait_done(waiting["id"])
    assert cancelled["status"] == "cancelled"
    child = stack.submit(ds["id"], NETWORK, warm(waiting["id"], epochs=2))
    done = stack.wait_done(child["id"])
    assert done["status"] == "succeeded" and done["parent_run_id"] == waiting["id"]
