"""Write the example datasets from scikit-learn's bundled data (no download needed).

Run from the repository root (scikit-learn comes with the ``test`` extras)::

    python examples/make_datasets.py

It writes ``examples/iris/iris.csv`` (target column ``species``, class names),
``examples/digits/digits.csv`` (target column ``digit``, labels ``d0``…``d9``, so the
service treats it as classification) and ``examples/diabetes/diabetes.csv`` (target column
``progression``, a regression). The seed example's ``data.json`` is written by hand.
"""

from __future__ import annotations

import csv
from pathlib import Path

from sklearn.datasets import load_diabetes, load_digits, load_iris

HERE = Path(__file__).resolve().parent


def _write(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _num(value: float) -> str:
    """Shortest text of a number (``5.1``, ``16``, ``0.0380759``)."""
    return f"{value:.7g}"


def main() -> None:
    """Write the three CSV files."""
    iris = load_iris()
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    _write(
        HERE / "iris" / "iris.csv",
        [*names, "species"],
        [
            [*map(_num, x), iris.target_names[t]]
            for x, t in zip(iris.data, iris.target, strict=True)
        ],
    )

    digits = load_digits()
    _write(
        HERE / "digits" / "digits.csv",
        [*(f"px{i}" for i in range(64)), "digit"],
        [[*(int(v) for v in x), f"d{t}"] for x, t in zip(digits.data, digits.target, strict=True)],
    )

    diabetes = load_diabetes()
    _write(
        HERE / "diabetes" / "diabetes.csv",
        [*diabetes.feature_names, "progression"],
        [[*map(_num, x), _num(t)] for x, t in zip(diabetes.data, diabetes.target, strict=True)],
    )


if __name__ == "__main__":
    main()
