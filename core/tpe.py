"""Model-based search: Optuna's TPE sampler in ask-and-tell mode, rebuilt from stored trials.

A ``tpe`` sweep keeps no study in any process. Each time one of its slots frees, whichever
process dispatches the sweep (the API, the worker whose trial ended, a reclaimer) rebuilds
an in-memory Optuna study from what the database holds — every configuration created so
far, in trial order, as finished (its metric), pruned (its last value and epoch), failed,
or still running — restores the sampler's random state saved after the previous
suggestion, and asks it for one more configuration (:func:`suggest`). Running trials are
in the study too, so TPE's *constant liar* keeps parallel suggestions apart: trials still
run ``max_concurrent`` at a time across workers.

Rebuilt this way the study makes exactly the suggestion an uninterrupted in-memory study
would, fed the same results in the same order with the same seed (tests/core/test_tpe.py
checks it): the sampler's only state beyond the trials is its two random generators
(TPE's own, and the random sampler it uses for the first ``n_startup_trials``), which
:func:`suggest` returns after every suggestion for the caller to store.

Parameters map to Optuna's distributions: ``log_uniform`` → ``FloatDistribution(log=True)``,
``uniform`` → ``FloatDistribution``, ``int_uniform`` → ``IntDistribution``, a list or a
``choice`` → ``CategoricalDistribution`` over the indexes of its values (values may be any
JSON, e.g. optimizer objects). No database here: ``core/runs/sweeps.py`` reads and writes.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from core.sweeps import Choice, IntUniform, LogUniform, SearchSpace, Uniform

if TYPE_CHECKING:
    import optuna

DEFAULT_STARTUP_TRIALS = 10

TrialState = Literal["complete", "pruned", "failed", "running"]


@dataclass(frozen=True)
class Observed:
    """One configuration of the sweep as the study sees it: its parameters (our values,
    dotted path → value), its state, and for ``complete`` its metric, for ``pruned`` its
    last metric and the epoch of it (``step``)."""

    params: dict[str, Any]
    state: TrialState
    value: float | None = None
    step: int | None = None


def _values(spec: Any) -> list[Any] | None:
    """The values of a list or ``choice`` parameter, else ``None``."""
    if isinstance(spec, list):
        return spec
    if isinstance(spec, Choice):
        return spec.values
    return None


def distributions(space: SearchSpace) -> dict[str, optuna.distributions.BaseDistribution]:
    """Optuna's distribution of each parameter, in the space's order."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    result: dict[str, optuna.distributions.BaseDistribution] = {}
    for path, spec in space.parameters.items():
        values = _values(spec)
        if values is not None:
            result[path] = CategoricalDistribution(list(range(len(values))))
        elif isinstance(spec, LogUniform):
            result[path] = FloatDistribution(spec.low, spec.high, log=True)
        elif isinstance(spec, Uniform):
            result[path] = FloatDistribution(spec.low, spec.high)
        elif isinstance(spec, IntUniform):
            result[path] = IntDistribution(spec.low, spec.high)
        else:  # pragma: no cover - SearchSpace admits nothing else
            raise TypeError(f"{path}: unknown distribution {spec!r}")
    return result


def to_optuna(space: SearchSpace, params: dict[str, Any]) -> dict[str, Any]:
    """Our parameter values as Optuna's: a listed value becomes its index."""
    result: dict[str, Any] = {}
    for path, spec in space.parameters.items():
        value = params[path]
        values = _values(spec)
        if values is None:
            result[path] = value
            continue
        for index, candidate in enumerate(values):
            if candidate == value:
                result[path] = index
                break
        else:
            raise ValueError(f"{path}: {value!r} is not one of the listed values")
    return result


def from_optuna(space: SearchSpace, params: dict[str, Any]) -> dict[str, Any]:
    """Optuna's suggestion as our parameter values (an index becomes its listed value)."""
    result: dict[str, Any] = {}
    for path, spec in space.parameters.items():
        values = _values(spec)
        value = params[path]
        if values is not None:
            result[path] = copy.deepcopy(values[int(value)])
        elif isinstance(spec, IntUniform):
            result[path] = int(value)
        else:
            result[path] = float(value)
    return result


def make_sampler(space: SearchSpace) -> optuna.samplers.TPESampler:
    """The sampler of a tpe sweep: seeded by ``search.seed``, ``n_startup_trials`` random
    configurations first, otherwise Optuna's defaults (multivariate TPE with a constant
    liar for the trials still running)."""
    import optuna

    n_startup = space.n_startup_trials
    return optuna.samplers.TPESampler(
        seed=space.seed,
        n_startup_trials=DEFAULT_STARTUP_TRIALS if n_startup is None else n_startup,
    )


def _rngs(sampler: optuna.samplers.TPESampler) -> list[Any]:
    """The sampler's random generators (``numpy.random.RandomState``): TPE's own and that of
    its random sampler for the start-up trials. Private attributes of Optuna 5 (pinned
    below 6 in pyproject.toml; tests/core/test_tpe.py would notice a change)."""
    return [sampler._rng.rng, sampler._random_sampler._rng.rng]


def sampler_state(sampler: optuna.samplers.TPESampler) -> dict[str, Any]:
    """The sampler's random state as JSON."""
    states = []
    for rng in _rngs(sampler):
        name, keys, pos, has_gauss, cached = rng.get_state(legacy=True)
        states.append([name, [int(k) for k in keys], int(pos), int(has_gauss), float(cached)])
    return {"rngs": states}


def restore_state(sampler: optuna.samplers.TPESampler, state: dict[str, Any]) -> None:
    """Put back a random state saved by :func:`sampler_state`."""
    import numpy as np

    for rng, (name, keys, pos, has_gauss, cached) in zip(
        _rngs(sampler), state["rngs"], strict=True
    ):
        rng.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def _frozen(
    space: SearchSpace,
    dists: dict[str, optuna.distributions.BaseDistribution],
    trial: Observed,
) -> optuna.trial.FrozenTrial:
    import optuna

    params = to_optuna(space, trial.params)
    value = trial.value
    if value is not None and not math.isfinite(value):
        value = None
    if trial.state == "complete" and value is not None:
        return optuna.trial.create_trial(
            params=params, distributions=dists, value=value, state=optuna.trial.TrialState.COMPLETE
        )
    if trial.state == "pruned" and value is not None:
        step = trial.step or 0
        return optuna.trial.create_trial(
            params=params, distributions=dists, value=value,
            intermediate_values={step: value}, state=optuna.trial.TrialState.PRUNED,
        )  # fmt: skip
    if trial.state == "running":
        return optuna.trial.create_trial(
            params=params, distributions=dists, state=optuna.trial.TrialState.RUNNING
        )
    # Failed, or ended without a value: TPE leaves it out of its model.
    return optuna.trial.create_trial(
        params=params, distributions=dists, state=optuna.trial.TrialState.FAIL
    )


def rebuild(
    space: SearchSpace, mode: Literal["min", "max"], observed: Sequence[Observed],
    state: dict[str, Any] | None,
) -> tuple[optuna.Study, optuna.samplers.TPESampler]:  # fmt: skip
    """An in-memory study holding ``observed`` in order, its sampler at ``state``."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = make_sampler(space)
    if state is not None:
        restore_state(sampler, state)
    study = optuna.create_study(
        direction="minimize" if mode == "min" else "maximize", sampler=sampler
    )
    dists = distributions(space)
    for trial in observed:
        study.add_trial(_frozen(space, dists, trial))
    return study, sampler


def suggest(
    space: SearchSpace,
    mode: Literal["min", "max"],
    observed: Sequence[Observed],
    state: dict[str, Any] | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The next configuration of a tpe sweep, and the sampler's state to store for the one
    after it. ``observed``: every configuration created so far, in trial order; ``state``:
    what the previous call returned (``None`` for the first suggestion)."""
    study, sampler = rebuild(space, mode, observed, state)
    trial = study.ask(distributions(space))
    return from_optuna(space, trial.params), sampler_state(sampler)
