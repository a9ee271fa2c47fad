"""The model registry through ``client.BackpropClient``, against the real service.

Each answer through a name is checked against the run's own ``predict`` (another route)
and the run the answer names; the iris classifier also against scikit-learn's accuracy of
the labels it gives on the training rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest
from sklearn.datasets import load_iris

from client import (
    BackpropClient,
    BackpropError,
    ModelPrediction,
    ModelVersion,
    RegisteredModel,
    RegisteredModelDetail,
    Run,
)
from tests.client.conftest import EXAMPLES
from tests.e2e.stack import Stack

IRIS = load_iris()
IRIS_NETWORK = json.loads((EXAMPLES / "iris" / "network.json").read_text())
IRIS_TRAINING = {**json.loads((EXAMPLES / "iris" / "training.json").read_text()), "epochs": 30}


@pytest.fixture(scope="module")
def bp(stack: Stack) -> Iterator[BackpropClient]:
    with BackpropClient(stack.base_url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def iris_runs(bp: BackpropClient) -> list[Run]:
    """Two iris classifiers (seeds 0 and 1) trained on scikit-learn's iris as (X, y)."""
    ds = bp.upload_dataset((IRIS.data, IRIS.target_names[IRIS.target]), name="iris")
    runs = [bp.submit_run(ds.id, IRIS_NETWORK, {**IRIS_TRAINING, "seed": s}) for s in (0, 1)]
    done = [bp.wait(run.id, timeout=120, poll=0.2) for run in runs]
    assert [run.status for run in done] == ["succeeded", "succeeded"]
    return done


def test_register_predict_roll_back_and_delete(bp: BackpropClient, iris_runs: list[Run]) -> None:
    first, second = iris_runs
    created = bp.register_model("iris", first.id)
    assert isinstance(created, RegisteredModelDetail)
    assert (created.name, created.current_version, created.latest_version) == ("iris", 1, 1)
    assert isinstance(created.current, ModelVersion) and created.current.run_id == first.id
    assert created.current.metrics == first.metrics
    assert created.current.trained_at == first.finished_at

    rows = IRIS.data[::10]  # an ndarray, sent through tolist()
    answer = bp.predict_model("iris", rows)
    assert isinstance(answer, ModelPrediction)
    assert (answer.model, answer.version, answer.run_id) == ("iris", 1, first.id)
    own = bp.predict(first.id, rows)
    assert (answer.outputs, answer.labels) == (own.outputs, own.labels)
    everything = bp.predict_model("iris", IRIS.data)
    accuracy = np.mean(np.array(everything.labels) == IRIS.target_names[IRIS.target])
    assert accuracy > 0.9, accuracy

    moved = bp.register_model("iris", second.id)
    assert (moved.current_version, moved.run_id) == (2, second.id)
    assert bp.predict_model("iris", rows).outputs == bp.predict(second.id, rows).outputs
    pinned = bp.predict_model("iris", rows, version=1)
    assert (pinned.version, pinned.run_id, pinned.outputs) == (1, first.id, own.outputs)

    rolled = bp.register_model("iris", first.id)  # a rollback: no version 3
    assert (rolled.current_version, rolled.latest_version, rolled.run_id) == (1, 2, first.id)
    assert [(v.version, v.run_id, v.current) for v in rolled.versions] == [
        (1, first.id, True), (2, second.id, False)]  # fmt: skip
    again = bp.predict_model("iris", rows)
    assert (again.version, again.run_id, again.outputs) == (1, first.id, own.outputs)
    assert bp.get_model("iris") == rolled

    listed = bp.list_models()
    assert all(isinstance(m, RegisteredModel) for m in listed)
    [iris] = [m for m in listed if m.name == "iris"]
    assert (iris.current_version, iris.run_id, iris.latest_version) == (1, first.id, 2)

    with pytest.raises(BackpropError) as refused:
        bp.delete_run(first.id)
    assert refused.value.status_code == 409
    assert "version 1 of model iris" in str(refused.value)

    bp.delete_model("iris")
    with pytest.raises(BackpropError) as gone:
        bp.get_model("iris")
    assert gone.value.status_code == 404 and gone.value.detail == "model iris not found"
    assert bp.get_run(first.id).status == "succeeded"  # the runs stay


def test_list_models_follows_the_pages(bp: BackpropClient, iris_runs: list[Run]) -> None:
    names = [f"paged-{i}" for i in range(5)]
    for name in names:
        bp.register_model(name, iris_runs[0].id)
    small = BackpropClient(bp.base_url, page_size=2)
    with small:
        listed = [m.name for m in small.list_models()]
        assert [n for n in listed if n in names] == names[::-1]
        assert len(small.list_models(limit=3)) == 3


def test_refusals_are_errors_that_say_why(bp: BackpropClient, iris_runs: list[Run]) -> None:
    with pytest.raises(BackpropError) as bad_name:
        bp.register_model("not a name", iris_runs[0].id)
    assert bad_name.value.status_code == 422
    assert bad_name.value.problems == [
        "name (path parameter): a model name is 1 to 100 characters: letters, digits, '.', "
        "'_' and '-', beginning with a letter or a digit"
    ]
    with pytest.raises(BackpropError) as no_run:
        bp.register_model("fine", "no-such-run")
    assert (no_run.value.status_code, no_run.value.detail) == (
        422, "run_id: no run with id no-such-run")  # fmt: skip
    bp.register_model("versioned", iris_runs[0].id)
    with pytest.raises(BackpropError) as no_version:
        bp.predict_model("versioned", IRIS.data[:1], version=5)
    assert no_version.value.status_code == 404
    assert "has no version 5" in str(no_version.value)
    with pytest.raises(BackpropError) as no_model:
        bp.delete_model("never-registered")
    assert no_model.value.status_code == 404
