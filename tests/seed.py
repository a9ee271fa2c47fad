"""The seed article's 2-2-2 network (API.md §2), one copy for every test.

The network is read from ``examples/seed/network.json``, so the example users run is the
one the tests train.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

SEED_NETWORK: dict[str, Any] = json.loads((EXAMPLES / "seed" / "network.json").read_text())
# One SGD step on the article's single sample (API.md §3's example config).
SEED_TRAINING: dict[str, Any] = {
    "loss": "mse",
    "optimizer": {"name": "sgd", "learning_rate": 0.5, "momentum": 0.0},
    "epochs": 1,
    "batch_size": 1,
    "shuffle": False,
    "seed": 0,
}
SEED_X = [[0.05, 0.10]]
SEED_Y = [[0.01, 0.99]]
