"""``backprop models …`` run as the real console script against the real service: each
answer is checked against the run's own ``predict`` through the client (another route),
and a rollback by the run and outputs it answers with."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.client_commands import _fmt
from client import BackpropClient, Run
from tests.cli.test_client_commands import as_json, backprop
from tests.client.conftest import EXAMPLES, running_stack
from tests.e2e.stack import Stack

IRIS_CSV = EXAMPLES / "iris" / "iris.csv"
NETWORK = json.loads((EXAMPLES / "iris" / "network.json").read_text())
TRAINING = {**json.loads((EXAMPLES / "iris" / "training.json").read_text()), "epochs": 20}
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 2.8, 4.4, 1.3]]
RULE = "a model name is 1 to 100 characters"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from running_stack(tmp_path_factory)


@pytest.fixture(scope="module")
def bp(stack: Stack) -> Iterator[BackpropClient]:
    with BackpropClient(stack.base_url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def runs(bp: BackpropClient) -> list[Run]:
    ds = bp.upload_dataset(IRIS_CSV, target="species")
    submitted = [bp.submit_run(ds.id, NETWORK, {**TRAINING, "seed": s}) for s in (0, 1)]
    done = [bp.wait(r.id, timeout=120, poll=0.2) for r in submitted]
    assert [r.status for r in done] == ["succeeded", "succeeded"]
    return done


@pytest.fixture
def rows_csv(tmp_path: Path) -> Path:
    path = tmp_path / "rows.csv"
    header = "sepal_length,sepal_width,petal_length,petal_width\n"
    path.write_text(header + "".join(",".join(map(str, row)) + "\n" for row in ROWS))
    return path


def test_register_show_list_predict_roll_back_delete(
    stack: Stack, bp: BackpropClient, runs: list[Run], rows_csv: Path
) -> None:
    first, second = runs
    # A prefix of the run's id works, as everywhere in the CLI; the model has the whole id.
    made = as_json(backprop(stack, "models", "register", "iris-cli", first.id[:8], "--json"))
    assert (made["name"], made["current_version"], made["run_id"]) == ("iris-cli", 1, first.id)

    human = backprop(stack, "models", "register", "iris-cli", second.id)
    assert human.returncode == 0, human.stderr
    assert human.stdout.strip() == f"model iris-cli: version 2 (run {second.id}) is current"

    answer = as_json(backprop(stack, "models", "predict", "iris-cli", "--input", str(rows_csv),
                              "--json"))  # fmt: skip
    own = bp.predict(second.id, ROWS)
    assert (answer["version"], answer["run_id"]) == (2, second.id)
    assert (answer["outputs"], answer["labels"]) == (own.outputs, own.labels)
    pinned = as_json(backprop(stack, "models", "predict", "iris-cli", "--input", str(rows_csv),
                              "--version", "1", "--json"))  # fmt: skip
    assert (pinned["version"], pinned["run_id"]) == (1, first.id)
    assert pinned["outputs"] == bp.predict(first.id, ROWS).outputs

    rolled = backprop(stack, "models", "register", "iris-cli", first.id)
    assert rolled.stdout.strip() == (
        f"model iris-cli: version 1 (run {first.id}) is current again (the latest is version 2)"
    )
    human = backprop(stack, "models", "predict", "iris-cli", "--input", str(rows_csv))
    assert human.returncode == 0, human.stderr
    assert human.stdout.splitlines()[0] == f"model iris-cli version 1 (run {first.id})"
    labels = bp.predict(first.id, ROWS).labels
    assert labels is not None and all(str(label) in human.stdout for label in labels)

    shown = as_json(backprop(stack, "models", "show", "iris-cli", "--json"))
    assert [(v["version"], v["run_id"], v["current"]) for v in shown["versions"]] == [
        (1, first.id, True), (2, second.id, False)]  # fmt: skip
    human = backprop(stack, "models", "show", "iris-cli", columns=80)
    assert human.returncode == 0, human.stderr
    lines = human.stdout.splitlines()
    assert lines[0] == (
        f"model iris-cli: version 1 (run {first.id}) is current again (the latest is version 2)"
    )
    assert "val_accuracy" in lines[2] and max(len(line) for line in lines[1:]) <= 80
    assert lines[3].split()[:3] == ["1", "*", first.id[:8]]
    assert lines[4].split()[:2] == ["2", second.id[:8]]
    assert _fmt(first.metrics["val_accuracy"]) in lines[3]

    listed = as_json(backprop(stack, "models", "list", "--json"))
    [mine] = [m for m in listed if m["name"] == "iris-cli"]
    assert (mine["current_version"], mine["latest_version"], mine["run_id"]) == (1, 2, first.id)
    human = backprop(stack, "models", "list", columns=80)
    [line] = [line for line in human.stdout.splitlines() if line.startswith("iris-cli")]
    assert "1 of 2" in line and first.id[:8] in line

    deleted = backprop(stack, "models", "delete", "iris-cli")
    assert deleted.stdout.strip() == "deleted model iris-cli (its runs stay)"
    gone = backprop(stack, "models", "show", "iris-cli")
    assert gone.returncode == 3
    assert gone.stderr.strip() == "error: the server answered 404: model iris-cli not found"
    assert bp.get_run(first.id).status == "succeeded"


def test_refusals_exit_3_saying_why(stack: Stack, runs: list[Run], rows_csv: Path) -> None:
    bad = backprop(stack, "models", "show", "bad name")
    assert bad.returncode == 3 and RULE in bad.stderr and "name (path parameter)" in bad.stderr
    missing = backprop(stack, "models", "predict", "nothing-here", "--input", str(rows_csv))
    assert missing.returncode == 3 and "model nothing-here not found" in missing.stderr
    as_json(backprop(stack, "models", "register", "one-version", runs[0].id, "--json"))
    no_version = backprop(stack, "models", "predict", "one-version", "--input", str(rows_csv),
                          "--version", "3")  # fmt: skip
    assert no_version.returncode == 3
    assert "model one-version has no version 3 (its versions are 1 to 1)" in no_version.stderr
    zero = backprop(stack, "models", "predict", "one-version", "--input", str(rows_csv),
                    "--version", "0")  # fmt: skip
    assert zero.returncode == 2  # a usage error, caught before any request
