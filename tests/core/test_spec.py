"""Validation of the network spec and training config: each bad input names its field."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from pydantic import ValidationError

from core.engine import EngineError, Network
from core.spec import (
    AdamConfig,
    NetworkSpec,
    RMSPropConfig,
    SGDConfig,
    TrainingConfig,
    check_compatible,
)
from tests.seed import SEED_NETWORK

SEED_SPEC = {**SEED_NETWORK, "init": "glorot_uniform"}  # API.md §2's example, as written

SEED_TRAINING = {
    "loss": "mse",
    "optimizer": {"name": "sgd", "learning_rate": 0.5, "momentum": 0.0},
    "epochs": 1,
    "batch_size": 1,
    "shuffle": False,
    "seed": 0,
    "validation_split": 0.0,
    "standardize": False,
    "dtype": "float32",
}


def _spec(**changes):
    spec = copy.deepcopy(SEED_SPEC)
    spec.update(changes)
    return spec


def _errors(model, data):
    with pytest.raises(ValidationError) as info:
        model.model_validate(data)
    return info.value.errors()


def _locs_and_messages(errors):
    return [(".".join(str(p) for p in e["loc"]), e["msg"]) for e in errors]


def test_api_examples_are_valid():
    spec = NetworkSpec.model_validate(SEED_SPEC)
    assert spec.output_dim == 2
    assert spec.initial_weights[1].W == [[0.40, 0.50], [0.45, 0.55]]
    cfg = TrainingConfig.model_validate(SEED_TRAINING)
    assert isinstance(cfg.optimizer, SGDConfig)
    assert cfg.optimizer.learning_rate == 0.5


def test_training_defaults():
    cfg = TrainingConfig()
    assert cfg.loss == "mse"
    assert isinstance(cfg.optimizer, SGDConfig) and cfg.optimizer.learning_rate == 0.01
    assert (cfg.epochs, cfg.batch_size, cfg.shuffle, cfg.seed) == (10, 32, True, 0)
    assert (cfg.validation_split, cfg.standardize, cfg.dtype) == (0.0, False, "float32")
    assert cfg.early_stopping is None and cfg.max_runtime_s is None


def test_optimizer_union_picks_by_name():
    adam = TrainingConfig.model_validate({"optimizer": {"name": "adam"}}).optimizer
    assert isinstance(adam, AdamConfig)
    assert (adam.learning_rate, adam.beta1, adam.beta2, adam.eps) == (0.001, 0.9, 0.999, 1e-8)
    rms = TrainingConfig.model_validate({"optimizer": {"name": "RMSProp"}}).optimizer
    assert isinstance(rms, RMSPropConfig) and rms.rho == 0.9


def test_unknown_activation_names_the_layer():
    spec = _spec(
        layers=[{"units": 2, "activation": "sigmoid"}, {"units": 2, "activation": "swish"}]
    )
    locs = _locs_and_messages(_errors(NetworkSpec, spec))
    assert locs[0][0] == "layers.1.activation"


def test_misspelt_field_is_named():
    spec = _spec(layers=[{"unit": 2, "activation": "sigmoid"}, {"units": 2, "activation": "relu"}])
    locs = [loc for loc, _ in _locs_and_messages(_errors(NetworkSpec, spec))]
    assert "layers.0.unit" in locs and "layers.0.units" in locs
    locs = [loc for loc, _ in _locs_and_messages(_errors(TrainingConfig, {"epoch": 3}))]
    assert locs == ["epoch"]


@pytest.mark.parametrize(
    ("weights", "fragment"),
    [
        (
            [{"W": [[0.15, 0.25], [0.20, 0.30]], "b": [0.35, 0.35]}, {"W": [[0.4, 0.5]]}],
            "initial_weights[1].W: expected shape (2, 2) (inputs, units), got (1, 2)",
        ),
        (
            [{"W": [[0.15], [0.20]], "b": [0.35]}, {"W": [[0.4, 0.5], [0.45, 0.55]]}],
            "initial_weights[0].W: expected shape (2, 2) (inputs, units), got (2, 1)",
        ),
        (
            [{"W": [[0.15, 0.25], [0.20]]}, {"W": [[0.4, 0.5], [0.45, 0.55]]}],
            "initial_weights[0].W: expected shape (2, 2) (inputs, units), got a ragged list",
        ),
        (
            [{"W": [[0.15, 0.25], [0.20, 0.30]], "b": [0.35]}, {"W": [[0.4, 0.5], [0.45, 0.55]]}],
            "initial_weights[0].b: expected shape (2,), got (1,)",
        ),
        (
            [{"W": [[0.15, 0.25], [0.20, 0.30]]}],
            "initial_weights: has 1 layers but layers has 2",
        ),
    ],
)
def test_initial_weights_of_wrong_shape(weights, fragment):
    messages = [
        msg for _, msg in _locs_and_messages(_errors(NetworkSpec, _spec(initial_weights=weights)))
    ]
    assert any(fragment in m for m in messages), messages


def test_initial_weights_must_be_finite():
    weights = copy.deepcopy(SEED_SPEC["initial_weights"])
    weights[0]["W"][1][0] = float("nan")
    locs = [
        loc for loc, _ in _locs_and_messages(_errors(NetworkSpec, _spec(initial_weights=weights)))
    ]
    assert locs == ["initial_weights.0.W.1.0"]


def test_one_unit_softmax_names_the_layer():
    spec = {"input_dim": 3, "layers": [{"units": 1, "activation": "softmax"}]}
    [(loc, msg)] = _locs_and_messages(_errors(NetworkSpec, spec))
    assert loc == "layers"
    assert "layers[0].activation: softmax needs at least 2 units" in msg


def test_hidden_softmax_names_the_layer():
    spec = {
        "input_dim": 3,
        "layers": [{"units": 4, "activation": "softmax"}, {"units": 2, "activation": "sigmoid"}],
    }
    [(_, msg)] = _locs_and_messages(_errors(NetworkSpec, spec))
    assert "layers[0].activation: softmax is only allowed on the last layer" in msg


@pytest.mark.parametrize(
    ("data", "loc"),
    [
        ({"input_dim": 0, "layers": [{"units": 1, "activation": "relu"}]}, "input_dim"),
        ({"input_dim": 2, "layers": []}, "layers"),
        ({"input_dim": 2, "layers": [{"units": 0, "activation": "relu"}]}, "layers.0.units"),
        ({"input_dim": 2, "layers": [{"units": 1, "activation": "relu"}], "init": "ones"}, "init"),
    ],
)
def test_bad_network_values(data, loc):
    assert loc in [loc for loc, _ in _locs_and_messages(_errors(NetworkSpec, data))]


@pytest.mark.parametrize(
    ("data", "loc"),
    [
        ({"loss": "hinge"}, "loss"),
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"seed": -1}, "seed"),
        ({"validation_split": 1.0}, "validation_split"),
        ({"validation_split": -0.1}, "validation_split"),
        ({"dtype": "float16"}, "dtype"),
        ({"max_runtime_s": 0}, "max_runtime_s"),
        ({"optimizer": {"name": "sgd", "learning_rate": 0}}, "optimizer.sgd.learning_rate"),
        ({"optimizer": {"name": "sgd", "momentum": -0.5}}, "optimizer.sgd.momentum"),
        ({"optimizer": {"name": "adam", "beta2": 1.0}}, "optimizer.adam.beta2"),
        ({"optimizer": {"name": "adam", "lr": 0.1}}, "optimizer.adam.lr"),
        ({"optimizer": {"name": "rmsprop", "eps": 0}}, "optimizer.rmsprop.eps"),
        ({"optimizer": {"name": "lbfgs"}}, "optimizer"),
        ({"early_stopping": {"patience": 0}}, "early_stopping.patience"),
        ({"early_stopping": {"min_delta": -1}}, "early_stopping.min_delta"),
    ],
)
def test_bad_training_values(data, loc):
    assert loc in [loc for loc, _ in _locs_and_messages(_errors(TrainingConfig, data))]


def test_nesterov_needs_momentum():
    messages = [
        m
        for _, m in _locs_and_messages(
            _errors(TrainingConfig, {"optimizer": {"name": "sgd", "nesterov": True}})
        )
    ]
    assert any("optimizer.nesterov" in m for m in messages)


def test_categorical_crossentropy_needs_softmax():
    net = NetworkSpec.model_validate(SEED_SPEC)
    with pytest.raises(ValueError) as info:
        check_compatible(net, TrainingConfig(loss="categorical_crossentropy"))
    assert str(info.value) == (
        "training.loss: categorical_crossentropy needs a softmax output layer "
        "(network.layers[1].activation is 'sigmoid')"
    )


def test_binary_crossentropy_needs_sigmoid():
    spec = NetworkSpec.model_validate(
        {
            "input_dim": 2,
            "layers": [{"units": 3, "activation": "relu"}, {"units": 2, "activation": "softmax"}],
        }
    )
    with pytest.raises(ValueError, match=r"training\.loss: binary_crossentropy needs a sigmoid"):
        check_compatible(spec, TrainingConfig(loss="binary_crossentropy"))
    check_compatible(spec, TrainingConfig(loss="categorical_crossentropy"))
    check_compatible(spec, TrainingConfig(loss="mse", regression_on_classes=True))


SOFTMAX_SPEC = {
    "input_dim": 2,
    "layers": [{"units": 3, "activation": "relu"}, {"units": 3, "activation": "softmax"}],
}


@pytest.mark.parametrize("loss", ["mse", "mae"])
def test_a_regression_loss_on_a_softmax_says_why_and_how_to_ask_for_it(loss):
    spec = NetworkSpec.model_validate(SOFTMAX_SPEC)
    with pytest.raises(ValueError) as info:
        check_compatible(spec, TrainingConfig(loss=loss))
    assert str(info.value) == (
        f"training.loss: {loss} is a regression loss, but network.layers[1] is a softmax, whose "
        "outputs are class probabilities; train classes with categorical_crossentropy (softmax "
        "output) or binary_crossentropy (sigmoid output), which report accuracy, or set "
        f"training.regression_on_classes: true to fit them with {loss} anyway"
    )
    check_compatible(spec, TrainingConfig(loss=loss, regression_on_classes=True))
    # Elsewhere a regression loss needs no opt-in; the opt-in is a strict flag.
    check_compatible(NetworkSpec.model_validate(SEED_SPEC), TrainingConfig(loss=loss))
    with pytest.raises(ValidationError, match="regression_on_classes"):
        TrainingConfig.model_validate({"regression_on_classes": "yes"})


def test_the_engine_refuses_a_regression_loss_on_a_softmax_unless_asked():
    X = np.random.default_rng(0).normal(size=(8, 2))
    Y = np.eye(3)[np.arange(8) % 3]
    with pytest.raises(EngineError, match="training.regression_on_classes: true"):
        Network.from_spec(SOFTMAX_SPEC, seed=0).fit(X, Y, {"loss": "mse", "epochs": 1})
    history = Network.from_spec(SOFTMAX_SPEC, seed=0).fit(
        X, Y, {"loss": "mse", "epochs": 1, "regression_on_classes": True}
    )
    assert "accuracy" not in history[0]


def test_network_from_spec_validates():
    with pytest.raises(ValidationError):
        Network.from_spec({"input_dim": 2, "layers": [{"units": 2, "activation": "gelu"}]})


# -- strict numbers: nothing is coerced from text or booleans -------------------------------


@pytest.mark.parametrize("value", ["10", True, 10.5, 10.0, None])
@pytest.mark.parametrize("field", ["epochs", "batch_size", "seed"])
def test_integer_training_fields_take_only_integers(field, value):
    errors = _errors(TrainingConfig, {field: value})
    assert [(e["loc"], e["msg"]) for e in errors] == [((field,), "Input should be a valid integer")]


@pytest.mark.parametrize("value", ["0.1", True, False, None, [0.1]])
@pytest.mark.parametrize(
    ("optimizer", "field"),
    [("sgd", "learning_rate"), ("sgd", "momentum"), ("adam", "beta1"), ("rmsprop", "rho")],
)
def test_number_fields_refuse_text_and_booleans(optimizer, field, value):
    errors = _errors(TrainingConfig, {"optimizer": {"name": optimizer, field: value}})
    assert _locs_and_messages(errors) == [
        (f"optimizer.{optimizer}.{field}", "Input should be a valid number")
    ]


@pytest.mark.parametrize(
    ("data", "loc"),
    [
        ({"validation_split": "0.2"}, "validation_split"),
        ({"validation_split": True}, "validation_split"),
        ({"max_runtime_s": "60"}, "max_runtime_s"),
        ({"shuffle": "false"}, "shuffle"),
        ({"shuffle": 0}, "shuffle"),
        ({"standardize": "yes"}, "standardize"),
        ({"optimizer": {"name": "sgd", "nesterov": 1, "momentum": 0.9}}, "optimizer.sgd.nesterov"),
        ({"early_stopping": {"patience": "5"}}, "early_stopping.patience"),
        ({"early_stopping": {"min_delta": True}}, "early_stopping.min_delta"),
        ({"early_stopping": {"restore_best": "true"}}, "early_stopping.restore_best"),
        ({"validation_fold": {"k": "3", "index": 0}}, "validation_fold.k"),
        ({"validation_fold": {"k": 3, "index": 1.0}}, "validation_fold.index"),
    ],
)
def test_other_training_fields_are_strict(data, loc):
    assert [loc_ for loc_, _ in _locs_and_messages(_errors(TrainingConfig, data))] == [loc]


@pytest.mark.parametrize(
    ("changes", "loc"),
    [
        ({"input_dim": "2"}, "input_dim"),
        ({"input_dim": True}, "input_dim"),
        ({"input_dim": 2.0}, "input_dim"),
        ({"layers": [{"units": "2", "activation": "sigmoid"}] * 2}, "layers.0.units"),
        ({"initial_weights": [{"W": [[0.15, "0.25"], [0.2, 0.3]]},
                              {"W": [[0.4, 0.5], [0.45, 0.55]]}]}, "initial_weights.0.W.0.1"),
        ({"initial_weights": [{"W": [[0.15, 0.25], [0.2, 0.3]]},
                              {"W": [[0.4, 0.5], [0.45, 0.55]], "b": [True, 0.6]}]},
         "initial_weights.1.b.0"),
    ],
)  # fmt: skip
def test_network_numbers_are_strict(changes, loc):
    assert loc in [loc_ for loc_, _ in _locs_and_messages(_errors(NetworkSpec, _spec(**changes)))]


def test_integers_are_numbers_and_json_input_is_as_strict():
    """1 is a fine learning rate; JSON text follows the same rules as parsed JSON."""
    cfg = TrainingConfig.model_validate({"optimizer": {"name": "sgd", "learning_rate": 1}})
    assert cfg.optimizer.learning_rate == 1.0 and isinstance(cfg.optimizer.learning_rate, float)
    spec = NetworkSpec.model_validate(
        _spec(initial_weights=[{"W": [[1, 0], [0, 1]], "b": [0, 1]}, {"W": [[1, 2], [3, 4]]}])
    )
    assert spec.initial_weights[0].W == [[1.0, 0.0], [0.0, 1.0]]
    assert TrainingConfig.model_validate_json('{"epochs": 3, "validation_split": 0}').epochs == 3
    for text, loc in [('{"epochs": "3"}', ("epochs",)), ('{"epochs": true}', ("epochs",)),
                      ('{"validation_split": "0.1"}', ("validation_split",))]:  # fmt: skip
        with pytest.raises(ValidationError) as info:
            TrainingConfig.model_validate_json(text)
        assert [e["loc"] for e in info.value.errors()] == [loc]


def test_an_optimizer_without_a_name_is_the_default_sgd():
    """So a sweep may set training.optimizer.learning_rate on a base with no optimizer."""
    cfg = TrainingConfig.model_validate({"optimizer": {"learning_rate": 0.3, "momentum": 0.5}})
    assert isinstance(cfg.optimizer, SGDConfig)
    assert (cfg.optimizer.learning_rate, cfg.optimizer.momentum) == (0.3, 0.5)
    assert isinstance(TrainingConfig.model_validate({"optimizer": {}}).optimizer, SGDConfig)
    # Another optimizer's fields on the default are named, not a puzzle about tags.
    locs = [loc for loc, _ in _locs_and_messages(
        _errors(TrainingConfig, {"optimizer": {"learning_rate": 0.1, "beta1": 0.8}})
    )]  # fmt: skip
    assert locs == ["optimizer.sgd.beta1"]
    assert isinstance(
        TrainingConfig.model_validate({"optimizer": {"name": "ADAM"}}).optimizer, AdamConfig
    )


# -- near-miss names and the optimizer shorthand ----------------------------------------------


def test_an_optimizer_given_by_name_alone_is_that_optimizer_with_its_defaults():
    """Adam's defaults as torch.optim.Adam has them: lr 1e-3, betas (0.9, 0.999), eps 1e-8."""
    adam = TrainingConfig.model_validate({"optimizer": "adam"}).optimizer
    assert isinstance(adam, AdamConfig)
    assert (adam.learning_rate, adam.beta1, adam.beta2, adam.eps) == (1e-3, 0.9, 0.999, 1e-8)
    assert TrainingConfig.model_validate({"optimizer": "adam"}) == TrainingConfig.model_validate(
        {"optimizer": {"name": "adam"}}
    )
    assert isinstance(TrainingConfig.model_validate({"optimizer": "RMSProp"}).optimizer,
                      RMSPropConfig)  # fmt: skip
    assert isinstance(TrainingConfig.model_validate_json('{"optimizer": "sgd"}').optimizer,
                      SGDConfig)  # fmt: skip
    # The record stores the full object: the shorthand is an input form only.
    dumped = TrainingConfig.model_validate({"optimizer": "adam"}).model_dump(mode="json")
    assert dumped["optimizer"]["name"] == "adam" and dumped["optimizer"]["beta2"] == 0.999
    # The engine's Python API takes it too.
    net = Network.from_spec(SEED_SPEC)
    history = net.fit([[0.05, 0.10]], [[0.01, 0.99]],
                      {**SEED_TRAINING, "optimizer": "adam", "epochs": 2})  # fmt: skip
    assert [h["epoch"] for h in history] == [1, 2]


@pytest.mark.parametrize(
    ("model", "data", "loc", "meant"),
    [
        (NetworkSpec, _spec(layers=[{"units": 2, "activation": "tahn"}] * 2),
         ("layers", 0, "activation"), "tanh"),
        (NetworkSpec, _spec(layers=[{"units": 2, "activation": "Sigmoid"}] * 2),
         ("layers", 0, "activation"), "sigmoid"),
        (NetworkSpec, _spec(init="he_norml"), ("init",), "he_normal"),
        (NetworkSpec, {**_spec(), "inputdim": 2}, ("inputdim",), None),  # input_dim is given
        (NetworkSpec, {"input_dim": 2, "layer": [{"units": 1, "activation": "relu"}]},
         ("layer",), "layers"),
        (TrainingConfig, {"loss": "categorical_crossentropi"}, ("loss",),
         "categorical_crossentropy"),
        (TrainingConfig, {"loss": "mean_squared_error"}, ("loss",), None),  # nothing close
        (TrainingConfig, {"optimizer": {"name": "adamm"}}, ("optimizer",), "adam"),
        (TrainingConfig, {"optimizer": "rmsprp"}, ("optimizer",), "rmsprop"),
        (TrainingConfig, {"optimizer": "lbfgs"}, ("optimizer",), None),
        (TrainingConfig, {"optimizer": {"name": "adam", "learning_rat": 0.1}},
         ("optimizer", "adam", "learning_rat"), "learning_rate"),
        (TrainingConfig, {"epoch": 3}, ("epoch",), "epochs"),
        (TrainingConfig, {"dtype": "float46"}, ("dtype",), "float64"),
        (TrainingConfig, {"early_stopping": {"patiense": 3}}, ("early_stopping", "patiense"),
         "patience"),
    ],
)  # fmt: skip
def test_a_near_miss_name_says_what_it_meant(model, data, loc, meant):
    errors = {e["loc"]: e for e in _errors(model, data)}
    assert loc in errors, list(errors)
    error = errors[loc]
    hint = f"; did you mean '{meant}'?"
    if meant is None:
        assert "did you mean" not in error["msg"] and "did_you_mean" not in error.get("ctx", {})
    else:
        assert error["msg"].endswith(hint) and error["ctx"]["did_you_mean"] == meant
        # The rest of pydantic's error is kept: its type, and the choices in its message.
        assert error["type"] in ("literal_error", "union_tag_invalid", "extra_forbidden")


def test_hints_keep_every_other_error_as_it_was():
    data = {"loss": "mse2", "epochs": 0, "optimizer": {"name": "sgd", "learning_rate": "0.1"}}
    errors = _errors(TrainingConfig, data)
    by_loc = {e["loc"]: e for e in errors}
    assert set(by_loc) == {("loss",), ("epochs",), ("optimizer", "sgd", "learning_rate")}
    assert by_loc[("loss",)]["ctx"]["did_you_mean"] == "mse"
    assert by_loc[("epochs",)]["type"] == "greater_than_equal"
    assert by_loc[("epochs",)]["msg"] == "Input should be greater than or equal to 1"
    assert by_loc[("epochs",)]["ctx"] == {"ge": 1}
    assert by_loc[("optimizer", "sgd", "learning_rate")]["type"] == "float_type"


def test_did_you_mean_picks_the_closest_name_or_none():
    from core.spec import ACTIVATIONS, did_you_mean

    assert did_you_mean("tanh", ACTIVATIONS) is None  # already a name
    assert did_you_mean("TANH", ACTIVATIONS) == "tanh"
    assert did_you_mean("leakyrelu", ACTIVATIONS) == "leaky_relu"
    assert did_you_mean("softmx", ACTIVATIONS) == "softmax"
    assert did_you_mean("gelu", ACTIVATIONS) == "elu"
    assert did_you_mean("swish", ACTIVATIONS) is None
