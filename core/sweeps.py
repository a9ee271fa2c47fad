"""Hyperparameter sweeps, the pure part: search spaces, trial requests, ASHA, leaderboards.

- A search space maps dotted paths into a run request (``training.optimizer.learning_rate``,
  ``network.layers.0.units``) to a list of values (grid, or a uniform choice in a random
  search) or a distribution (random search): ``{"distribution": "log_uniform", "low": 1e-4,
  "high": 1e-1}``, ``uniform`` (``low``, ``high``), ``int_uniform`` (``low``..``high``
  inclusive) or ``choice`` (``values``).
- :func:`expand` turns a space into the parameter sets of the trials, in a fixed order; a
  random search draws them from ``np.random.default_rng(seed)``, so the same seed gives the
  same trials.
- :func:`apply` writes a parameter set into a copy of the base request.
- Successive halving (ASHA, asynchronous): rungs at ``min_epochs · eta^k`` epochs
  (:func:`rungs`); at a rung a trial continues only when its metric is among the best
  ``1/eta`` of the trials that reached that rung, itself included (:func:`asha_keep`); while
  fewer than ``eta`` trials have reached it, every trial continues.
- :func:`leaderboard` ranks trials (or, with cross-validation, configurations: the mean and
  standard deviation over their folds).

No database, no Celery: the service's sweep code (``core/runs/sweeps.py``, ``api/routes/
sweeps.py``) calls these.
"""

from __future__ import annotations

import copy
import itertools
import math
import re
import statistics
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    field_validator,
    model_validator,
)

from core.spec import StrictModel, optimizer_shorthand

MetricName = Literal["val_loss", "val_accuracy", "loss"]
MAXIMIZED = frozenset({"val_accuracy"})
PATH_PATTERN = re.compile(r"^(network|training)(\.[A-Za-z0-9_]+)+$")
STOP_PRUNED = "pruned"
STOP_SWEEP_CANCELLED = "sweep_cancelled"
STOP_EARLY = "early_stopped"  # early stopping ended a run (not only a sweep's trial)


def mode_of(metric: str) -> Literal["min", "max"]:
    """``"max"`` for accuracies, ``"min"`` for losses."""
    return "max" if metric in MAXIMIZED else "min"


class _Strict(BaseModel):
    """The distributions' base: not :class:`core.spec.StrictModel`, whose validator would
    rename them in the union labels of error locations; a misspelt ``distribution`` still
    gets its hint from :class:`SearchSpace`."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class LogUniform(_Strict):
    """``exp(uniform(log low, log high))``: learning rates, weight decays."""

    distribution: Literal["log_uniform"]
    low: StrictFloat = Field(gt=0)
    high: StrictFloat = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> LogUniform:
        if self.high < self.low:
            raise ValueError("high must be >= low")
        return self

    def sample(self, rng: np.random.Generator) -> float:
        return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))


class Uniform(_Strict):
    """A float uniform in ``[low, high)``."""

    distribution: Literal["uniform"]
    low: StrictFloat
    high: StrictFloat

    @model_validator(mode="after")
    def _ordered(self) -> Uniform:
        if self.high < self.low:
            raise ValueError("high must be >= low")
        return self

    def sample(self, rng: np.random.Generator) -> float:
        return float(rng.uniform(self.low, self.high))


class IntUniform(_Strict):
    """An integer uniform in ``[low, high]`` (both included): units, batch sizes."""

    distribution: Literal["int_uniform"]
    low: StrictInt
    high: StrictInt

    @model_validator(mode="after")
    def _ordered(self) -> IntUniform:
        if self.high < self.low:
            raise ValueError("high must be >= low")
        return self

    def sample(self, rng: np.random.Generator) -> int:
        return int(rng.integers(self.low, self.high + 1))


class Choice(_Strict):
    """One of ``values``, each equally likely (a plain list means the same)."""

    distribution: Literal["choice"]
    values: list[Any] = Field(min_length=1)

    def sample(self, rng: np.random.Generator) -> Any:
        return copy.deepcopy(self.values[int(rng.integers(len(self.values)))])


Distribution = Annotated[
    LogUniform | Uniform | IntUniform | Choice, Field(discriminator="distribution")
]


class SearchSpace(StrictModel):
    """``{"type": "grid" | "random" | "tpe", "parameters": {path: values | distribution},
    ...}``. A ``tpe`` search takes the same parameters as a random one; its trials are
    suggested one at a time by Optuna's TPE sampler from the results so far (core/tpe.py)."""

    type: Literal["grid", "random", "tpe"]
    parameters: dict[str, list[Any] | Distribution] = Field(min_length=1)
    n_trials: StrictInt | None = Field(
        default=None, ge=1, description="Trials of a random or tpe search (default 10)."
    )
    seed: StrictInt = Field(
        default=0, ge=0, description="Seeds a random search, or the TPE sampler."
    )
    n_startup_trials: StrictInt | None = Field(
        default=None,
        ge=0,
        description="tpe: how many finished trials are drawn at random before TPE models "
        "the results (default 10, Optuna's).",
    )

    @field_validator("parameters")
    @classmethod
    def _paths(cls, parameters: dict[str, Any]) -> dict[str, Any]:
        for path, values in parameters.items():
            if not PATH_PATTERN.match(path):
                raise ValueError(
                    f"{path!r}: a parameter is a dotted path into the run request starting "
                    "with 'network.' or 'training.', e.g. 'training.optimizer.learning_rate'"
                )
            if isinstance(values, list) and not values:
                raise ValueError(f"{path}: the list of values is empty")
        return parameters

    @model_validator(mode="after")
    def _grid_takes_lists(self) -> SearchSpace:
        if self.type == "grid":
            for path, values in self.parameters.items():
                if not isinstance(values, list):
                    raise ValueError(
                        f"{path}: a grid search takes a list of values; distributions are "
                        "for random search"
                    )
            if self.n_trials is not None:
                raise ValueError("n_trials: a grid search runs every combination; omit n_trials")
        if self.n_startup_trials is not None and self.type != "tpe":
            raise ValueError("n_startup_trials: only a tpe search takes it")
        return self


class Pruning(StrictModel):
    """Successive halving on epochs: rungs at ``min_epochs · eta^k``."""

    type: Literal["asha"] = "asha"
    min_epochs: StrictInt = Field(default=1, ge=1, description="The first rung.")
    eta: StrictInt = Field(default=3, ge=2, description="Keep the best 1/eta at each rung.")


class CrossValidation(StrictModel):
    """k-fold cross-validation: each configuration trains ``k`` runs, one per held-out fold."""

    k: StrictInt = Field(ge=2, le=20)


class SpaceError(ValueError):
    """The search space does not fit the base request (names the trial and parameter)."""


def _grid_lists(space: SearchSpace) -> list[list[Any]]:
    """The value lists of a grid, in parameter order."""
    lists = []
    for values in space.parameters.values():
        assert isinstance(values, list), "SearchSpace lets a grid take lists only"
        lists.append(values)
    return lists


def grid_size(space: SearchSpace) -> int:
    """How many trials a grid has, computed without building them."""
    return math.prod(len(values) for values in _grid_lists(space))


def expand(space: SearchSpace, *, default_trials: int = 10) -> list[dict[str, Any]]:
    """The parameter sets of the trials, in order: ``[{path: value, ...}, ...]``.

    A grid is the Cartesian product, the first parameter varying slowest. A random search
    draws ``n_trials`` sets from ``np.random.default_rng(seed)``, parameter by parameter in
    the order given. A tpe search has no fixed list (core/tpe.py suggests its trials one at
    a time); here it draws like a random search, which the API uses to check the space.
    """
    paths = list(space.parameters)
    if space.type == "grid":
        return [
            dict(zip(paths, copy.deepcopy(combo), strict=True))
            for combo in itertools.product(*_grid_lists(space))
        ]
    rng = np.random.default_rng(space.seed)
    trials = []
    for _ in range(space.n_trials or default_trials):
        params: dict[str, Any] = {}
        for path in paths:
            spec = space.parameters[path]
            if isinstance(spec, list):
                params[path] = copy.deepcopy(spec[int(rng.integers(len(spec)))])
            else:
                params[path] = spec.sample(rng)
        trials.append(params)
    return trials


def corners(space: SearchSpace, *, limit: int = 256) -> list[dict[str, Any]]:
    """Parameter sets that check a space whose trials are not known in advance (tpe): each
    parameter at its extremes (``low`` and ``high``; every listed value), in every
    combination when there are at most ``limit``, else every parameter's extremes with the
    others at their ``low`` (or first value), plus the all-high corner."""
    options: list[list[Any]] = []
    for spec in space.parameters.values():
        if isinstance(spec, list):
            options.append(spec)
        elif isinstance(spec, Choice):
            options.append(spec.values)
        else:
            options.append([spec.low] if spec.low == spec.high else [spec.low, spec.high])
    paths = list(space.parameters)
    if math.prod(len(o) for o in options) <= limit:
        combos = [list(c) for c in itertools.product(*options)]
    else:
        low = [o[0] for o in options]
        combos = [low, [o[-1] for o in options]]
        for i, values in enumerate(options):
            combos += [low[:i] + [v] + low[i + 1 :] for v in values[1:]]
    return [dict(zip(paths, copy.deepcopy(c), strict=True)) for c in combos]


def set_path(request: dict[str, Any], path: str, value: Any) -> None:
    """Set ``path`` (dotted; integer segments index lists) in ``request`` in place.

    Missing keys of objects are created; list indexes must exist. An optimizer given by its
    name alone (``"adam"``) is its object (``{"name": "adam"}``) when a path goes below it.
    """
    parts = path.split(".")
    node: Any = request
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        where = ".".join(parts[: depth + 1])
        if isinstance(node, dict):
            if last:
                node[part] = copy.deepcopy(value)
                return
            if node.get(part) is None:
                node[part] = {}
            elif where == "training.optimizer":
                node[part] = optimizer_shorthand(node[part])
            node = node[part]
        elif isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise SpaceError(
                    f"{path}: {where} is not an element of the base request "
                    f"({'.'.join(parts[:depth])} has {len(node)} items)"
                )
            if last:
                node[int(part)] = copy.deepcopy(value)
                return
            node = node[int(part)]
        else:
            raise SpaceError(
                f"{path}: {'.'.join(parts[:depth])} is a single value in the base request, "
                "not an object or a list"
            )


def apply(base: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """A copy of the run request ``base`` with ``params`` written in."""
    request = copy.deepcopy(base)
    for path, value in params.items():
        set_path(request, path, value)
    return request


def rungs(min_epochs: int, eta: int, epochs: int) -> list[int]:
    """Rung epochs ``min_epochs · eta^k`` below ``epochs`` (the last epoch is no rung)."""
    result = []
    r = min_epochs
    while r < epochs:
        result.append(r)
        r *= eta
    return result


def _worse(value: float | None, mode: str) -> float:
    """Sort key: smaller is better; NaN and missing are worst."""
    if value is None or math.isnan(value):
        return math.inf
    return value if mode == "min" else -value


def asha_kept(n: int, eta: int, *, final: bool = False) -> int:
    """How many of the ``n`` trials at a rung may go past it: the best ``⌊n/eta⌋``; at least
    one once ``final`` (no trial is left to start or running, as in synchronous successive
    halving)."""
    kept = n // eta
    return max(1, kept) if final and n else kept


def asha_keep(
    value: float | None,
    rung_values: Sequence[float | None],
    eta: int,
    mode: str,
    *,
    final: bool = False,
) -> bool:
    """Whether a trial may go past a rung now: its value is among the best
    :func:`asha_kept` of ``rung_values`` (every trial's metric at this rung, its own
    included; ties go on). With fewer than ``eta`` values none may go on yet (unless
    ``final``): the trial waits at the rung for the others (see core/runs/sweeps.py).
    """
    cutoff = asha_cutoff(rung_values, eta, mode, final=final)
    if cutoff is None:
        return False
    return _worse(value, mode) <= _worse(cutoff, mode)


def asha_cutoff(
    rung_values: Sequence[float | None], eta: int, mode: str, *, final: bool = False
) -> float | None:
    """The worst value that may still go past a rung: the :func:`asha_kept`-th best of
    ``rung_values`` (``mode`` "min" or "max"); ``None`` while none may."""
    k = asha_kept(len(rung_values), eta, final=final)
    if k == 0:
        return None
    return sorted(rung_values, key=lambda v: _worse(v, mode))[k - 1]


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (``None`` when undefined)."""
    if not values:
        return None, None
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else 0.0)


_GROUP = {"succeeded": 0, "running": 1, "queued": 1, "cancelled": 2, "failed": 3}


def _combined_status(statuses: list[str]) -> str:
    if any(s == "running" for s in statuses):
        return "running"
    if any(s == "queued" for s in statuses):
        return "running" if any(s != "queued" for s in statuses) else "queued"
    if all(s == "succeeded" for s in statuses):
        return "succeeded"
    return "failed" if "failed" in statuses else "cancelled"


def leaderboard(trials: list[dict[str, Any]], metric: str, *, folds: int | None = None
                ) -> list[dict[str, Any]]:  # fmt: skip
    """Rank trials, best first.

    Each trial is ``{"run_id", "trial", "fold", "params", "status", "value", "epoch",
    "stop_reason"}``, optionally ``stop_details`` (a pruned or waiting trial's standing at
    its rung) and ``waiting``. Succeeded trials come first, then those still queued or running, then
    cancelled (pruned) and failed ones; within each group the best metric first, missing
    values last. With ``folds`` the runs of one configuration (same ``trial``) make one entry
    whose metric is the mean over its folds' values, with ``<metric>_std`` beside it.
    """
    mode = mode_of(metric)
    entries: list[dict[str, Any]] = []
    if folds is None:
        for t in trials:
            entry = {
                "run_id": t["run_id"],
                "trial": t["trial"],
                "params": t["params"],
                metric: t["value"],
                "status": t["status"],
                "epoch": t["epoch"],
            }
            if t.get("stop_reason"):
                entry["stop_reason"] = t["stop_reason"]
            if t.get("stop_details") and t["status"] != "succeeded":
                entry["stop_details"] = t["stop_details"]  # pruned, or waiting at a rung
            if t.get("waiting"):
                entry["waiting"] = True
            entries.append(entry)
    else:
        by_trial: dict[int, list[dict[str, Any]]] = {}
        for t in trials:
            by_trial.setdefault(t["trial"], []).append(t)
        for index, runs in by_trial.items():
            runs.sort(key=lambda t: t["fold"] or 0)
            values = [t["value"] for t in runs if t["value"] is not None]
            mean, std = mean_std(values)
            entry = {
                "run_id": runs[0]["run_id"],
                "run_ids": [t["run_id"] for t in runs],
                "trial": index,
                "params": runs[0]["params"],
                metric: mean,
                f"{metric}_std": std,
                "folds": folds,
                "fold_values": [t["value"] for t in runs],
                "status": _combined_status([t["status"] for t in runs]),
            }
            details = [t.get("stop_details") for t in runs]
            if any(details) and entry["status"] != "succeeded":
                entry["fold_stop_details"] = details
            reasons = {t.get("stop_reason") for t in runs} - {None}
            if reasons:
                entry["stop_reason"] = STOP_PRUNED if STOP_PRUNED in reasons else reasons.pop()
            entries.append(entry)
    entries.sort(key=lambda e: (_GROUP.get(e["status"], 3), _worse(e[metric], mode), e["trial"]))
    return entries
