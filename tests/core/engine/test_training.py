"""The training loop: determinism, checkpoint/resume, divergence, metrics, early stopping."""

from __future__ import annotations

import numpy as np
import pytest

from core.engine import DivergenceError, EngineError, Network


def _classification_data(n=120, n_in=5, k=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, n_in)) * rng.uniform(0.5, 20, n_in) + rng.normal(0, 5, n_in)
    y = np.argmax(X @ rng.normal(size=(n_in, k)), axis=1)
    return X, y


def _clf_spec(n_in=5, k=3):
    return {
        "input_dim": n_in,
        "layers": [
            {"units": 8, "activation": "relu"},
            {"units": 6, "activation": "tanh"},
            {"units": k, "activation": "softmax"},
        ],
    }


def _weights_equal(a, b):
    return all(
        np.array_equal(x["W"], y["W"]) and np.array_equal(x["b"], y["b"])
        for x, y in zip(a, b, strict=True)
    )


def _strip_time(history):
    return [{k: v for k, v in item.items() if k != "elapsed_s"} for item in history]


CLF_TRAINING = {
    "loss": "categorical_crossentropy",
    "optimizer": {"name": "adam", "learning_rate": 0.01},
    "epochs": 8,
    "batch_size": 16,
    "shuffle": True,
    "seed": 5,
    "validation_split": 0.2,
    "standardize": True,
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_same_request_gives_identical_weights(dtype):
    X, y = _classification_data()
    cfg = {**CLF_TRAINING, "dtype": dtype}
    runs = []
    for _ in range(2):
        net = Network.from_spec(_clf_spec(), seed=11)
        history = net.fit(X, y, cfg)
        runs.append((net.weights, _strip_time(history)))
    assert _weights_equal(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1]
    assert runs[0][0][0]["W"].dtype == np.dtype(dtype)

    other = Network.from_spec(_clf_spec(), seed=11)
    other.fit(X, y, {**cfg, "seed": 6})
    assert not _weights_equal(runs[0][0], other.weights)


def test_initialisation_depends_on_the_seed_only():
    a = Network.from_spec(_clf_spec(), seed=1).weights
    b = Network.from_spec(_clf_spec(), seed=1).weights
    c = Network.from_spec(_clf_spec(), seed=2).weights
    assert _weights_equal(a, b) and not _weights_equal(a, c)


@pytest.mark.parametrize(
    ("optimizer", "dtype", "early_stopping"),
    [
        ({"name": "adam", "learning_rate": 0.01}, "float32", None),
        (
            {"name": "sgd", "learning_rate": 0.05, "momentum": 0.9, "nesterov": True},
            "float64",
            None,
        ),
        (
            {"name": "rmsprop", "learning_rate": 0.01, "momentum": 0.5},
            "float32",
            {"patience": 100, "restore_best": True},
        ),
    ],
)
def test_resume_from_checkpoint_equals_uninterrupted_fit(optimizer, dtype, early_stopping):
    X, y = _classification_data()
    cfg = {**CLF_TRAINING, "optimizer": optimizer, "dtype": dtype, "early_stopping": early_stopping}

    full = Network.from_spec(_clf_spec(), seed=3)
    checkpoints = {}
    full_history = full.fit(
        X,
        y,
        cfg,
        checkpoint_every=3,
        on_checkpoint=lambda e, data: checkpoints.__setitem__(e, data),
    )
    assert sorted(checkpoints) == [3, 6]
    assert all(isinstance(data, bytes) for data in checkpoints.values())

    for epoch, data in checkpoints.items():
        # A "new worker": a freshly built network (even with a different init seed).
        resumed = Network.from_spec(_clf_spec(), seed=99)
        seen = []
        history = resumed.fit(X, y, cfg, callback=seen.append, resume_from=data)
        assert [item["epoch"] for item in seen] == list(range(epoch + 1, 9))
        # The resumed fit's history covers the epochs it trained, equal to the full fit's.
        assert _strip_time(history) == _strip_time(full_history[epoch:])
        assert _weights_equal(resumed.weights, full.weights)
        np.testing.assert_array_equal(resumed.x_mean, full.x_mean)


def test_checkpoint_size_does_not_grow_with_epochs():
    # A checkpoint holds state, not history: the last one is as large as the first.
    X, y = _classification_data()
    sizes: dict[int, int] = {}
    cfg = {**CLF_TRAINING, "epochs": 60, "early_stopping": {"patience": 100, "restore_best": True}}
    Network.from_spec(_clf_spec(), seed=3).fit(
        X, y, cfg, checkpoint_every=1, on_checkpoint=lambda e, d: sizes.__setitem__(e, len(d))
    )
    assert sorted(sizes) == list(range(1, 61))
    # Only the digits of the numbers in its JSON part vary (a history would add ~100 B/epoch).
    assert max(sizes.values()) - min(sizes.values()) <= 80, sizes


def test_checkpoint_due_decides_when_to_serialise():
    X, y = _classification_data()
    asked: list[int] = []
    saved: list[int] = []

    def due(epoch: int) -> bool:
        asked.append(epoch)
        return epoch in (2, 5)

    Network.from_spec(_clf_spec(), seed=3).fit(
        X, y, CLF_TRAINING, checkpoint_due=due, on_checkpoint=lambda e, _: saved.append(e)
    )
    assert asked == list(range(1, CLF_TRAINING["epochs"] + 1))
    assert saved == [2, 5]
    with pytest.raises(EngineError, match="not both"):
        Network.from_spec(_clf_spec(), seed=3).fit(
            X, y, CLF_TRAINING, checkpoint_every=2, checkpoint_due=due,
            on_checkpoint=lambda e, _: None,
        )  # fmt: skip


def test_checkpoint_of_another_fit_is_rejected():
    X, y = _classification_data()
    net = Network.from_spec(_clf_spec(), seed=3)
    saved = []
    net.fit(X, y, CLF_TRAINING, checkpoint_every=4, on_checkpoint=lambda e, d: saved.append(d))
    with pytest.raises(EngineError, match="checkpoint does not fit"):
        Network.from_spec(_clf_spec(), seed=3).fit(
            X[:100], y[:100], CLF_TRAINING, resume_from=saved[0]
        )
    with pytest.raises(EngineError, match="not a training checkpoint"):
        Network.from_spec(_clf_spec(), seed=3).fit(X, y, CLF_TRAINING, resume_from=b"garbage")


def test_divergence_names_the_epoch_and_skips_its_callback():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 3))
    Y = X @ rng.normal(size=(3, 2)) * 10
    spec = {
        "input_dim": 3,
        "layers": [{"units": 8, "activation": "relu"}, {"units": 2, "activation": "identity"}],
    }
    net = Network.from_spec(spec, seed=0)
    seen = []
    with pytest.raises(DivergenceError) as info:
        net.fit(
            X,
            Y,
            {"optimizer": {"name": "sgd", "learning_rate": 5.0}, "epochs": 50, "batch_size": 8},
            callback=seen.append,
        )
    err = info.value
    assert isinstance(err, EngineError)
    assert err.epoch >= 1 and not np.isfinite(err.loss)
    assert str(err).startswith(f"training diverged at epoch {err.epoch}: loss is ")
    assert [item["epoch"] for item in seen] == list(range(1, err.epoch))


def test_epoch_loss_is_the_mean_of_batch_losses():
    # A learning rate so small that every update underflows: all batches see the initial
    # weights, so the batch losses can be computed here with a plain NumPy forward pass.
    rng = np.random.default_rng(1)
    X = rng.normal(size=(10, 3))
    Y = rng.normal(size=(10, 2))
    spec = {
        "input_dim": 3,
        "layers": [{"units": 4, "activation": "tanh"}, {"units": 2, "activation": "identity"}],
    }
    net = Network.from_spec(spec, seed=0)
    w = net.weights
    history = net.fit(
        X,
        Y,
        {
            "optimizer": {"name": "sgd", "learning_rate": 1e-300},
            "epochs": 1,
            "batch_size": 4,
            "shuffle": False,
            "dtype": "float64",
        },
    )
    out = np.tanh(X @ w[0]["W"] + w[0]["b"]) @ w[1]["W"] + w[1]["b"]
    batch_losses = [np.mean((out[s : s + 4] - Y[s : s + 4]) ** 2) for s in (0, 4, 8)]
    assert history[0]["loss"] == pytest.approx(np.mean(batch_losses), rel=1e-12)
    for after, before in zip(net.weights, w, strict=True):
        np.testing.assert_allclose(after["W"], before["W"], rtol=1e-15, atol=1e-290)
        np.testing.assert_allclose(after["b"], before["b"], rtol=1e-15, atol=1e-290)


def test_callback_items_and_order():
    X, y = _classification_data()
    net = Network.from_spec(_clf_spec(), seed=0)
    events = []
    stops = iter([False, False, True])
    history = net.fit(
        X,
        y,
        {**CLF_TRAINING, "epochs": 10},
        callback=lambda item: events.append(("callback", item["epoch"])),
        checkpoint_every=1,
        on_checkpoint=lambda e, _: events.append(("checkpoint", e)),
        should_stop=lambda: events.append(("should_stop", None)) or next(stops),
    )
    assert len(history) == 3
    assert events[:3] == [("callback", 1), ("checkpoint", 1), ("should_stop", None)]
    item = history[-1]
    assert set(item) == {"epoch", "loss", "val_loss", "accuracy", "val_accuracy", "elapsed_s"}
    assert all(isinstance(v, float) for k, v in item.items() if k != "epoch")
    assert 0 <= item["accuracy"] <= 1 and 0 <= item["val_accuracy"] <= 1
    assert history[0]["elapsed_s"] <= history[1]["elapsed_s"] <= history[2]["elapsed_s"]

    reg = Network.from_spec({"input_dim": 5, "layers": [{"units": 2, "activation": "identity"}]})
    item = reg.fit(X, np.ones((len(X), 2)), {"epochs": 1, "standardize": True})[0]
    assert set(item) == {"epoch", "loss", "elapsed_s"}


def test_validation_split_metrics_match_an_independent_evaluation():
    # Documented split: the validation rows are the first int(split * n) entries of
    # default_rng(seed).permutation(n); standardisation is fitted on the other rows.
    X, y = _classification_data(n=100)
    cfg = {**CLF_TRAINING, "epochs": 3, "validation_split": 0.25, "dtype": "float64"}
    net = Network.from_spec(_clf_spec(), seed=0)
    history = net.fit(X, y, cfg)
    perm = np.random.default_rng(cfg["seed"]).permutation(100)
    val, train = perm[:25], perm[25:]
    mean, std = X[train].mean(axis=0), X[train].std(axis=0)
    np.testing.assert_allclose(net.x_mean, mean, rtol=1e-12)

    a = (X[val] - mean) / std
    w = net.weights
    a = np.maximum(a @ w[0]["W"] + w[0]["b"], 0)
    a = np.tanh(a @ w[1]["W"] + w[1]["b"])
    z = a @ w[2]["W"] + w[2]["b"]
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    assert history[-1]["val_loss"] == pytest.approx(
        -np.mean(log_p[np.arange(25), y[val]]), rel=1e-10
    )
    assert history[-1]["val_accuracy"] == np.mean(np.argmax(z, axis=1) == y[val])


def test_standardisation_is_fitted_on_the_data_and_applied_at_predict():
    X, y = _classification_data()
    net = Network.from_spec(_clf_spec(), seed=0)
    net.fit(X, y, {**CLF_TRAINING, "validation_split": 0.0, "epochs": 2})
    # Statistics of the data as trained on: cast to the training dtype (float32) first.
    X32 = X.astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(net.x_mean, X32.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(net.x_std, X32.std(axis=0), rtol=1e-12)
    Z = (X32 - X32.mean(axis=0)) / X32.std(axis=0)
    np.testing.assert_allclose(net.predict(X), net.forward(Z), rtol=1e-5, atol=1e-6)
    assert net.predict(X).dtype == np.float32


def test_early_stopping_restores_the_best_weights():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(40, 4))
    Y = rng.normal(size=(40, 1))  # pure noise: validation loss soon rises
    spec = {
        "input_dim": 4,
        "layers": [{"units": 32, "activation": "relu"}, {"units": 1, "activation": "identity"}],
    }
    net = Network.from_spec(spec, seed=0)
    snapshots = {}
    history = net.fit(
        X,
        Y,
        {
            "optimizer": {"name": "adam", "learning_rate": 0.05},
            "epochs": 200,
            "batch_size": 8,
            "validation_split": 0.5,
            "early_stopping": {"patience": 3},
        },
        callback=lambda item: snapshots.__setitem__(item["epoch"], net.weights),
    )
    val = [item["val_loss"] for item in history]
    best = int(np.argmin(val)) + 1
    assert len(history) == best + 3 < 200
    assert _weights_equal(net.weights, snapshots[best])
    assert net.weights_epoch == best  # and it says which epoch it kept


def test_weights_epoch_is_the_last_epoch_without_a_restore():
    X, y = _classification_data()
    net = Network.from_spec(_clf_spec(), seed=0)
    net.fit(X, y, {**CLF_TRAINING, "epochs": 7})
    assert net.weights_epoch == 7
    # Stopped from outside after epoch 3: the weights are epoch 3's.
    net = Network.from_spec(_clf_spec(), seed=0)
    seen: list[int] = []
    net.fit(X, y, {**CLF_TRAINING, "epochs": 7}, callback=lambda i: seen.append(i["epoch"]),
            should_stop=lambda: len(seen) == 3)  # fmt: skip
    assert net.weights_epoch == 3


def test_class_index_targets_equal_one_hot_targets():
    X, y = _classification_data()
    a = Network.from_spec(_clf_spec(), seed=0)
    b = Network.from_spec(_clf_spec(), seed=0)
    a.fit(X, y, CLF_TRAINING)
    b.fit(X, np.eye(3)[y], CLF_TRAINING)
    assert _weights_equal(a.weights, b.weights)


@pytest.mark.parametrize(
    ("X", "Y", "message"),
    [
        (np.zeros((10, 4)), np.zeros(10, int), r"X must have shape \(n_samples, 5\)"),
        (np.zeros((10, 5)), np.zeros((9, 3)), r"Y must have shape \(10, 3\)"),
        (np.zeros((10, 5)), np.full(10, 3), r"holds 1 class \(3\), but the output layer has 3"),
        (np.zeros((0, 5)), np.zeros(0, int), "no samples"),
    ],
)
def test_bad_arrays_raise_engine_error(X, Y, message):
    net = Network.from_spec(_clf_spec(), seed=0)
    with pytest.raises(EngineError, match=message):
        net.fit(X, Y, CLF_TRAINING)


def test_non_finite_input_names_the_row():
    X, y = _classification_data()
    X[17, 2] = np.nan
    with pytest.raises(EngineError, match="X has a NaN or infinite value in row 17"):
        Network.from_spec(_clf_spec(), seed=0).fit(X, y, CLF_TRAINING)


def test_incompatible_loss_is_an_engine_error():
    X, y = _classification_data()
    with pytest.raises(EngineError, match="binary_crossentropy needs a sigmoid"):
        Network.from_spec(_clf_spec(), seed=0).fit(X, y, {"loss": "binary_crossentropy"})


def test_batch_larger_than_dataset_and_ragged_last_batch():
    X, y = _classification_data(n=37)
    for batch_size in (1, 10, 37, 500):
        net = Network.from_spec(_clf_spec(), seed=0)
        history = net.fit(X, y, {**CLF_TRAINING, "validation_split": 0.0, "batch_size": batch_size})
        assert np.isfinite(history[-1]["loss"])


def test_an_infinite_validation_loss_is_a_divergence_naming_val_loss() -> None:
    # The validation rows are the first of the seeded permutation (the documented split).
    seed = 4
    val_row = int(np.random.default_rng(seed).permutation(2)[0])
    X = np.array([[0.5], [0.5]], dtype=np.float64)
    X[val_row] = 1e20  # finite, but its squared error overflows float32
    Y = np.zeros((2, 1))
    net = Network.from_spec({"input_dim": 1, "layers": [{"units": 1, "activation": "identity"}],
                             "initial_weights": [{"W": [[1.0]], "b": [0.0]}]})  # fmt: skip
    config = {
        "loss": "mse", "optimizer": {"name": "sgd", "learning_rate": 0.01}, "epochs": 3,
        "batch_size": 1, "validation_split": 0.5, "seed": seed, "dtype": "float32",
    }  # fmt: skip
    with pytest.raises(DivergenceError, match="epoch 1: val_loss is inf") as info:
        net.fit(X, Y, config)
    assert info.value.epoch == 1 and info.value.which == "val_loss"


@pytest.mark.parametrize("n", [10, 11, 13, 120])
@pytest.mark.parametrize(
    "split",
    [{"validation_split": 0.0}, {"validation_split": 0.25}, {"validation_split": 0.01}]
    + [
        {"validation_split": 0.0, "validation_fold": {"k": k, "index": i}}
        for k in (3, 4)
        for i in range(k)
    ],
)
def test_validation_size_is_the_number_of_rows_fit_holds_out(n: int, split: dict) -> None:
    # The service counts trained samples with validation_size; the reference is the rows
    # that fit actually evaluated: the first epoch's val_loss is their mean, so count the
    # rows by reproducing the split's permutation independently.
    from core.engine.training import validation_size
    from core.spec import TrainingConfig

    cfg = TrainingConfig.model_validate({**CLF_TRAINING, "epochs": 1, **split})
    rng = np.random.default_rng(cfg.seed)
    if "validation_fold" in split:
        fold = split["validation_fold"]
        expected = len(np.array_split(rng.permutation(n), fold["k"])[fold["index"]])
    elif split["validation_split"] > 0:
        expected = max(1, int(split["validation_split"] * n))
    else:
        expected = 0
    assert validation_size(n, cfg) == expected
    X, y = _classification_data(n=n)
    seen: list[dict] = []
    Network.from_spec(_clf_spec(), seed=0).fit(X, y, cfg, callback=seen.append)
    assert ("val_loss" in seen[0]) == (expected > 0)


def test_a_second_fit_keeps_the_standardisation_the_weights_were_learned_with():
    X, y = _classification_data()
    net = Network.from_spec(_clf_spec(), seed=0)
    net.fit(X, y, {**CLF_TRAINING, "epochs": 2})
    mean, std = net.x_mean.copy(), net.x_std.copy()
    np.testing.assert_allclose(
        mean, X[np.sort(np.random.default_rng(5).permutation(len(X))[24:])].mean(axis=0)
    )
    net.fit(X * 10 + 3, y, {**CLF_TRAINING, "epochs": 2})  # other scales: not refitted
    np.testing.assert_array_equal(net.x_mean, mean)
    np.testing.assert_array_equal(net.x_std, std)


def test_a_test_split_holds_rows_out_of_training_and_validation():
    from core.engine.training import held_out_rows
    from core.spec import TrainingConfig

    X, y = _classification_data(n=120)
    cfg = {**CLF_TRAINING, "test_split": 0.25}
    kept, held_out = held_out_rows(120, TrainingConfig.model_validate(cfg))
    assert held_out.size == 30 and kept.size == 90
    assert sorted(set(kept) | set(held_out)) == list(range(120))  # disjoint, complete
    # Training with the split is training on the kept rows alone, bit for bit.
    with_split = Network.from_spec(_clf_spec(), seed=0)
    history = with_split.fit(X, y, cfg)
    alone = Network.from_spec(_clf_spec(), seed=0)
    expected = alone.fit(X[kept], y[kept], CLF_TRAINING)
    assert _weights_equal(with_split.weights, alone.weights)
    assert _strip_time(history) == _strip_time(expected)
    # Without a test split nothing is held out, and the same seed holds out the same rows.
    assert held_out_rows(120, TrainingConfig.model_validate(CLF_TRAINING))[1].size == 0
    again = held_out_rows(120, TrainingConfig.model_validate(cfg))[1]
    np.testing.assert_array_equal(again, held_out)
