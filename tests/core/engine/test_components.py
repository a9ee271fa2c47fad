"""Activations, losses, initialisers and optimisers against independent reference formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.engine.activations import ACTIVATIONS, get_activation
from core.engine.initializers import INITIALIZERS, get_initializer
from core.engine.layers import LayerWorkspace
from core.engine.losses import LOSSES, get_loss
from core.engine.optimizers import OPTIMIZERS, make_optimizer
from core.spec import AdamConfig, RMSPropConfig, SGDConfig

Z = np.array([[-3.0, -0.5, 0.0, 0.7, 4.0], [1.5, -2.0, 0.3, -0.1, 2.5]])


def _scalar_ref(name, x):
    """Textbook definitions, one scalar at a time, via the math module."""
    return {
        "identity": x,
        "sigmoid": 1 / (1 + math.exp(-x)),
        "tanh": math.tanh(x),
        "relu": max(x, 0.0),
        "leaky_relu": x if x > 0 else 0.01 * x,
        "elu": x if x > 0 else math.exp(x) - 1,
        "softplus": math.log(1 + math.exp(x)),
    }[name]


def test_registries_are_complete():
    assert set(ACTIVATIONS) == {
        "identity",
        "sigmoid",
        "tanh",
        "relu",
        "leaky_relu",
        "elu",
        "softplus",
        "softmax",
    }
    assert set(LOSSES) == {"mse", "mae", "binary_crossentropy", "categorical_crossentropy"}
    assert set(INITIALIZERS) == {
        "glorot_uniform",
        "glorot_normal",
        "he_uniform",
        "he_normal",
        "zeros",
    }
    assert set(OPTIMIZERS) == {"sgd", "adam", "rmsprop"}
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        get_activation("gelu")


@pytest.mark.parametrize(
    "name", ["identity", "sigmoid", "tanh", "relu", "leaky_relu", "elu", "softplus"]
)
def test_elementwise_activations(name):
    out = get_activation(name)(Z)
    expected = np.vectorize(lambda x: _scalar_ref(name, x))(Z)
    np.testing.assert_allclose(out, expected, rtol=1e-14, atol=1e-300)


def test_softmax_rows():
    out = get_activation("softmax")(Z)
    for row, z in zip(out, Z, strict=True):
        e = [math.exp(v) for v in z]
        np.testing.assert_allclose(row, [v / sum(e) for v in e], rtol=1e-14)


def test_activations_do_not_overflow_on_huge_inputs():
    big = np.array([[-1000.0, 1000.0], [800.0, -800.0]])
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        np.testing.assert_array_equal(get_activation("softmax")(big), [[0.0, 1.0], [1.0, 0.0]])
        np.testing.assert_array_equal(
            get_activation("softplus")(big), [[0.0, 1000.0], [800.0, 0.0]]
        )
        np.testing.assert_array_equal(get_activation("tanh")(big), [[-1.0, 1.0], [1.0, -1.0]])
        np.testing.assert_array_equal(get_activation("elu")(big), [[-1.0, 1000.0], [800.0, -1.0]])
    with np.errstate(over="ignore", under="ignore"):
        np.testing.assert_array_equal(get_activation("sigmoid")(big), [[0.0, 1.0], [1.0, 0.0]])


def _layer_ws(z):
    class _Layer:
        units = z.shape[1]
        activation = get_activation("sigmoid")  # any activation with its own output array

    ws = LayerWorkspace(z.shape[0], _Layer(), z.dtype)
    ws.z[...] = z
    return ws


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_crossentropies_are_stable_on_huge_logits(dtype):
    # Logits of +-1000 would overflow exp in float32 and float64 alike.
    z = np.array([[1000.0, -1000.0, 0.0], [-500.0, 500.0, 499.0]], dtype)
    y = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype)
    cce = get_loss("categorical_crossentropy")
    ws = _layer_ws(z)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        get_activation("softmax").forward(ws.z, ws.a, ws)
        delta = np.empty_like(z)
        value = cce.fused_delta(ws.z, ws.a, y, delta, ws)
    # -log softmax: row 1 = 1000 - (-1000) = 2000; row 2 = log(1 + e^-1 + e^-1000) + 1.
    expected = (2000.0 + (1.0 + math.log1p(math.exp(-1.0)))) / 2
    assert value == pytest.approx(expected, rel=1e-6)
    np.testing.assert_allclose(delta, (ws.a - y) / 2)
    assert np.all(np.isfinite(delta))

    bce = get_loss("binary_crossentropy")
    z = np.array([[1000.0, -1000.0], [-1000.0, 30.0]], dtype)
    y = np.array([[0.0, 1.0], [0.0, 1.0]], dtype)
    ws = _layer_ws(z)
    with np.errstate(over="ignore", under="ignore"):
        get_activation("sigmoid").forward(ws.z, ws.a, ws)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        value = bce.fused_value(ws.z, ws.a, y, ws)
    # Wrong by 1000 costs 1000 each; the last term is log(1 + e^-30).
    assert value == pytest.approx((1000 + 1000 + 0 + math.log1p(math.exp(-30.0))) / 4, rel=1e-6)


def test_plain_losses_match_their_definitions():
    a = np.array([[0.2, 0.7], [0.9, 0.4], [0.5, 0.5]])
    y = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    ws = _layer_ws(a)
    pairs = [
        (p, t) for prow, trow in zip(a, y, strict=True) for p, t in zip(prow, trow, strict=True)
    ]
    mse = sum((t - p) ** 2 for p, t in pairs) / 6
    mae = sum(abs(t - p) for p, t in pairs) / 6
    bce = -sum(t * math.log(p) + (1 - t) * math.log(1 - p) for p, t in pairs) / 6
    cce = -sum(t * math.log(p) for p, t in pairs) / 3
    assert get_loss("mse").value(a, y, ws) == pytest.approx(mse, rel=1e-14)
    assert get_loss("mae").value(a, y, ws) == pytest.approx(mae, rel=1e-14)
    assert get_loss("binary_crossentropy").value(a, y, ws) == pytest.approx(bce, rel=1e-12)
    assert get_loss("categorical_crossentropy").value(a, y, ws) == pytest.approx(cce, rel=1e-12)


@pytest.mark.parametrize(
    ("name", "std"),
    [
        ("glorot_uniform", math.sqrt(6 / 700) / math.sqrt(3)),
        ("glorot_normal", math.sqrt(2 / 700)),
        ("he_uniform", math.sqrt(6 / 400) / math.sqrt(3)),
        ("he_normal", math.sqrt(2 / 400)),
    ],
)
def test_initialiser_scales(name, std):
    W = get_initializer(name)(np.random.default_rng(0), 400, 300)
    assert W.shape == (400, 300)
    assert abs(W.mean()) < 3 * std / math.sqrt(W.size) * 2
    assert W.std() == pytest.approx(std, rel=0.01)
    if name.endswith("uniform"):
        assert np.abs(W).max() <= std * math.sqrt(3)
    assert not get_initializer("zeros")(np.random.default_rng(0), 3, 2).any()


# Reference optimisers transcribed from the PyTorch documentation's pseudo-code, one
# parameter at a time in plain Python floats.
def _ref_sgd(p, grads, lr, momentum=0.0, nesterov=False, wd=0.0):
    b = None
    for g in grads:
        g = g + wd * p
        if momentum:
            b = g if b is None else momentum * b + g
            g = g + momentum * b if nesterov else b
        p = p - lr * g
    return p


def _ref_adam(p, grads, lr, b1, b2, eps, wd=0.0):
    m = v = 0.0
    for t, g in enumerate(grads, start=1):
        g = g + wd * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        p = p - lr * m_hat / (math.sqrt(v_hat) + eps)
    return p


def _ref_rmsprop(p, grads, lr, rho, eps, momentum=0.0, wd=0.0):
    v = b = 0.0
    for g in grads:
        g = g + wd * p
        v = rho * v + (1 - rho) * g * g
        step = g / (math.sqrt(v) + eps)
        if momentum:
            b = momentum * b + step
            step = b
        p = p - lr * step
    return p


GRADS = [[0.5, -1.0, 2.0, 0.0], [0.1, -0.3, -2.0, 0.2], [-0.4, 0.6, 1.0, 0.0]]
P0 = [1.0, -2.0, 0.5, 0.0]


@pytest.mark.parametrize(
    ("config", "reference"),
    [
        (SGDConfig(learning_rate=0.1), lambda p, g: _ref_sgd(p, g, 0.1)),
        (
            SGDConfig(learning_rate=0.1, momentum=0.9),
            lambda p, g: _ref_sgd(p, g, 0.1, momentum=0.9),
        ),
        (
            SGDConfig(learning_rate=0.1, momentum=0.8, nesterov=True, weight_decay=0.01),
            lambda p, g: _ref_sgd(p, g, 0.1, momentum=0.8, nesterov=True, wd=0.01),
        ),
        (
            AdamConfig(name="adam", learning_rate=0.01),
            lambda p, g: _ref_adam(p, g, 0.01, 0.9, 0.999, 1e-8),
        ),
        (
            AdamConfig(name="adam", learning_rate=0.01, beta1=0.5, weight_decay=0.1),
            lambda p, g: _ref_adam(p, g, 0.01, 0.5, 0.999, 1e-8, wd=0.1),
        ),
        (
            RMSPropConfig(name="rmsprop", learning_rate=0.01),
            lambda p, g: _ref_rmsprop(p, g, 0.01, 0.9, 1e-8),
        ),
        (
            RMSPropConfig(name="rmsprop", learning_rate=0.01, momentum=0.9, weight_decay=0.1),
            lambda p, g: _ref_rmsprop(p, g, 0.01, 0.9, 1e-8, momentum=0.9, wd=0.1),
        ),
    ],
)
def test_optimizers_follow_the_reference_updates(config, reference):
    params = np.array(P0)
    opt = make_optimizer(config, params.size, params.dtype)
    for g in GRADS:
        opt.step(params, np.array(g))
    expected = [reference(p0, [g[i] for g in GRADS]) for i, p0 in enumerate(P0)]
    np.testing.assert_allclose(params, expected, rtol=1e-12, atol=1e-15)
    assert opt.t == len(GRADS)
