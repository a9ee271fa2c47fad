"""The pure part of sweeps: search-space expansion, trial requests, ASHA, leaderboards; the
job-size queue rule; and the engine's k-fold validation split."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from core.engine import Network
from core.queues import (
    all_queues,
    celery_priority,
    count_parameters,
    job_size,
    queue_kind,
    queue_name,
)
from core.spec import NetworkSpec, TrainingConfig
from core.sweeps import (
    CrossValidation,
    Pruning,
    SearchSpace,
    SpaceError,
    apply,
    asha_cutoff,
    asha_keep,
    asha_kept,
    corners,
    expand,
    grid_size,
    leaderboard,
    mean_std,
    rungs,
)

BASE = {
    "dataset_id": "d",
    "network": {"input_dim": 2, "layers": [{"units": 4, "activation": "tanh"},
                                           {"units": 1, "activation": "identity"}]},
    "training": {"optimizer": {"name": "sgd", "learning_rate": 0.1}, "epochs": 5},
}  # fmt: skip


def test_grid_is_the_product_first_parameter_slowest() -> None:
    space = SearchSpace.model_validate(
        {"type": "grid", "parameters": {"training.optimizer.learning_rate": [0.1, 0.01],
                                        "network.layers.0.units": [8, 16, 32]}}
    )  # fmt: skip
    trials = expand(space)
    assert grid_size(space) == len(trials) == 6
    assert trials[0] == {"training.optimizer.learning_rate": 0.1, "network.layers.0.units": 8}
    assert [t["network.layers.0.units"] for t in trials] == [8, 16, 32, 8, 16, 32]
    assert [t["training.optimizer.learning_rate"] for t in trials] == [0.1] * 3 + [0.01] * 3


def test_random_search_is_reproducible_from_its_seed_and_respects_bounds() -> None:
    spec = {
        "type": "random",
        "n_trials": 50,
        "seed": 7,
        "parameters": {
            "training.optimizer.learning_rate": {"distribution": "log_uniform",
                                                 "low": 1e-4, "high": 1e-1},
            "training.optimizer.momentum": {"distribution": "uniform", "low": 0.0, "high": 0.9},
            "network.layers.0.units": {"distribution": "int_uniform", "low": 2, "high": 5},
            "network.layers.0.activation": ["tanh", "relu"],
            "training.batch_size": {"distribution": "choice", "values": [8, 16]},
        },
    }  # fmt: skip
    a = expand(SearchSpace.model_validate(spec))
    b = expand(SearchSpace.model_validate(spec))
    c = expand(SearchSpace.model_validate({**spec, "seed": 8}))
    assert a == b and a != c and len(a) == 50
    lrs = np.array([t["training.optimizer.learning_rate"] for t in a])
    assert lrs.min() >= 1e-4 and lrs.max() <= 1e-1
    # Log-uniform: about as many draws below 1e-2.5 as above (uniform would put ~97% above).
    assert 10 <= int((lrs < 10**-2.5).sum()) <= 40
    assert {t["network.layers.0.units"] for t in a} == {2, 3, 4, 5}
    assert {t["network.layers.0.activation"] for t in a} == {"tanh", "relu"}
    assert {t["training.batch_size"] for t in a} == {8, 16}
    assert all(0.0 <= t["training.optimizer.momentum"] <= 0.9 for t in a)


@pytest.mark.parametrize(
    ("space", "needle"),
    [
        ({"type": "grid", "parameters": {"dataset_id": [1]}}, "starting with 'network.'"),
        ({"type": "grid", "parameters": {"training.epochs": []}}, "empty"),
        ({"type": "grid", "parameters": {"training.optimizer.learning_rate":
          {"distribution": "uniform", "low": 0, "high": 1}}}, "grid search takes a list"),
        ({"type": "random", "parameters": {"training.optimizer.learning_rate":
          {"distribution": "log_uniform", "low": 0, "high": 1}}}, "greater than 0"),
        ({"type": "random", "parameters": {"training.epochs":
          {"distribution": "int_uniform", "low": 5, "high": 1}}}, "high must be >= low"),
        ({"type": "grid", "n_trials": 3, "parameters": {"training.epochs": [1]}}, "n_trials"),
    ],
)  # fmt: skip
def test_bad_spaces_are_rejected_naming_the_parameter(space: dict, needle: str) -> None:
    with pytest.raises(ValidationError, match=needle):
        SearchSpace.model_validate(space)


def test_apply_writes_dotted_paths_into_a_copy() -> None:
    request = apply(BASE, {"network.layers.0.units": 32, "training.optimizer.momentum": 0.5,
                           "training.early_stopping.patience": 3})  # fmt: skip
    assert request["network"]["layers"][0]["units"] == 32
    assert request["training"]["optimizer"] == {"name": "sgd", "learning_rate": 0.1,
                                                "momentum": 0.5}  # fmt: skip
    assert request["training"]["early_stopping"] == {"patience": 3}
    assert BASE["network"]["layers"][0]["units"] == 4  # the base is untouched
    with pytest.raises(SpaceError, match=r"network.layers.5.*has 2 items"):
        apply(BASE, {"network.layers.5.units": 3})
    with pytest.raises(SpaceError, match="single value"):
        apply(BASE, {"training.epochs.x": 3})


def test_rungs_are_geometric_below_the_last_epoch() -> None:
    assert rungs(1, 3, 30) == [1, 3, 9, 27]
    assert rungs(2, 2, 16) == [2, 4, 8]
    assert rungs(5, 3, 5) == []


def test_asha_keeps_the_top_fraction_and_nobody_on_a_free_pass() -> None:
    # Fewer than eta trials at the rung: none goes on yet (they wait for the others) ...
    assert not asha_keep(0.1, [0.1, 100.0], eta=3, mode="min")
    assert asha_cutoff([0.1, 100.0], eta=3, mode="min") is None
    # ... unless nothing else can reach the rung: then the best one goes on.
    assert asha_keep(0.1, [0.1, 100.0], eta=3, mode="min", final=True)
    assert not asha_keep(100.0, [0.1, 100.0], eta=3, mode="min", final=True)
    assert [asha_kept(n, 3) for n in range(7)] == [0, 0, 0, 1, 1, 1, 2]
    assert [asha_kept(n, 3, final=True) for n in range(4)] == [0, 1, 1, 1]
    # Nine trials, eta 3: the best three continue.
    values = [float(v) for v in range(1, 10)]
    kept = [v for v in values if asha_keep(v, values, eta=3, mode="min")]
    assert kept == [1.0, 2.0, 3.0]
    # Accuracies: higher is better.
    acc = [0.5, 0.9, 0.7, 0.6]
    assert [v for v in acc if asha_keep(v, acc, eta=2, mode="max")] == [0.9, 0.7]
    # A diverged (NaN) trial is the worst.
    assert not asha_keep(math.nan, [math.nan, 1.0, 2.0], eta=2, mode="min")
    # The first of two when eta=2: only the better continues.
    assert asha_keep(1.0, [1.0, 2.0], eta=2, mode="min")
    assert not asha_keep(2.0, [1.0, 2.0], eta=2, mode="min")


def test_the_iris_grid_no_longer_lets_its_first_trials_through_unjudged() -> None:
    """The documented iris sweep (lr 0.001/0.01/0.1 x 16/64 units, eta 3, max_concurrent 2):
    its first two trials (lr 0.001) reach every rung before anyone else, so the old rule —
    everyone continues while fewer than eta trials reached the rung — never compared them
    with anything, and they trained to the end at val_accuracy 0.53 at rung 3 while trials
    at 0.80 there were pruned. Now a trial alone at a rung waits there."""
    at_rung_3 = {"lr 0.001 x 16": 0.533, "lr 0.001 x 64": 0.6}  # the first two, first there
    assert not asha_keep(0.533, list(at_rung_3.values()), eta=3, mode="max")
    assert not asha_keep(0.6, list(at_rung_3.values()), eta=3, mode="max")
    # Once the later trials are there (0.8 for three of them), lr 0.001 is out, 0.8 goes on.
    everyone = [0.533, 0.6, 0.833, 0.8, 0.8, 0.8]
    assert asha_cutoff(everyone, eta=3, mode="max", final=True) == 0.8
    assert not asha_keep(0.533, everyone, eta=3, mode="max", final=True)
    assert asha_keep(0.833, everyone, eta=3, mode="max")


def test_corners_cover_every_extreme_and_listed_value() -> None:
    space = SearchSpace.model_validate({"type": "tpe", "parameters": {
        "training.optimizer.learning_rate": {"distribution": "log_uniform", "low": 1e-4,
                                             "high": 1e-1},
        "network.layers.0.units": {"distribution": "int_uniform", "low": 4, "high": 64},
        "network.layers.0.activation": ["tanh", "relu", "sigmoid"]}})  # fmt: skip
    found = corners(space)
    assert len(found) == 2 * 2 * 3
    assert {c["network.layers.0.units"] for c in found} == {4, 64}
    assert {c["network.layers.0.activation"] for c in found} == {"tanh", "relu", "sigmoid"}
    # Too many combinations: each parameter's extremes, the others low, and all-high.
    few = corners(space, limit=4)
    assert few[0] == {"training.optimizer.learning_rate": 1e-4, "network.layers.0.units": 4,
                      "network.layers.0.activation": "tanh"}  # fmt: skip
    assert few[1]["network.layers.0.units"] == 64 and len(few) == 2 + 1 + 1 + 2


def _trial(i: int, value: float | None, status: str = "succeeded", fold: int | None = None
           ) -> dict:  # fmt: skip
    return {"run_id": f"r{i}-{fold}", "trial": i, "fold": fold, "params": {"p": i},
            "status": status, "value": value, "epoch": 5, "stop_reason": None}  # fmt: skip


def test_leaderboard_is_best_first_with_finished_trials_ahead() -> None:
    trials = [_trial(0, 0.5), _trial(1, 0.1), _trial(2, 0.05, "cancelled"), _trial(3, None),
              _trial(4, 0.3, "running")]  # fmt: skip
    board = leaderboard(trials, "val_loss")
    # Succeeded best first (missing value last), then running, then cancelled.
    assert [e["trial"] for e in board] == [1, 0, 3, 4, 2]
    assert board[0]["val_loss"] == 0.1 and board[0]["params"] == {"p": 1}
    acc = leaderboard([_trial(0, 0.5), _trial(1, 0.9)], "val_accuracy")
    assert [e["val_accuracy"] for e in acc] == [0.9, 0.5]


def test_leaderboard_with_folds_reports_mean_and_std_per_configuration() -> None:
    trials = [_trial(0, v, fold=f) for f, v in enumerate([1.0, 2.0, 3.0])]
    trials += [_trial(1, v, fold=f) for f, v in enumerate([0.5, 0.5, 0.8])]
    board = leaderboard(trials, "val_loss", folds=3)
    assert [e["trial"] for e in board] == [1, 0]
    assert board[0]["val_loss"] == pytest.approx(0.6)
    assert board[1]["val_loss"] == pytest.approx(2.0) and board[1]["val_loss_std"] == 1.0
    assert board[1]["run_ids"] == ["r0-0", "r0-1", "r0-2"] and board[1]["folds"] == 3
    assert mean_std([]) == (None, None) and mean_std([2.0]) == (2.0, 0.0)


def test_job_size_and_queues() -> None:
    net = NetworkSpec.model_validate(BASE["network"])
    assert count_parameters(net) == (2 + 1) * 4 + (4 + 1) * 1 == 17
    assert job_size(17, 100, 10) == 17_000
    assert queue_kind(17_000, threshold=17_001) == "small"
    assert queue_kind(17_000, threshold=17_000) == "large"
    assert queue_name("small", "bp") == "bp.small" and queue_name(None, "bp") == "bp"
    assert queue_name("default", "bp") == "bp" and queue_name("custom", "bp") == "custom"
    assert all_queues("bp") == ["bp", "bp.small", "bp.large"]
    assert [celery_priority(p) for p in (0, 5, 9, 12)] == [9, 4, 0, 0]


def test_validation_fold_holds_out_one_fold_of_a_seeded_permutation() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(10, 2))
    Y = X @ np.array([[1.0], [-2.0]])
    spec = {"input_dim": 2, "layers": [{"units": 1, "activation": "identity"}]}
    val_losses = []
    for index in range(3):
        net = Network.from_spec(spec, seed=1)
        before = net.predict(X)
        training = {"epochs": 1, "batch_size": 10, "seed": 4, "dtype": "float64",
                    "optimizer": {"name": "sgd", "learning_rate": 1e-12},
                    "validation_fold": {"k": 3, "index": index}}  # fmt: skip
        history = net.fit(X, Y, training)
        fold = np.sort(np.array_split(np.random.default_rng(4).permutation(10), 3)[index])
        expected = float(np.mean((before[fold] - Y[fold]) ** 2))
        assert history[0]["val_loss"] == pytest.approx(expected, rel=1e-9)
        val_losses.append(history[0]["val_loss"])
    assert len(set(val_losses)) == 3
    with pytest.raises(ValidationError, match="validation_fold"):
        TrainingConfig.model_validate({"validation_split": 0.2,
                                       "validation_fold": {"k": 3, "index": 0}})  # fmt: skip
    with pytest.raises(ValidationError, match="below k=3"):
        TrainingConfig.model_validate({"validation_fold": {"k": 3, "index": 3}})


def test_a_sweep_over_the_default_optimizer_needs_no_optimizer_in_the_base() -> None:
    """The base trains with the default optimizer (sgd): its learning rate can be swept."""
    base = {"dataset_id": "d", "network": BASE["network"], "training": {"epochs": 5}}
    space = SearchSpace.model_validate(
        {"type": "grid", "parameters": {"training.optimizer.learning_rate": [0.5, 0.05]}}
    )
    rates = []
    for params in expand(space):
        request = apply(base, params)
        cfg = TrainingConfig.model_validate(request["training"])
        assert cfg.optimizer.name == "sgd" and cfg.epochs == 5
        rates.append(cfg.optimizer.learning_rate)
    assert rates == [0.5, 0.05]
    # No training at all in the base, and a swept optimizer name beside the rate: both work.
    request = apply({"network": BASE["network"]}, {"training.optimizer.learning_rate": 0.2,
                                                   "training.optimizer.name": "adam"})  # fmt: skip
    cfg = TrainingConfig.model_validate(request["training"])
    assert (cfg.optimizer.name, cfg.optimizer.learning_rate) == ("adam", 0.2)


@pytest.mark.parametrize(
    ("space", "loc"),
    [
        ({"type": "random", "n_trials": "3", "parameters": {"training.epochs": [1]}}, "n_trials"),
        ({"type": "random", "seed": True, "parameters": {"training.epochs": [1]}}, "seed"),
        (
            {"type": "random", "parameters": {"network.layers.0.units": {
                "distribution": "int_uniform", "low": "2", "high": 8}}},
            "int_uniform.low",
        ),
        (
            {"type": "random", "parameters": {"network.layers.0.units": {
                "distribution": "int_uniform", "low": 2, "high": 8.5}}},
            "int_uniform.high",
        ),
        (
            {"type": "random", "parameters": {"training.optimizer.learning_rate": {
                "distribution": "log_uniform", "low": "1e-4", "high": 0.1}}},
            "log_uniform.low",
        ),
        (
            {"type": "random", "parameters": {"training.validation_split": {
                "distribution": "uniform", "low": 0.0, "high": True}}},
            "uniform.high",
        ),
    ],
)  # fmt: skip
def test_search_space_numbers_are_strict(space: dict, loc: str) -> None:
    with pytest.raises(ValidationError) as info:
        SearchSpace.model_validate(space)
    locs = [".".join(str(p) for p in e["loc"]) for e in info.value.errors()]
    assert any(where == loc or where.endswith(f"].{loc}") for where in locs), locs


def test_pruning_and_cross_validation_numbers_are_strict() -> None:
    for model, data, loc in [
        (Pruning, {"min_epochs": "2"}, ("min_epochs",)),
        (Pruning, {"eta": 3.0}, ("eta",)),
        (CrossValidation, {"k": True}, ("k",)),
    ]:
        with pytest.raises(ValidationError) as info:
            model.model_validate(data)
        assert [e["loc"] for e in info.value.errors()] == [loc]
    assert Pruning.model_validate({"min_epochs": 2, "eta": 3}).eta == 3


def test_a_grid_value_of_the_wrong_type_fails_the_trial_that_holds_it() -> None:
    space = SearchSpace.model_validate(
        {"type": "grid", "parameters": {"training.epochs": [3, "10"]}}
    )
    first, second = (apply(BASE, params) for params in expand(space))
    assert TrainingConfig.model_validate(first["training"]).epochs == 3
    with pytest.raises(ValidationError) as info:
        TrainingConfig.model_validate(second["training"])
    assert [e["loc"] for e in info.value.errors()] == [("epochs",)]


def test_a_sweep_over_an_optimizer_given_by_name_alone() -> None:
    """``"optimizer": "adam"`` in the base, or as a swept value, is ``{"name": "adam"}``: a
    path below it (its learning rate) still works, in either order."""
    base = {**BASE, "training": {"optimizer": "adam", "epochs": 5}}
    space = SearchSpace.model_validate(
        {"type": "grid", "parameters": {"training.optimizer.learning_rate": [0.5, 0.05]}}
    )
    configs = [TrainingConfig.model_validate(apply(base, p)["training"]) for p in expand(space)]
    assert [(c.optimizer.name, c.optimizer.learning_rate) for c in configs] == [
        ("adam", 0.5),
        ("adam", 0.05),
    ]
    assert base["training"]["optimizer"] == "adam"  # the base itself is left as it was
    space = SearchSpace.model_validate(
        {"type": "grid", "parameters": {"training.optimizer": ["sgd", "rmsprop"],
                                        "training.optimizer.learning_rate": [0.2]}}
    )  # fmt: skip
    configs = [TrainingConfig.model_validate(apply(BASE, p)["training"]) for p in expand(space)]
    assert [(c.optimizer.name, c.optimizer.learning_rate) for c in configs] == [
        ("sgd", 0.2),
        ("rmsprop", 0.2),
    ]
    # A name alone as the swept value, with nothing below it.
    request = apply(BASE, {"training.optimizer": "adam"})
    assert TrainingConfig.model_validate(request["training"]).optimizer.name == "adam"


def test_a_misspelt_search_space_name_says_what_it_meant() -> None:
    with pytest.raises(ValidationError) as info:
        SearchSpace.model_validate({"type": "gird", "n_trails": 3,
                                    "parameters": {"training.epochs": [1]}})  # fmt: skip
    messages = {e["loc"]: e["msg"] for e in info.value.errors()}
    assert messages[("type",)].endswith("; did you mean 'grid'?")
    assert messages[("n_trails",)].endswith("; did you mean 'n_trials'?")
    with pytest.raises(ValidationError) as info:
        SearchSpace.model_validate({"type": "random", "parameters": {
            "training.optimizer.learning_rate": {"distribution": "loguniform", "low": 1e-4,
                                                 "high": 0.1}}})  # fmt: skip
    # Not a list either (the other form of a parameter); as a distribution, a near miss.
    assert [e["msg"].endswith("; did you mean 'log_uniform'?") for e in info.value.errors()
            ] == [False, True]  # fmt: skip
