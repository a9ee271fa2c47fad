"""Export a trained ``Network`` as an ONNX model (``GET /runs/{id}/weights?format=onnx``).

The graph computes exactly what ``Network.predict`` computes: the stored feature
standardisation ``(x - mean) / std`` when the model has one, then per dense layer
``activation(x @ W + b)`` with ``W`` ``(n_in, units)`` as in API.md §2. The input is named
``"input"`` (float32 ``[N, n_in]``) and the output ``"output"`` (float32 ``[N, units_last]``);
``N`` is dynamic. Parameters are stored as float32 initialisers whatever the model's dtype.

This module knows the engine's activation names and constants (LeakyReLU's ``alpha``, ELU's
``alpha = 1``); it builds the graph with the ``onnx.helper`` API only.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from core.engine import Network
from core.engine.activations import LeakyReLU

#: Opset 17 / IR version 8 load in every onnxruntime of the last years.
OPSET = 17
IR_VERSION = 8
INPUT = "input"
OUTPUT = "output"


def _activation_node(name: str, x: str, y: str, node_name: str) -> onnx.NodeProto:
    """One ONNX node computing the engine's activation ``name`` from ``x`` into ``y``."""
    builders: dict[str, Callable[[], onnx.NodeProto]] = {
        "identity": lambda: helper.make_node("Identity", [x], [y], name=node_name),
        "sigmoid": lambda: helper.make_node("Sigmoid", [x], [y], name=node_name),
        "tanh": lambda: helper.make_node("Tanh", [x], [y], name=node_name),
        "relu": lambda: helper.make_node("Relu", [x], [y], name=node_name),
        "leaky_relu": lambda: helper.make_node(
            "LeakyRelu", [x], [y], name=node_name, alpha=float(LeakyReLU.alpha)
        ),
        "elu": lambda: helper.make_node("Elu", [x], [y], name=node_name, alpha=1.0),
        "softplus": lambda: helper.make_node("Softplus", [x], [y], name=node_name),
        "softmax": lambda: helper.make_node("Softmax", [x], [y], name=node_name, axis=-1),
    }
    try:
        return builders[name]()
    except KeyError:
        raise ValueError(f"activation {name!r} has no ONNX counterpart") from None


def _f32(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name=name)


def network_to_onnx(net: Network) -> bytes:
    """Serialized ONNX ``ModelProto`` equivalent to ``net.predict`` (see the module docstring)."""
    nodes: list[onnx.NodeProto] = []
    initializers: list[onnx.TensorProto] = []
    current = INPUT

    if net.x_mean is not None and net.x_std is not None:
        initializers += [_f32("x_mean", net.x_mean), _f32("x_std", net.x_std)]
        nodes.append(helper.make_node("Sub", [current, "x_mean"], ["x_centered"], name="center"))
        nodes.append(helper.make_node("Div", ["x_centered", "x_std"], ["x_std_in"], name="scale"))
        current = "x_std_in"

    weights = net.weights
    last = len(weights) - 1
    for i, (layer, spec) in enumerate(zip(weights, net.spec.layers, strict=True)):
        initializers += [_f32(f"W{i}", layer["W"]), _f32(f"b{i}", layer["b"])]
        nodes.append(helper.make_node("MatMul", [current, f"W{i}"], [f"xw{i}"], name=f"matmul{i}"))
        nodes.append(helper.make_node("Add", [f"xw{i}", f"b{i}"], [f"z{i}"], name=f"add{i}"))
        out = OUTPUT if i == last else f"a{i}"
        nodes.append(_activation_node(spec.activation, f"z{i}", out, f"{spec.activation}{i}"))
        current = out

    graph = helper.make_graph(
        nodes,
        "backprop_network",
        inputs=[helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["N", net.n_in])],
        outputs=[helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["N", net.n_out])],
        initializer=initializers,
    )
    model = helper.make_model(
        graph,
        producer_name="backprop-service",
        opset_imports=[helper.make_opsetid("", OPSET)],
    )
    model.ir_version = IR_VERSION
    helper.set_model_props(
        model,
        {
            "spec": json.dumps(net.spec.model_dump(mode="json", exclude={"initial_weights"})),
            "classes": json.dumps(net.classes, default=str),
            "standardized": json.dumps(net.x_mean is not None),
        },
    )
    onnx.checker.check_model(model)
    return model.SerializeToString()
