"""TPE search (core/tpe.py): the study rebuilt from stored trials makes the suggestions of
an uninterrupted in-memory Optuna study fed the same results with the same seed, with
trials finishing out of order, pruned, failed and still running in between."""

from __future__ import annotations

import collections
import math
from typing import Any

import optuna
import pytest

from core.sweeps import SearchSpace
from core.tpe import Observed, distributions, from_optuna, make_sampler, suggest, to_optuna

SPACE = {
    "type": "tpe",
    "n_trials": 40,
    "seed": 3,
    "n_startup_trials": 5,
    "parameters": {
        "training.optimizer.learning_rate": {"distribution": "log_uniform", "low": 1e-4,
                                             "high": 1.0},
        "network.layers.0.units": {"distribution": "int_uniform", "low": 2, "high": 64},
        "training.optimizer.momentum": {"distribution": "uniform", "low": 0.0, "high": 0.9},
        "training.optimizer": [{"name": "adam"}, "sgd"],
        "training.batch_size": {"distribution": "choice", "values": [8, 16, 32]},
    },
}  # fmt: skip


def _objective(p: dict[str, Any]) -> float:
    """A smooth function of the parameters with its minimum near lr 0.01, 20 units, adam."""
    return (
        (math.log10(p["training.optimizer.learning_rate"]) + 2) ** 2
        + abs(p["network.layers.0.units"] - 20) / 10
        + (0.5 if p["training.optimizer"] == "sgd" else 0.0)
        + p["training.optimizer.momentum"] / 10
        + p["training.batch_size"] / 100
    )


@pytest.mark.parametrize(("direction", "sign"), [("min", 1.0), ("max", -1.0)])
def test_the_rebuilt_study_suggests_what_an_uninterrupted_one_does(
    direction: str, sign: float
) -> None:
    space = SearchSpace.model_validate(SPACE)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    reference = optuna.create_study(
        direction="minimize" if direction == "min" else "maximize", sampler=make_sampler(space)
    )
    dists = distributions(space)
    observed: list[Observed] = []
    state: dict[str, Any] | None = None
    in_flight: collections.deque[tuple[optuna.trial.Trial, int]] = collections.deque()
    for step in range(30):
        while len(in_flight) < 3:  # three workers: three trials in flight
            trial = reference.ask(dists)
            mine, state = suggest(space, direction, observed, state)  # type: ignore[arg-type]
            assert from_optuna(space, trial.params) == mine, f"suggestion {len(observed)}"
            assert to_optuna(space, mine) == trial.params
            observed.append(Observed(mine, "running"))
            in_flight.append((trial, len(observed) - 1))
        # The second oldest finishes first now and then: results arrive out of order.
        if step % 4 == 1:
            in_flight.rotate(-1)
        trial, index = in_flight.popleft()
        params = observed[index].params
        value = sign * _objective(params)
        if step % 7 == 3:
            reference.tell(trial, state=optuna.trial.TrialState.FAIL)
            observed[index] = Observed(params, "failed")
        elif step % 5 == 2:
            trial.report(value + 1.0, 4)
            reference.tell(trial, state=optuna.trial.TrialState.PRUNED)
            observed[index] = Observed(params, "pruned", value + 1.0, 4)
        else:
            reference.tell(trial, value)
            observed[index] = Observed(params, "complete", value)
    assert len(observed) == 32
    assert state is not None and len(state["rngs"]) == 2


def test_tpe_finds_better_settings_than_its_random_start_up() -> None:
    """After its start-up trials TPE concentrates where the objective is low."""
    space = SearchSpace.model_validate({**SPACE, "n_startup_trials": 8})
    observed: list[Observed] = []
    state = None
    for _ in range(40):
        params, state = suggest(space, "min", observed, state)
        observed.append(Observed(params, "complete", _objective(params)))
    startup = [o.value for o in observed[:8]]
    modelled = [o.value for o in observed[8:]]
    assert all(v is not None for v in startup + modelled)
    assert sorted(modelled)[len(modelled) // 2] < sorted(startup)[len(startup) // 2]  # type: ignore[operator]


def test_listed_values_of_any_json_map_to_indexes_and_back() -> None:
    space = SearchSpace.model_validate(SPACE)
    params = {"training.optimizer.learning_rate": 0.01, "network.layers.0.units": 7,
              "training.optimizer.momentum": 0.5, "training.optimizer": {"name": "adam"},
              "training.batch_size": 32}  # fmt: skip
    internal = to_optuna(space, params)
    assert internal["training.optimizer"] == 0 and internal["training.batch_size"] == 2
    assert from_optuna(space, internal) == params
    with pytest.raises(ValueError, match="not one of the listed values"):
        to_optuna(space, {**params, "training.batch_size": 64})
