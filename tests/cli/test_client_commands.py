"""The ``backprop`` client commands, run as the real console script against the real service."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.datasets import load_digits
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from cli.processes import free_port
from core.db.models import Run
from tests.client.conftest import EXAMPLES, SEED_NETWORK, SEED_TRAINING, running_stack
from tests.e2e.stack import Stack, early_stopped_run

BACKPROP = str(Path(sys.executable).parent / "backprop")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from running_stack(tmp_path_factory)


def cli_env(stack: Stack | None, columns: int = 200) -> dict[str, str]:
    """The environment of ``backprop``: ``BACKPROP_URL`` pointing at ``stack``, a terminal
    ``columns`` wide."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKPROP_")}
    if stack is not None:
        env["BACKPROP_URL"] = stack.base_url
    env["COLUMNS"] = str(columns)
    return env


def backprop(
    stack: Stack | None, *args: str, timeout: float = 60, columns: int = 200
) -> subprocess.CompletedProcess[str]:
    """Run ``backprop ARGS`` with ``BACKPROP_URL`` pointing at ``stack``."""
    return subprocess.run(
        [BACKPROP, *args], env=cli_env(stack, columns), capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


def as_json(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    return json.loads(done.stdout)


def example(name: str, data: str, *extra: str) -> list[str]:
    folder = EXAMPLES / name
    return [
        "submit",
        "--network",
        str(folder / "network.json"),
        "--training",
        str(folder / "training.json"),
        "--data",
        str(folder / data),
        *extra,
    ]


def test_submit_watch_on_the_seed_example_shows_progress_and_a_summary(stack: Stack) -> None:
    done = backprop(stack, *example("seed", "data.json"), "--name", "seed-cli", "--watch")
    assert done.returncode == 0, (done.stdout, done.stderr)
    epochs = json.loads((EXAMPLES / "seed" / "training.json").read_text())["epochs"]
    assert f"epoch {epochs}/{epochs}" in done.stdout  # the progress bar's last state
    assert "succeeded" in done.stdout and "seed-cli" in done.stdout and "loss" in done.stdout
    assert done.stderr == ""
    run = as_json(backprop(stack, "runs", "--json", "--limit", "1"))[0]
    assert run["name"] == "seed-cli" and run["status"] == "succeeded"
    # The seed example converges towards its targets (0.01, 0.99).
    assert run["metrics"]["loss"] < 1e-3


def test_json_submit_then_watch_runs_show_weights_and_predict(stack: Stack, tmp_path: Path) -> None:
    submitted = as_json(
        backprop(stack, *example("iris", "iris.csv", "--target", "species", "--json"))
    )
    assert submitted["status"] == "queued" and submitted["progress"]["epochs"] == 100
    run_id = submitted["id"]

    final = as_json(backprop(stack, "watch", run_id, "--json"))
    assert final["id"] == run_id and final["status"] == "succeeded"
    assert final["metrics"]["val_accuracy"] >= 0.85

    listed = as_json(backprop(stack, "runs", "--status", "succeeded", "--json"))
    assert run_id in [r["id"] for r in listed] and {r["status"] for r in listed} == {"succeeded"}
    human = backprop(stack, "runs")
    assert human.returncode == 0 and run_id[:8] in human.stdout  # ids shown short

    shown = as_json(backprop(stack, "show", run_id, "--json"))
    assert [m["epoch"] for m in shown["history"]] == list(range(1, 101))
    human = backprop(stack, "show", run_id)
    assert human.returncode == 0 and "val_accuracy" in human.stdout and "100/100" in human.stdout

    model = tmp_path / "model.npz"
    wrote = as_json(backprop(stack, "weights", run_id, "-o", str(model), "--json"))
    assert wrote["path"] == str(model) and wrote["bytes"] == model.stat().st_size
    printed = as_json(backprop(stack, "weights", run_id))
    with np.load(model, allow_pickle=False) as arrays:
        assert arrays["W0"].shape == (4, 16) and arrays["W1"].shape == (16, 3)
        np.testing.assert_array_equal(arrays["b1"], printed["layers"][1]["b"])
        # the whole model, as file and as JSON: standardisation and class labels too
        np.testing.assert_array_equal(arrays["x_mean"], printed["preprocessing"]["x_mean"])
        np.testing.assert_array_equal(arrays["x_std"], printed["preprocessing"]["x_std"])
        meta = json.loads(str(arrays["meta"]))
    assert meta == {k: printed[k] for k in ("format", "version", "dtype", "spec", "classes")}
    assert printed["classes"] == ["setosa", "versicolor", "virginica"]

    # The example file itself, header included, minus its target column.
    pred = as_json(
        backprop(
            stack,
            "predict",
            run_id,
            "--input",
            str(EXAMPLES / "iris" / "iris.csv"),
            "--drop",
            "species",
            "--json",
        )
    )
    truth = [
        line.rsplit(",", 1)[1]
        for line in (EXAMPLES / "iris" / "iris.csv").read_text().splitlines()[1:]
    ]
    assert len(pred["labels"]) == 150 and np.shape(pred["outputs"]) == (150, 3)
    assert np.mean([p == t for p, t in zip(pred["labels"], truth, strict=True)]) >= 0.9

    rows = tmp_path / "rows.csv"
    rows.write_text("5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n")  # no header
    human = backprop(stack, "predict", run_id, "--input", str(rows))
    assert human.returncode == 0, human.stderr
    lines = human.stdout.splitlines()
    assert any("setosa" in line for line in lines) and any("virginica" in line for line in lines)


def test_submit_on_a_stored_dataset_with_dataset_id(stack: Stack, tmp_path: Path) -> None:
    data = tmp_path / "data.json"
    X = np.random.default_rng(int.from_bytes(os.urandom(8), "little")).normal(size=(8, 2))
    data.write_text(json.dumps({"X": X.tolist(), "y": (X @ [[1.0, 0.0], [0.0, -1.0]]).tolist()}))
    seed = EXAMPLES / "seed"
    submit = ["submit", "--network", str(seed / "network.json"),
              "--training", str(seed / "training.json")]  # fmt: skip
    first = as_json(backprop(stack, *submit, "--data", str(data), "--json"))
    # the same file again is the same dataset, not a second copy
    second = as_json(backprop(stack, *submit, "--data", str(data), "--json"))
    assert second["dataset_id"] == first["dataset_id"] and second["id"] != first["id"]
    dataset_id = first["dataset_id"]

    human = backprop(stack, *submit, "--dataset-id", dataset_id, "--name", "by-id")
    assert human.returncode == 0, human.stderr
    assert f"dataset {dataset_id} (8 samples, regression)" in human.stdout
    watched = as_json(backprop(stack, *submit, "--dataset-id", dataset_id, "--watch", "--json"))
    assert watched["dataset_id"] == dataset_id and watched["status"] == "succeeded"
    runs = as_json(backprop(stack, "runs", "--json", "--limit", "10"))
    assert any(r["name"] == "by-id" and r["dataset_id"] == dataset_id for r in runs)

    unknown = backprop(stack, *submit, "--dataset-id", "no-such-dataset")
    assert unknown.returncode == 3 and "no-such-dataset not found" in unknown.stderr
    both = backprop(stack, *submit, "--dataset-id", dataset_id, "--data", str(data))
    assert both.returncode == 2 and "not both" in both.stderr
    neither = backprop(stack, *submit)
    assert neither.returncode == 2 and "--data FILE" in neither.stderr
    target = backprop(stack, *submit, "--dataset-id", dataset_id, "--target", "y")
    assert target.returncode == 2 and "--target" in target.stderr


def test_integer_labels_scikit_learn_style_then_evaluate_prints_the_figures(
    stack: Stack, tmp_path: Path
) -> None:
    X, y = load_digits(return_X_y=True)  # labels 0 … 9, as scikit-learn gives them
    order = np.random.default_rng(0).permutation(len(y))
    train, test = order[:1300], order[1300:]
    np.savez(tmp_path / "digits-train.npz", X=X[train], y=y[train])
    np.savez(tmp_path / "digits-test.npz", X=X[test], y=y[test])
    folder = EXAMPLES / "digits"
    submitted = as_json(backprop(
        stack, "submit", "--network", str(folder / "network.json"), "--training",
        str(folder / "training.json"), "--data", str(tmp_path / "digits-train.npz"), "--json",
    ))  # fmt: skip
    final = as_json(backprop(stack, "watch", submitted["id"], "--json", timeout=120))
    assert final["status"] == "succeeded", final
    assert final["metrics"]["val_accuracy"] >= 0.9  # trained as 10 classes, not a regression

    result = as_json(
        backprop(stack, "evaluate", submitted["id"], str(tmp_path / "digits-test.npz"), "--json")
    )
    assert result["task"] == "classification" and result["classes"] == list(range(10))
    assert result["n_samples"] == len(test)
    resp = stack.client.post(
        f"/api/v1/runs/{submitted['id']}/predict", json={"inputs": X[test].tolist()}
    )
    predicted = resp.json()["labels"]
    assert result["accuracy"] == pytest.approx(skm.accuracy_score(y[test], predicted), rel=1e-12)
    assert result["confusion_matrix"] == skm.confusion_matrix(y[test], predicted).tolist()
    macro = skm.f1_score(y[test], predicted, average="macro", zero_division=0)
    assert result["macro_f1"] == pytest.approx(macro, rel=1e-12)

    # By dataset id, for people: the figures, per class, the confusion matrix.
    human = backprop(stack, "evaluate", submitted["id"], result["dataset_id"])
    assert human.returncode == 0, human.stderr
    text = human.stdout
    assert f"{len(test)} rows, classification" in text
    assert "loss (categorical_crossentropy)" in text and f"{result['accuracy']:.6g}" in text
    assert f"{result['macro_f1']:.6g}" in text and f"{result['log_loss']:.6g}" in text
    assert "per class" in text and "confusion matrix" in text and "true \\ predicted" in text
    matrix = text[text.index("confusion matrix") :].splitlines()
    row_of_9 = next(line for line in matrix if line.replace("│", " ").split()[:1] == ["9"])
    counts = [int(n) for n in row_of_9.replace("│", " ").split()[1:]]
    assert counts == result["confusion_matrix"][9]


def test_evaluate_a_regression_and_what_it_refuses(stack: Stack, tmp_path: Path) -> None:
    run = as_json(backprop(stack, *example("seed", "data.json"), "--json"))
    assert as_json(backprop(stack, "watch", run["id"], "--json"))["status"] == "succeeded"
    data = EXAMPLES / "seed" / "data.json"
    human = backprop(stack, "evaluate", run["id"], str(data))
    assert human.returncode == 0, human.stderr
    for word in ("1 rows, regression", "loss (mse)", "MSE", "RMSE", "MAE", "R²", "per target"):
        assert word in human.stdout, (word, human.stdout)
    result = as_json(backprop(stack, "evaluate", run["id"], str(data), "--json"))
    assert result["r2"] is None and len(result["per_target"]) == 2
    outputs = stack.client.post(
        f"/api/v1/runs/{run['id']}/predict", json={"inputs": [[0.05, 0.10]]}
    ).json()["outputs"]
    assert result["mse"] == pytest.approx(
        skm.mean_squared_error([[0.01, 0.99]], outputs), rel=1e-12
    )

    missing = backprop(stack, "evaluate", run["id"], "no-such-dataset")
    assert missing.returncode == 3 and "404" in missing.stderr and "not found" in missing.stderr
    no_file = backprop(stack, "evaluate", run["id"], str(tmp_path / "absent.csv"))
    assert no_file.returncode == 2 and "no such file" in no_file.stderr
    no_target = backprop(stack, "evaluate", run["id"], str(EXAMPLES / "iris" / "iris.csv"))
    assert no_target.returncode == 2 and "--target is required" in no_target.stderr
    other = backprop(stack, "evaluate", run["id"], str(EXAMPLES / "iris" / "iris.csv"),
                     "--target", "species")  # fmt: skip
    assert other.returncode == 3 and "feature columns" in other.stderr


def test_cancel_and_watching_a_cancelled_run_exits_1(stack: Stack, tmp_path: Path) -> None:
    long = tmp_path / "long.json"
    long.write_text(json.dumps({**SEED_TRAINING, "epochs": 500_000}))
    net = tmp_path / "net.json"
    net.write_text(json.dumps(SEED_NETWORK))
    args = [
        "submit",
        "--network",
        str(net),
        "--training",
        str(long),
        "--data",
        str(EXAMPLES / "seed" / "data.json"),
        "--json",
    ]
    run_id = as_json(backprop(stack, *args))["id"]
    cancelled = as_json(backprop(stack, "cancel", run_id, "--json"))
    assert cancelled["id"] == run_id
    watched = backprop(stack, "watch", run_id)
    assert watched.returncode == 1, (watched.stdout, watched.stderr)
    assert "cancelled" in watched.stdout
    again = backprop(stack, "cancel", run_id)
    assert again.returncode == 3 and "already ended" in again.stderr and again.stdout == ""


def test_a_failing_watched_run_exits_1_and_shows_the_error(stack: Stack, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(32, 2)) * 100
    data = tmp_path / "diverge.npz"
    np.savez(data, X=X, y=X @ [[3.0], [2.0]])
    net = tmp_path / "net.json"
    net.write_text(
        json.dumps(
            {
                "input_dim": 2,
                "layers": [
                    {"units": 8, "activation": "relu"},
                    {"units": 1, "activation": "identity"},
                ],
            }
        )
    )
    training = tmp_path / "training.json"
    training.write_text(
        json.dumps(
            {
                "loss": "mse",
                "epochs": 50,
                "batch_size": 4,
                "optimizer": {"name": "sgd", "learning_rate": 10.0},
            }
        )
    )
    done = backprop(
        stack,
        "submit",
        "--network",
        str(net),
        "--training",
        str(training),
        "--data",
        str(data),
        "--watch",
    )
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "failed" in done.stdout and "diverged" in done.stdout
    as_json_done = backprop(stack, "watch", done.stdout.split("run ", 1)[1].split()[0], "--json")
    assert as_json_done.returncode == 1 and json.loads(as_json_done.stdout)["status"] == "failed"


def test_refusals_exit_3_with_the_detail_on_stderr(stack: Stack, tmp_path: Path) -> None:
    missing = backprop(stack, "show", "no-such-run")
    assert missing.returncode == 3 and "no-such-run not found" in missing.stderr
    assert missing.stdout == ""
    wide = tmp_path / "wide.json"
    layers = SEED_NETWORK["layers"]
    wide.write_text(json.dumps({"input_dim": 3, "layers": layers}))
    bad = backprop(
        stack,
        "submit",
        "--network",
        str(wide),
        "--data",
        str(EXAMPLES / "seed" / "data.json"),
        "--json",
    )
    assert bad.returncode == 3 and "input_dim" in bad.stderr and bad.stdout == ""
    unknown = backprop(
        stack,
        "predict",
        "no-such-run",
        "--input",
        str(EXAMPLES / "iris" / "iris.csv"),
        "--drop",
        "species",
    )
    assert unknown.returncode == 3 and "not found" in unknown.stderr


def test_usage_errors_exit_2(stack: Stack, tmp_path: Path) -> None:
    no_target = backprop(stack, *example("iris", "iris.csv"))
    assert no_target.returncode == 2 and "--target" in no_target.stderr
    broken = tmp_path / "net.json"
    broken.write_text("{not json")
    bad_json = backprop(
        stack, "submit", "--network", str(broken), "--data", str(EXAMPLES / "seed" / "data.json")
    )
    assert bad_json.returncode == 2 and "not valid JSON" in bad_json.stderr
    assert backprop(stack, "show").returncode == 2  # missing argument (click)


def test_unreachable_server_exits_4() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for args in (["runs"], ["show", "abc", "--json"], ["watch", "abc"]):
        done = backprop(None, *args, "--url", url)
        assert done.returncode == 4, (args, done.stdout, done.stderr)
        assert "cannot reach" in done.stderr and done.stdout == ""


# -- a friendlier CLI (issue 13) --------------------------------------------------------------


def test_invalid_values_print_as_field_paths_with_what_a_near_miss_meant(
    stack: Stack, tmp_path: Path
) -> None:
    net = tmp_path / "net.json"
    net.write_text(json.dumps({**SEED_NETWORK, "layers": [
        {"units": 2, "activation": "tahn"}, {"units": 2, "activation": "sigmoid"}]}))  # fmt: skip
    training = tmp_path / "training.json"
    training.write_text(json.dumps({"loss": "mse", "optimizer": "adamm", "epoch": 3}))
    data = str(EXAMPLES / "seed" / "data.json")
    done = backprop(stack, "submit", "--network", str(net), "--training", str(training),
                    "--data", data)  # fmt: skip
    assert done.returncode == 3 and done.stdout == "", done
    lines = done.stderr.splitlines()
    assert lines[0] == "error: the server refused the request (422):"
    assert sorted(lines[1:]) == [
        "  network.layers[0].activation: Input should be 'identity', 'sigmoid', 'tanh', 'relu', "
        "'leaky_relu', 'elu', 'softplus' or 'softmax'; did you mean 'tanh'?",
        "  training.epoch: Extra inputs are not permitted; did you mean 'epochs'?",
        "  training.optimizer: Input tag 'adamm' found using 'name' does not match any of the "
        "expected tags: 'sgd', 'adam', 'rmsprop'; did you mean 'adam'?",
    ], lines
    query = backprop(stack, "runs", "--status", "runing")
    assert query.returncode == 3
    # status repeats (?status=a&status=b): the first one given is status[0]
    assert query.stderr.splitlines()[1].startswith("  status[0] (query parameter): Input should")
    assert query.stderr.rstrip().endswith("did you mean 'running'?")


def test_an_optimizer_given_by_name_alone(stack: Stack, tmp_path: Path) -> None:
    training = tmp_path / "training.json"
    training.write_text(json.dumps({**SEED_TRAINING, "optimizer": "adam", "epochs": 3}))
    net = tmp_path / "net.json"
    net.write_text(json.dumps(SEED_NETWORK))
    data = str(EXAMPLES / "seed" / "data.json")
    run = as_json(backprop(stack, "submit", "--network", str(net), "--training", str(training),
                           "--data", data, "--watch", "--json"))  # fmt: skip
    assert run["status"] == "succeeded" and run["progress"]["epoch"] == 3
    # Stored as the whole optimizer: Adam's defaults (torch.optim.Adam's: lr 1e-3, betas
    # (0.9, 0.999), eps 1e-8).
    adam = {"name": "adam", "learning_rate": 0.001, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8,
            "weight_decay": 0.0}  # fmt: skip
    assert run["training"]["optimizer"] == adam


def _insert_runs(stack: Stack, ids: list[str], name: str) -> None:
    """Finished runs with chosen ids, straight into the stack's database (ids that begin
    alike are rare among UUIDs, so they are made)."""
    engine = create_engine(stack.env["BACKPROP_DATABASE_URL"])
    with Session(engine) as db:
        db.add_all(
            Run(id=i, owner="default", name=name, dataset_id="d", network=SEED_NETWORK,
                training=SEED_TRAINING, status="failed", epochs=1, metrics={"loss": None})
            for i in ids
        )  # fmt: skip
        db.commit()
    engine.dispose()


def test_the_runs_table_fits_80_columns_and_its_short_ids_work(
    stack: Stack, tmp_path: Path
) -> None:
    long_name = "a rather long run name that will not fit in eighty columns " * 2
    net = tmp_path / "net.json"
    net.write_text(json.dumps(SEED_NETWORK))
    training = tmp_path / "training.json"
    training.write_text(json.dumps({**SEED_TRAINING, "epochs": 123_456}))
    big = as_json(backprop(stack, "submit", "--network", str(net), "--training", str(training),
                           "--data", str(EXAMPLES / "seed" / "data.json"), "--name", long_name,
                           "--json"))  # fmt: skip
    as_json(backprop(stack, "cancel", big["id"][:6], "--json"))  # a 6-character prefix
    twins = ["abcdef01-1111-4000-8000-000000000001", "abcdef02-2222-4000-8000-000000000002"]
    _insert_runs(stack, twins, "twin")

    table = backprop(stack, "runs", "--limit", "500", columns=80)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, lines
    assert lines[0].split() == ["id", "status", "epoch", "loss", "created", "name"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert all(len(short) == 8 for short in rows), rows
    assert {"abcdef01", "abcdef02", big["id"][:8]} <= set(rows)
    mine = rows[big["id"][:8]]
    assert "cancelled" in mine and "/123456" in mine and mine.endswith("…")  # name cut

    shown = as_json(backprop(stack, "show", "abcdef02", "--json"))
    assert shown["id"] == twins[1] and shown["name"] == "twin"
    ambiguous = backprop(stack, "show", "abcdef")
    assert ambiguous.returncode == 3 and ambiguous.stdout == ""
    assert ambiguous.stderr.strip() == (
        f"error: the server answered 409: run id prefix abcdef is ambiguous: it begins "
        f"{twins[0]}, {twins[1]}; give more characters of the id"
    )


def test_ctrl_c_under_watch_says_the_run_continues_and_exits_130(
    stack: Stack, tmp_path: Path
) -> None:
    net = tmp_path / "net.json"
    net.write_text(json.dumps(SEED_NETWORK))
    training = tmp_path / "training.json"
    training.write_text(json.dumps({**SEED_TRAINING, "epochs": 500_000}))
    args = ["submit", "--network", str(net), "--training", str(training), "--data",
            str(EXAMPLES / "seed" / "data.json"), "--name", "ctrl-c", "--watch"]  # fmt: skip
    watching = subprocess.Popen([BACKPROP, *args], env=cli_env(stack), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        run: dict[str, Any] | None = None
        while run is None or run["progress"]["epoch"] < 5:  # watched, and training
            assert time.monotonic() < deadline and watching.poll() is None, "no run to watch"
            time.sleep(0.2)
            listed = stack.client.get("/api/v1/runs", params={"limit": 20}).json()["items"]
            run = next((r for r in listed if r["name"] == "ctrl-c"), None)
        watching.send_signal(signal.SIGINT)
        stdout, stderr = watching.communicate(timeout=30)
    finally:
        if watching.poll() is None:
            watching.kill()
    assert watching.returncode == 130, (stdout, stderr)
    assert stderr.strip().splitlines()[-1] == (
        f"interrupted: the run continues — `backprop watch {run['id']}`"
    )
    assert "Traceback" not in stderr
    time.sleep(1.0)
    assert stack.client.get(f"/api/v1/runs/{run['id']}").json()["status"] == "running"
    assert stack.client.post(f"/api/v1/runs/{run['id']}/cancel").status_code == 202


def test_show_names_the_best_epoch_and_why_the_run_ended(stack: Stack) -> None:
    run = early_stopped_run(stack)
    best, last = run["best_epoch"], run["progress"]["epoch"]
    assert best is not None and best < last
    shown = backprop(stack, "show", run["id"])
    assert shown.returncode == 0, shown.stderr
    assert re.search(rf"best epoch\s*│\s*{best} \(the model's weights and metrics\)", shown.stdout)
    assert f"early stopped at epoch {last} of 200; kept the weights of epoch {best}" in shown.stdout
    assert f"{best} (best)" in shown.stdout  # its row in the epochs table, though not last


# -- organising runs (issue #13): runs filters and sorts, tag, edit ---------------------------


def test_runs_filters_and_sorts_and_tag_and_edit(stack: Stack) -> None:
    marker = f"org{os.getpid()}"
    rng = np.random.default_rng(12)
    X = rng.uniform(-1, 1, size=(24, 2))
    ds = stack.upload_json(X.tolist(), (1 / (1 + np.exp(-X))).tolist(), name=f"{marker} data",
                           dedupe=False)  # fmt: skip
    runs = []
    for k, lr in enumerate((0.5, 0.05, 2.0)):
        training = {**SEED_TRAINING, "epochs": 3, "batch_size": 4, "validation_split": 0.25,
                    "optimizer": {"name": "sgd", "learning_rate": lr}}  # fmt: skip
        runs.append(stack.submit(ds["id"], SEED_NETWORK, training, name=f"{marker} r{k}")["id"])
    done = [stack.wait_done(r) for r in runs]
    assert all(r["status"] == "succeeded" for r in done)

    # tag: set, remove; with nothing to change it shows the tags.
    tagged = backprop(stack, "tag", runs[0][:8], "grp=a", "stage=x:y")
    assert tagged.returncode == 0, tagged.stderr
    assert re.search(r"tags:\s+grp=a stage=x:y", tagged.stdout), tagged.stdout
    assert as_json(backprop(stack, "tag", runs[0], "--remove", "stage", "--json"))["tags"] == {
        "grp": "a"
    }
    assert "grp=a" in backprop(stack, "tag", runs[0]).stdout
    # edit: name, notes, tags; "" removes a name.
    edited = as_json(backprop(stack, "edit", runs[1][:6], "--name", f"{marker} renamed",
                              "--notes", "slow lr", "-t", "grp=a", "--json"))  # fmt: skip
    assert (edited["name"], edited["notes"], edited["tags"]) == (f"{marker} renamed", "slow lr",
                                                                  {"grp": "a"})  # fmt: skip
    edited = as_json(backprop(stack, "edit", runs[2], "--name", "", "-t", "grp=b", "-t", "x=1",
                              "--json"))  # fmt: skip
    assert edited["name"] is None and edited["tags"] == {"grp": "b", "x": "1"}
    cleared = as_json(backprop(stack, "edit", runs[2], "--clear-tags", "-t", "grp=b", "--json"))
    assert cleared["tags"] == {"grp": "b"}
    data = as_json(backprop(stack, "edit", "--dataset", ds["id"][:8], "--tag", f"src={marker}",
                            "--json"))  # fmt: skip
    assert data["tags"] == {"src": marker} and data["name"] == f"{marker} data"

    def listed(*args: str) -> list[str]:
        return [r["id"] for r in as_json(backprop(stack, "runs", "--dataset", ds["id"][:8],
                                                  *args, "--json"))]  # fmt: skip

    by_val_loss = [r["id"] for r in sorted(done, key=lambda r: r["metrics"]["val_loss"])]
    assert listed("--sort", "val_loss") == by_val_loss
    assert listed("--sort", "val_loss", "--desc") == by_val_loss[::-1]
    assert listed() == runs[::-1]
    assert listed("--asc") == runs
    assert set(listed("--tag", "grp:a")) == {runs[0], runs[1]}
    assert listed("--tag", "grp=b") == [runs[2]]  # KEY=VALUE is read as KEY:VALUE
    assert listed("--tag", "grp:a", "--search", "RENAMED") == [runs[1]]
    assert listed("--status", "succeeded", "--status", "failed", "--top-level",
                  "--since", "1h") == runs[::-1]  # fmt: skip
    assert listed("--until", "2000-01-01") == []
    assert listed("--since", "2000-01-01T00:00:00+02:00", "--limit", "2") == runs[:0:-1]

    table = backprop(stack, "runs", "--dataset", ds["id"], "--sort", "val_loss", columns=80)
    lines = table.stdout.splitlines()
    assert table.returncode == 0 and max(len(line) for line in lines) <= 80, lines
    assert lines[0].split() == ["id", "status", "epoch", "val_loss", "created", "name"]
    assert [line.split()[0] for line in lines[1:]] == [r[:8] for r in by_val_loss]
    assert "grp=a" in lines[1 + by_val_loss.index(runs[0])]

    # Usage errors (2) and refusals (3) say what is wrong.
    for args, code, says in [
        (("runs", "--since", "yesterday"), 2, "--since 'yesterday': give an ISO 8601"),
        (("tag", runs[0], "novalue"), 2, "'novalue': give a tag as KEY=VALUE"),
        (("edit", runs[0], "--sweep", "--dataset", "--name", "x"), 2, "give at most one"),
        (("tag", runs[0], "bad key=v"), 3, "tags.bad key"),
        (("runs", "--sort", "val_los"), 3, "did you mean 'val_loss'?"),
        (("edit", "--dataset", ds["id"], "--name", ""), 3, "a dataset's name cannot be removed"),
    ]:
        result = backprop(stack, *args)
        assert result.returncode == code and says in result.stderr, (args, result.stderr)
