"""Backpropagated gradients against central finite differences, in float64.

For every activation and every loss, on 2-3-layer networks and batches of several samples,
each weight and bias gradient must agree with ``(L(p + h) - L(p - h)) / 2h`` to a relative
error below 1e-6. The loss for the differences is evaluated by an independent NumPy forward
pass written here, not by the engine, in extended precision (``np.longdouble``) so that
round-off in the differences stays far below the tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest

from core.engine import Network

H = 1e-6
TOL = 1e-6

# Independent reference definitions (API.md §2-3), used only to evaluate losses for the
# finite differences.
REF_ACT = {
    "identity": lambda z: z,
    "sigmoid": lambda z: 1.0 / (1.0 + np.exp(-z)),
    "tanh": np.tanh,
    "relu": lambda z: np.where(z > 0, z, 0.0),
    "leaky_relu": lambda z: np.where(z > 0, z, 0.01 * z),
    "elu": lambda z: np.where(z > 0, z, np.exp(np.minimum(z, 0)) - 1.0),
    "softplus": lambda z: np.log(1.0 + np.exp(z)),
    "softmax": lambda z: np.exp(z) / np.exp(z).sum(axis=1, keepdims=True),
}
REF_LOSS = {
    "mse": lambda a, y: np.mean((y - a) ** 2),
    "mae": lambda a, y: np.mean(np.abs(y - a)),
    "binary_crossentropy": lambda a, y: -np.mean(y * np.log(a) + (1 - y) * np.log(1 - a)),
    "categorical_crossentropy": lambda a, y: -np.mean(np.sum(y * np.log(a), axis=1)),
}


def _ref_loss(weights, acts, X, Y, loss):
    a = X
    for layer, act in zip(weights, acts, strict=True):
        a = REF_ACT[act](a @ layer["W"] + layer["b"])
    return REF_LOSS[loss](a, Y)


def _max_rel_error(net, acts, X, Y, loss):
    """Largest |analytic - numeric| / max(|analytic|, |numeric|) over all parameters."""
    _, grads = net.gradients(X, Y, loss=loss)
    ext = np.longdouble
    weights = [{k: v.astype(ext) for k, v in layer.items()} for layer in net.weights]
    X, Y = X.astype(ext), Y.astype(ext)
    worst = 0.0
    for layer, grad in zip(weights, grads, strict=True):
        for key in ("W", "b"):
            p, g = layer[key], grad[key]
            assert g.shape == layer[key].shape and g.dtype == np.float64
            for idx in np.ndindex(p.shape):
                old = p[idx]
                p[idx] = old + H
                up = _ref_loss(weights, acts, X, Y, loss)
                p[idx] = old - H
                down = _ref_loss(weights, acts, X, Y, loss)
                p[idx] = old
                numeric = (up - down) / (2 * H)
                scale = max(abs(numeric), abs(g[idx]))
                if scale < 1e-12:
                    # Both vanish (e.g. a dead ReLU unit); nothing relative to compare.
                    continue
                worst = max(worst, abs(numeric - g[idx]) / scale)
    return worst


def _net(acts, sizes, seed):
    spec = {
        "input_dim": sizes[0],
        "layers": [{"units": u, "activation": a} for u, a in zip(sizes[1:], acts, strict=True)],
        "init": "glorot_normal",
    }
    net = Network.from_spec(spec, seed=seed, dtype="float64")
    # Non-zero biases so that their gradients and the activations' offsets are exercised.
    rng = np.random.default_rng(seed + 100)
    net.weights = [{"W": w["W"], "b": rng.normal(0, 0.5, w["b"].shape)} for w in net.weights]
    return net


def _data(n, n_in, seed):
    return np.random.default_rng(seed).normal(0, 1.0, (n, n_in))


def _away_from_kinks(net, acts, X):
    # Finite differences across a kink (ReLU at 0) are meaningless; the data are random, so
    # this just guards against an unlucky draw (one step of H moves z by at most ~5 H here).
    a = X
    for layer, act in zip(net.weights, acts, strict=True):
        z = a @ layer["W"] + layer["b"]
        if act in ("relu", "leaky_relu", "elu"):
            assert np.min(np.abs(z)) > 20 * H
        a = REF_ACT[act](z)


HIDDEN = ["identity", "sigmoid", "tanh", "relu", "leaky_relu", "elu", "softplus"]


@pytest.mark.parametrize("act", HIDDEN)
def test_hidden_activation_gradients(act):
    acts = [act, act, "identity"]
    net = _net(acts, [3, 5, 4, 2], seed=1)
    X = _data(6, 3, seed=2)
    Y = _data(6, 2, seed=3)
    _away_from_kinks(net, acts, X)
    assert _max_rel_error(net, acts, X, Y, "mse") < TOL


@pytest.mark.parametrize("act", ["identity", "sigmoid", "tanh", "softplus", "elu", "softmax"])
def test_output_activation_gradients_with_mse(act):
    # Softmax under MSE exercises softmax's own Jacobian (no fused shortcut).
    acts = ["tanh", act]
    net = _net(acts, [4, 6, 3], seed=4)
    X = _data(5, 4, seed=5)
    Y = np.random.default_rng(6).uniform(0, 1, (5, 3))
    assert _max_rel_error(net, acts, X, Y, "mse") < TOL


def test_mae_gradients():
    acts = ["sigmoid", "identity"]
    net = _net(acts, [3, 4, 2], seed=7)
    X = _data(8, 3, seed=8)
    Y = _data(8, 2, seed=9)
    assert np.min(np.abs(net.forward(X) - Y)) > 1e-3  # no ties at the kink of |.|
    assert _max_rel_error(net, acts, X, Y, "mae") < TOL


def test_binary_crossentropy_gradients_fused_with_sigmoid():
    acts = ["relu", "tanh", "sigmoid"]
    net = _net(acts, [3, 5, 4, 3], seed=10)
    X = _data(7, 3, seed=11)
    Y = (np.random.default_rng(12).uniform(size=(7, 3)) > 0.5).astype(float)
    Y[0] = [0.3, 0.9, 0.5]  # soft targets are allowed too
    _away_from_kinks(net, acts, X)
    assert _max_rel_error(net, acts, X, Y, "binary_crossentropy") < TOL


def test_categorical_crossentropy_gradients_fused_with_softmax():
    acts = ["elu", "softmax"]
    net = _net(acts, [4, 6, 3], seed=13)
    X = _data(9, 4, seed=14)
    Y = np.eye(3)[np.random.default_rng(15).integers(0, 3, 9)]
    assert _max_rel_error(net, acts, X, Y, "categorical_crossentropy") < TOL


def test_categorical_crossentropy_with_class_indices_equals_one_hot():
    net = _net(["tanh", "softmax"], [4, 5, 3], seed=16)
    X = _data(6, 4, seed=17)
    idx = np.array([0, 2, 1, 1, 0, 2])
    loss_idx, g_idx = net.gradients(X, idx, loss="categorical_crossentropy")
    loss_hot, g_hot = net.gradients(X, np.eye(3)[idx], loss="categorical_crossentropy")
    assert loss_idx == loss_hot
    for a, b in zip(g_idx, g_hot, strict=True):
        np.testing.assert_array_equal(a["W"], b["W"])
        np.testing.assert_array_equal(a["b"], b["b"])


@pytest.mark.parametrize(
    ("acts", "loss"),
    [
        (["tanh", "softmax"], "binary_crossentropy"),
        (["tanh", "sigmoid"], "categorical_crossentropy"),
    ],
)
def test_unfused_crossentropy_gradients(acts, loss):
    # gradients() also serves a cross-entropy on the "other" probability output.
    net = _net(acts, [3, 4, 3], seed=18)
    X = _data(5, 3, seed=19)
    Y = np.eye(3)[[0, 1, 2, 1, 0]]
    assert _max_rel_error(net, acts, X, Y, loss) < TOL


def test_loss_value_matches_reference():
    for acts, loss in [
        (["relu", "identity"], "mse"),
        (["relu", "identity"], "mae"),
        (["relu", "sigmoid"], "binary_crossentropy"),
        (["relu", "softmax"], "categorical_crossentropy"),
    ]:
        net = _net(acts, [3, 4, 2], seed=20)
        X = _data(5, 3, seed=21)
        Y = np.eye(2)[[0, 1, 1, 0, 1]]
        value, _ = net.gradients(X, Y, loss=loss)
        assert value == pytest.approx(_ref_loss(net.weights, acts, X, Y, loss), rel=1e-12)
