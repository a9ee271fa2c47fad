"""The seed article's 2-2-2 network, one SGD step, derived by hand with the chain rule.

Naming follows the article: inputs i1, i2; hidden h1, h2; outputs o1, o2; weights w1..w8;
biases b1 (hidden) and b2 (output). In API.md §2 orientation ``W[:, j]`` holds the weights
into unit j, so ``W1 = [[w1, w3], [w2, w4]]`` and ``W2 = [[w5, w7], [w6, w8]]``:

    net_h1 = w1*i1 + w2*i2 + b1      net_o1 = w5*out_h1 + w6*out_h2 + b2
    net_h2 = w3*i1 + w4*i2 + b1      net_o2 = w7*out_h1 + w8*out_h2 + b2

The API's ``mse`` is the MEAN over the n = 2 outputs (PyTorch ``MSELoss``), not the article's
``1/2 * sum``:  L = ((t1 - out_o1)^2 + (t2 - out_o2)^2) / n, so dL/dout_ok = 2/n (out_ok - tk).
With n = 2 the factor 2/n is 1, which is why the numbers coincide with the article's.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.engine import Network

SPEC = {
    "input_dim": 2,
    "layers": [{"units": 2, "activation": "sigmoid"}, {"units": 2, "activation": "sigmoid"}],
    "initial_weights": [
        {"W": [[0.15, 0.25], [0.20, 0.30]], "b": [0.35, 0.35]},
        {"W": [[0.40, 0.50], [0.45, 0.55]], "b": [0.60, 0.60]},
    ],
}
TRAINING = {
    "loss": "mse",
    "optimizer": {"name": "sgd", "learning_rate": 0.5, "momentum": 0.0},
    "epochs": 1,
    "batch_size": 1,
    "shuffle": False,
    "seed": 0,
    "validation_split": 0.0,
    "standardize": False,
    "dtype": "float64",
}


def sigma(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def hand_derivation() -> dict[str, float]:
    i1, i2 = 0.05, 0.10
    t1, t2 = 0.01, 0.99
    w1, w2, w3, w4 = 0.15, 0.20, 0.25, 0.30
    w5, w6, w7, w8 = 0.40, 0.45, 0.50, 0.55
    b1, b2 = 0.35, 0.60
    lr, n = 0.5, 2

    # Forward pass.
    out_h1 = sigma(w1 * i1 + w2 * i2 + b1)
    out_h2 = sigma(w3 * i1 + w4 * i2 + b1)
    out_o1 = sigma(w5 * out_h1 + w6 * out_h2 + b2)
    out_o2 = sigma(w7 * out_h1 + w8 * out_h2 + b2)
    loss = ((t1 - out_o1) ** 2 + (t2 - out_o2) ** 2) / n

    # Output layer: delta_ok = dL/dnet_ok = dL/dout_ok * dout_ok/dnet_ok
    #             = 2/n (out_ok - tk) * out_ok (1 - out_ok)        [sigma' = sigma (1 - sigma)]
    d_o1 = 2 / n * (out_o1 - t1) * out_o1 * (1 - out_o1)
    d_o2 = 2 / n * (out_o2 - t2) * out_o2 * (1 - out_o2)
    # dL/dw5 = delta_o1 * dnet_o1/dw5 = delta_o1 * out_h1, and so on.
    g5, g6 = d_o1 * out_h1, d_o1 * out_h2
    g7, g8 = d_o2 * out_h1, d_o2 * out_h2

    # Hidden layer: dL/dout_h1 = delta_o1 * w5 + delta_o2 * w7 (old weights), then times sigma'.
    d_h1 = (d_o1 * w5 + d_o2 * w7) * out_h1 * (1 - out_h1)
    d_h2 = (d_o1 * w6 + d_o2 * w8) * out_h2 * (1 - out_h2)
    g1, g2 = d_h1 * i1, d_h1 * i2
    g3, g4 = d_h2 * i1, d_h2 * i2

    # The engine keeps one bias per unit (b is (units,)), each with its own gradient delta_unit.
    return {
        "loss": loss,
        "w1": w1 - lr * g1,
        "w2": w2 - lr * g2,
        "w3": w3 - lr * g3,
        "w4": w4 - lr * g4,
        "w5": w5 - lr * g5,
        "w6": w6 - lr * g6,
        "w7": w7 - lr * g7,
        "w8": w8 - lr * g8,
        "b_h1": b1 - lr * d_h1,
        "b_h2": b1 - lr * d_h2,
        "b_o1": b2 - lr * d_o1,
        "b_o2": b2 - lr * d_o2,
    }


def test_hand_derivation_matches_the_article():
    # The article's published values (1/2-sum loss, which equals the mean for two outputs).
    ref = hand_derivation()
    assert ref["loss"] == pytest.approx(0.298371109, abs=1e-9)
    assert ref["w5"] == pytest.approx(0.35891648, abs=1e-8)
    assert ref["w6"] == pytest.approx(0.408666186, abs=1e-9)
    assert ref["w7"] == pytest.approx(0.511301270, abs=1e-9)
    assert ref["w8"] == pytest.approx(0.561370121, abs=1e-9)
    assert ref["w1"] == pytest.approx(0.149780716, abs=1e-9)
    assert ref["w2"] == pytest.approx(0.19956143, abs=1e-8)
    assert ref["w3"] == pytest.approx(0.24975114, abs=1e-8)
    assert ref["w4"] == pytest.approx(0.29950229, abs=1e-8)


def test_engine_one_sgd_step_equals_hand_derivation():
    ref = hand_derivation()
    net = Network.from_spec(SPEC)
    X = np.array([[0.05, 0.10]])
    Y = np.array([[0.01, 0.99]])

    loss_before, _ = net.gradients(X, Y, loss="mse")
    assert loss_before == pytest.approx(ref["loss"], rel=1e-13)

    history = net.fit(X, Y, TRAINING)
    assert len(history) == 1
    # The epoch's loss is its (single) batch loss, measured before the step.
    assert history[0]["loss"] == pytest.approx(ref["loss"], rel=1e-13)

    (W1, b1), (W2, b2) = ((layer["W"], layer["b"]) for layer in net.weights)
    expected_W1 = [[ref["w1"], ref["w3"]], [ref["w2"], ref["w4"]]]
    expected_W2 = [[ref["w5"], ref["w7"]], [ref["w6"], ref["w8"]]]
    np.testing.assert_allclose(W1, expected_W1, rtol=1e-13)
    np.testing.assert_allclose(W2, expected_W2, rtol=1e-13)
    np.testing.assert_allclose(b1, [ref["b_h1"], ref["b_h2"]], rtol=1e-13)
    np.testing.assert_allclose(b2, [ref["b_o1"], ref["b_o2"]], rtol=1e-13)


def test_float32_step_is_close_to_the_derivation():
    ref = hand_derivation()
    net = Network.from_spec(SPEC)
    net.fit(np.array([[0.05, 0.10]]), np.array([[0.01, 0.99]]), {**TRAINING, "dtype": "float32"})
    W2 = net.weights[1]["W"]
    assert W2.dtype == np.float32
    np.testing.assert_allclose(W2, [[ref["w5"], ref["w7"]], [ref["w6"], ref["w8"]]], rtol=1e-6)
