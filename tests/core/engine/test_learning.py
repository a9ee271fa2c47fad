"""End-to-end learning: XOR, scikit-learn's digits and diabetes data (bundled, no download)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.datasets import load_diabetes, load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import r2_score
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPRegressor
from sklearn.preprocessing import StandardScaler

from core.engine import Network

XOR_X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
XOR_Y = np.array([0, 1, 1, 0], dtype=float)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_xor_with_a_2_4_1_network(seed):
    spec = {
        "input_dim": 2,
        "layers": [{"units": 4, "activation": "tanh"}, {"units": 1, "activation": "sigmoid"}],
    }
    net = Network.from_spec(spec, seed=seed)
    net.classes = [0, 1]
    history = net.fit(
        XOR_X,
        XOR_Y,
        {
            "loss": "binary_crossentropy",
            "optimizer": {"name": "adam", "learning_rate": 0.05},
            "epochs": 400,
            "batch_size": 4,
            "seed": seed,
        },
    )
    assert history[-1]["loss"] < 0.05 < history[0]["loss"]
    assert history[-1]["accuracy"] == 1.0
    assert net.predict_labels(XOR_X) == [0, 1, 1, 0]


def test_xor_with_plain_online_sgd_and_mse():
    spec = {
        "input_dim": 2,
        "layers": [{"units": 4, "activation": "sigmoid"}, {"units": 1, "activation": "sigmoid"}],
    }
    net = Network.from_spec(spec, seed=3)
    net.fit(
        XOR_X,
        XOR_Y,
        {"optimizer": {"name": "sgd", "learning_rate": 2.0}, "epochs": 2000, "batch_size": 1},
    )
    np.testing.assert_array_equal(net.predict(XOR_X)[:, 0] > 0.5, XOR_Y > 0.5)


def test_digits_reach_95_percent_held_out_accuracy():
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.25, random_state=0, stratify=y
    )
    spec = {
        "input_dim": 64,
        "layers": [{"units": 64, "activation": "relu"}, {"units": 10, "activation": "softmax"}],
        "init": "he_uniform",
    }
    net = Network.from_spec(spec, seed=0)
    net.classes = list(range(10))
    history = net.fit(
        X_train,
        y_train,
        {
            "loss": "categorical_crossentropy",
            "optimizer": {"name": "adam", "learning_rate": 0.001},
            "epochs": 30,
            "batch_size": 32,
            "standardize": True,
            "validation_split": 0.1,
        },
    )
    assert {"val_loss", "val_accuracy", "accuracy"} <= history[-1].keys()
    accuracy = np.mean(np.array(net.predict_labels(X_test)) == y_test)
    assert accuracy >= 0.95


def test_diabetes_regression_at_least_as_good_as_mlpregressor():
    # Same split, same architecture (10-32-1, relu, identity output), features standardised,
    # target scaled the same way for both; R^2 averaged over three initialisation seeds.
    X, y = load_diabetes(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0)
    y_mean, y_std = y_train.mean(), y_train.std()
    t_train = (y_train - y_mean) / y_std
    scaler = StandardScaler().fit(X_train)

    ours, theirs = [], []
    for seed in range(3):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            mlp = MLPRegressor(hidden_layer_sizes=(32,), random_state=seed, max_iter=200)
            mlp.fit(scaler.transform(X_train), t_train)
        theirs.append(r2_score(y_test, mlp.predict(scaler.transform(X_test)) * y_std + y_mean))

        spec = {
            "input_dim": 10,
            "layers": [{"units": 32, "activation": "relu"}, {"units": 1, "activation": "identity"}],
        }
        net = Network.from_spec(spec, seed=seed)
        net.fit(
            X_train,
            t_train,
            {
                "loss": "mse",
                "optimizer": {"name": "adam", "learning_rate": 0.001, "weight_decay": 0.05},
                "epochs": 60,
                "batch_size": 32,
                "standardize": True,
                "seed": seed,
                "dtype": "float64",
            },
        )
        ours.append(r2_score(y_test, net.predict(X_test)[:, 0] * y_std + y_mean))
    assert np.mean(ours) >= np.mean(theirs)
    assert np.mean(ours) > 0.3
