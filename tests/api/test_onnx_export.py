"""ONNX export: onnxruntime runs the exported model to the outputs of ``Network.predict``.

Pure tests: networks are built with ``core.engine`` in-process, no service is started.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from api.onnx_export import INPUT, OUTPUT, network_to_onnx
from core.engine import Network
from core.spec import ACTIVATIONS

HIDDEN = [a for a in ACTIVATIONS if a != "softmax"]  # softmax is an output activation only


def _run(model: bytes, X: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    (out,) = session.run([OUTPUT], {INPUT: X.astype(np.float32)})
    return out


def _inputs(n: int, n_in: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Features on very different scales, so that a missing standardisation shows.
    return (
        rng.normal(size=(n, n_in)) * np.array([1.0, 8.0, 0.2])[:n_in]
        + np.array([0.5, 20.0, -3.0])[:n_in]
    )


def _net(hidden: str, output: str, units_out: int, standardize: bool, dtype: str) -> Network:
    spec = {
        "input_dim": 3,
        "layers": [
            {"units": 5, "activation": hidden},
            {"units": 4, "activation": hidden},
            {"units": units_out, "activation": output},
        ],
        "init": "glorot_normal",
    }
    net = Network.from_spec(spec, seed=ACTIVATIONS.index(output) + 7, dtype=dtype)
    rng = np.random.default_rng(1)
    for layer in net.layers:  # nonzero biases, so that a dropped Add shows
        layer.b[...] = rng.normal(scale=0.5, size=layer.b.shape)
    if standardize:
        net.x_mean = np.array([0.4, 19.0, -2.9])
        net.x_std = np.array([1.1, 7.5, 0.25])
    return net


@pytest.mark.parametrize("standardize", [False, True], ids=["raw", "standardized"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_activation_matches_predict(activation: str, standardize: bool) -> None:
    hidden = activation if activation != "softmax" else "tanh"
    net = _net(hidden, activation, 3, standardize, "float64")
    X = _inputs(64, 3)
    model = network_to_onnx(net)
    got = _run(model, X)
    want = net.predict(X)
    assert got.shape == want.shape == (64, 3)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    # The comparison is sensitive: predicting without standardisation gives other outputs.
    if standardize:
        assert np.max(np.abs(net.forward(X) - want)) > 1e-3


@pytest.mark.parametrize("hidden", HIDDEN)
def test_every_hidden_activation_in_a_float32_model(hidden: str) -> None:
    net = _net(hidden, "identity", 2, True, "float32")
    X = _inputs(33, 3, seed=4)
    np.testing.assert_allclose(_run(network_to_onnx(net), X), net.predict(X), rtol=0, atol=1e-5)


def test_a_network_trained_with_standardize_true() -> None:
    rng = np.random.default_rng(3)
    X = _inputs(120, 3, seed=9)
    labels = (X[:, 0] + (X[:, 1] - 20) / 8 > 0.5).astype(int)
    Y = np.eye(2)[labels]
    net = Network.from_spec(
        {
            "input_dim": 3,
            "layers": [
                {"units": 6, "activation": "leaky_relu"},
                {"units": 2, "activation": "softmax"},
            ],
        },
        seed=2,
    )
    net.fit(
        X,
        Y,
        {
            "loss": "categorical_crossentropy",
            "optimizer": {"name": "adam", "learning_rate": 0.05},
            "epochs": 20,
            "batch_size": 16,
            "shuffle": True,
            "seed": int(rng.integers(100)),
            "standardize": True,
        },
    )
    assert net.x_mean is not None and net.x_std is not None
    model = network_to_onnx(net)
    Xt = _inputs(50, 3, seed=10)
    got = _run(model, Xt)
    np.testing.assert_allclose(got, net.predict(Xt), rtol=0, atol=1e-5)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-6)


def test_graph_shape_names_and_metadata() -> None:
    net = _net("relu", "sigmoid", 1, True, "float64")
    net.classes = ["no", "yes"]
    model = onnx.load_from_string(network_to_onnx(net))
    onnx.checker.check_model(model, full_check=True)
    (inp,) = model.graph.input
    (out,) = model.graph.output
    assert inp.name == "input" and out.name == "output"
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["N", 3]
    assert [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == ["N", 1]
    ops = [node.op_type for node in model.graph.node]
    assert ops == ["Sub", "Div"] + ["MatMul", "Add", "Relu"] * 2 + ["MatMul", "Add", "Sigmoid"]
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["classes"]) == ["no", "yes"]
    assert json.loads(props["spec"])["input_dim"] == 3
    # A batch of one and an empty batch both run (N is dynamic).
    np.testing.assert_allclose(
        _run(model.SerializeToString(), _inputs(1, 3)), net.predict(_inputs(1, 3)), atol=1e-5
    )
    assert _run(model.SerializeToString(), np.zeros((0, 3))).shape == (0, 1)


def test_without_standardisation_there_is_no_scaling_node() -> None:
    net = _net("elu", "softplus", 2, False, "float64")
    ops = [n.op_type for n in onnx.load_from_string(network_to_onnx(net)).graph.node]
    assert ops[0] == "MatMul" and "Sub" not in ops and "Div" not in ops
    assert ops.count("Elu") == 2 and ops[-1] == "Softplus"


def test_leaky_relu_alpha_is_the_engines() -> None:
    net = _net("leaky_relu", "identity", 1, False, "float64")
    model = onnx.load_from_string(network_to_onnx(net))
    leaky = [n for n in model.graph.node if n.op_type == "LeakyRelu"]
    assert len(leaky) == 2
    assert onnx.helper.get_attribute_value(leaky[0].attribute[0]) == pytest.approx(0.01)
    # Strongly negative pre-activations exercise the negative branch.
    X = _inputs(40, 3) * 3
    np.testing.assert_allclose(_run(network_to_onnx(net), X), net.predict(X), rtol=0, atol=1e-5)
