"""TPE vs random search (issue #13) on scikit-learn's digits, with the same budget.

A script, not a test. The space: learning rate (log-uniform 1e-4..0.3) x hidden units
(int 8..128) x batch size (16, 32, 64, 128, 256) x weight decay (log-uniform 1e-6..0.1), on a
64-units-10 relu/softmax network trained with Adam for ``--epochs`` epochs; the objective
is the validation loss (20 % held out, seeded split), lower is better.

- ``random``: the service's random search (``core.sweeps.expand``, seed ``s``).
- ``tpe``: the service's TPE search (``core.tpe.suggest``), driven as the service drives
  it: the study rebuilt from the stored results before each suggestion, two trials in
  flight at a time (``max_concurrent`` 2), so each suggestion sees the other trial still
  running (constant liar), with ``n_startup_trials`` random ones first.

Both train every trial with the engine in this process (the service's workers would train
the same runs). For each of ``--seeds`` seeds it reports the best validation loss each
search found within the budget, then the median over the seeds. Prints a table and writes
``bench/results/tpe_vs_random.json``. Run as ``python bench/tpe_vs_random.py``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from core.engine import Network
from core.sweeps import SearchSpace, apply, expand
from core.tpe import Observed, suggest

BASE: dict[str, Any] = {
    "network": {"input_dim": 64, "layers": [{"units": 64, "activation": "relu"},
                                            {"units": 10, "activation": "softmax"}],
                "init": "he_uniform"},
    "training": {"loss": "categorical_crossentropy",
                 "optimizer": {"name": "adam", "learning_rate": 0.003},
                 "epochs": 10, "batch_size": 32, "shuffle": True, "seed": 0,
                 "validation_split": 0.2, "standardize": True},
}  # fmt: skip

PARAMETERS: dict[str, Any] = {
    "training.optimizer.learning_rate": {"distribution": "log_uniform", "low": 1e-4,
                                         "high": 0.3},
    "network.layers.0.units": {"distribution": "int_uniform", "low": 8, "high": 128},
    "training.batch_size": [16, 32, 64, 128, 256],
    "training.optimizer.weight_decay": {"distribution": "log_uniform", "low": 1e-6,
                                        "high": 0.1},
}  # fmt: skip


def _data() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.data.astype(np.float64), digits.target.reshape(-1, 1)


def _objective(X: np.ndarray, y: np.ndarray, params: dict[str, Any], epochs: int) -> float:
    request = apply({**BASE, "training": {**BASE["training"], "epochs": epochs}}, params)
    net = Network.from_spec(request["network"], seed=0)
    history = net.fit(X, y, request["training"])
    return float(history[-1]["val_loss"])


def random_search(X: np.ndarray, y: np.ndarray, seed: int, budget: int, epochs: int
                  ) -> list[float]:  # fmt: skip
    space = SearchSpace.model_validate(
        {"type": "random", "n_trials": budget, "seed": seed, "parameters": PARAMETERS}
    )
    return [_objective(X, y, params, epochs) for params in expand(space)]


def tpe_search(X: np.ndarray, y: np.ndarray, seed: int, budget: int, epochs: int,
               startup: int, in_flight: int) -> list[float]:  # fmt: skip
    space = SearchSpace.model_validate(
        {"type": "tpe", "n_trials": budget, "seed": seed, "n_startup_trials": startup,
         "parameters": PARAMETERS}
    )  # fmt: skip
    observed: list[Observed] = []
    state: dict[str, Any] | None = None
    running: deque[int] = deque()
    values: list[float] = []
    while len(values) < budget:
        while len(running) < in_flight and len(observed) < budget:
            params, state = suggest(space, "min", observed, state)
            observed.append(Observed(params, "running"))
            running.append(len(observed) - 1)
        index = running.popleft()
        value = _objective(X, y, observed[index].params, epochs)
        observed[index] = Observed(observed[index].params, "complete", value)
        values.append(value)
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget", type=int, default=24, help="Trials per search.")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--startup", type=int, default=8, help="TPE's random start-up trials.")
    parser.add_argument("--in-flight", type=int, default=2, help="max_concurrent of the sweep.")
    args = parser.parse_args()
    X, y = _data()
    rows = []
    t0 = time.perf_counter()
    for seed in range(args.seeds):
        rnd = random_search(X, y, seed, args.budget, args.epochs)
        tpe = tpe_search(X, y, seed, args.budget, args.epochs, args.startup, args.in_flight)
        rows.append({"seed": seed, "random_best": min(rnd), "tpe_best": min(tpe),
                     "random_median": statistics.median(rnd),
                     "tpe_median": statistics.median(tpe)})  # fmt: skip
        print(f"seed {seed}: best val_loss random {min(rnd):.4f}  tpe {min(tpe):.4f}  "
              f"(median of its trials: random {statistics.median(rnd):.4f}, "
              f"tpe {statistics.median(tpe):.4f})", flush=True)  # fmt: skip
    summary = {
        "median_best_random": statistics.median(r["random_best"] for r in rows),
        "median_best_tpe": statistics.median(r["tpe_best"] for r in rows),
        "tpe_wins": sum(r["tpe_best"] < r["random_best"] for r in rows),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(f"median over {args.seeds} seeds of the best val_loss: random "
          f"{summary['median_best_random']:.4f}, tpe {summary['median_best_tpe']:.4f}; "
          f"tpe better on {summary['tpe_wins']}/{args.seeds} seeds; "
          f"{summary['seconds']} s")  # fmt: skip
    import optuna
    import sklearn

    out = {"args": vars(args), "rows": rows, "summary": summary,
           "versions": {"python": platform.python_version(), "numpy": np.__version__,
                        "optuna": optuna.__version__, "scikit-learn": sklearn.__version__},
           "machine": platform.platform()}  # fmt: skip
    path = Path(__file__).parent / "results" / "tpe_vs_random.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
