"""Model artifacts: save() to .npz bytes and load() back without pickle."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from core.engine import EngineError, Network, model_document

SPEC = {
    "input_dim": 4,
    "layers": [{"units": 6, "activation": "elu"}, {"units": 3, "activation": "softmax"}],
    "init": "he_normal",
}


@pytest.fixture(scope="module")
def trained():
    rng = np.random.default_rng(0)
    X = rng.normal(3, 10, size=(60, 4))
    y = rng.integers(0, 3, 60)
    net = Network.from_spec(SPEC, seed=1)
    net.fit(
        X,
        y,
        {"loss": "categorical_crossentropy", "epochs": 3, "standardize": True, "dtype": "float32"},
    )
    net.classes = ["cat", "dog", "eel"]
    return net, X


def test_round_trip_predicts_identically(trained):
    net, X = trained
    data = net.save()
    assert isinstance(data, bytes)
    loaded = Network.load(data)
    np.testing.assert_array_equal(loaded.predict(X), net.predict(X))
    assert loaded.predict(X).dtype == np.float32
    assert loaded.predict_labels(X) == net.predict_labels(X)
    assert set(loaded.predict_labels(X)) <= {"cat", "dog", "eel"}
    assert loaded.classes == ["cat", "dog", "eel"]
    assert loaded.spec.model_dump() == net.spec.model_dump()
    np.testing.assert_array_equal(loaded.x_mean, net.x_mean)
    assert loaded.n_parameters == net.n_parameters == 4 * 6 + 6 + 6 * 3 + 3


def test_archive_holds_plain_arrays_in_api_orientation(trained):
    net, _ = trained
    with np.load(io.BytesIO(net.save()), allow_pickle=False) as npz:
        assert {"W0", "b0", "W1", "b1", "x_mean", "x_std", "meta"} <= set(npz.files)
        assert npz["W0"].shape == (4, 6) and npz["b1"].shape == (3,)
        np.testing.assert_array_equal(npz["W1"], net.weights[1]["W"])
        meta = json.loads(str(npz["meta"]))
    assert meta["classes"] == ["cat", "dog", "eel"] and meta["dtype"] == "float32"


def test_the_json_document_holds_what_the_archive_holds(trained):
    net, _ = trained
    document = json.loads(json.dumps(model_document(net)))  # plain JSON values only
    with np.load(io.BytesIO(net.save()), allow_pickle=False) as npz:
        meta = json.loads(str(npz["meta"]))
        assert {k: document[k] for k in meta} == meta
        assert set(document) == {*meta, "preprocessing", "layers"}
        assert meta["format"] == "backprop-model" and meta["version"] == 1
        assert meta["spec"] == SPEC and meta["dtype"] == "float32"
        # float32 values widen to float64 exactly, so the lists hold the stored values
        for key in ("x_mean", "x_std"):
            np.testing.assert_array_equal(document["preprocessing"][key], npz[key])
        assert len(document["layers"]) == 2
        for i, layer in enumerate(document["layers"]):
            for key in ("W", "b"):
                assert np.shape(layer[key]) == npz[f"{key}{i}"].shape
                np.testing.assert_array_equal(layer[key], npz[f"{key}{i}"])


def test_a_model_without_standardisation_or_classes_says_so_in_json():
    net = Network.from_spec(SPEC, seed=2)
    document = model_document(net)
    assert document["preprocessing"] is None and document["classes"] is None
    assert document["dtype"] == "float64"


def test_untrained_model_without_standardisation_round_trips():
    net = Network.from_spec(SPEC, seed=2)
    loaded = Network.load(net.save())
    assert loaded.x_mean is None and loaded.classes is None
    X = np.random.default_rng(3).normal(size=(5, 4))
    np.testing.assert_array_equal(loaded.forward(X), net.forward(X))


def test_pickled_content_is_refused():
    buf = io.BytesIO()
    np.savez(buf, meta=np.array([{"format": "backprop-model"}], dtype=object))
    with pytest.raises(EngineError, match="not a model artifact"):
        Network.load(buf.getvalue())
    with pytest.raises(EngineError, match="not a model artifact"):
        Network.load(b"not an npz file")


def test_predict_labels_for_one_output_thresholds_at_half():
    spec = {
        "input_dim": 1,
        "layers": [{"units": 1, "activation": "sigmoid"}],
        "initial_weights": [{"W": [[1.0]], "b": [0.0]}],
    }
    net = Network.from_spec(spec)
    X = np.array([[-2.0], [0.5], [3.0]])
    assert net.predict_labels(X) == [0, 1, 1]
    net.classes = ["no", "yes"]
    assert net.predict_labels(X) == ["no", "yes", "yes"]


def test_numpy_class_labels_are_saved_as_plain_values():
    net = Network.from_spec(SPEC, seed=2)
    net.classes = list(np.array([3, 5, 7]))
    assert Network.load(net.save()).classes == [3, 5, 7]
    net.classes = [object(), 1, 2]
    with pytest.raises(EngineError, match="classes must be JSON-able"):
        net.save()


def test_threads_may_predict_with_one_shared_model():
    # The service caches loaded models and serves predictions from a thread pool; NumPy
    # releases the GIL inside its loops, so shared scratch buffers would mix requests.
    from concurrent.futures import ThreadPoolExecutor

    spec = {
        "input_dim": 4,
        "layers": [{"units": 512, "activation": "tanh"}, {"units": 3, "activation": "softmax"}],
    }
    net = Network.from_spec(spec, seed=5)
    rng = np.random.default_rng(4)
    inputs = [rng.normal(size=(300, 4)) for _ in range(16)]
    expected = [net.predict(X) for X in inputs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda X: [net.predict(X) for _ in range(10)], inputs))
    for got, want in zip(results, expected, strict=True):
        for g in got:
            np.testing.assert_array_equal(g, want)
