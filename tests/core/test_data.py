"""Dataset parsing and validation (core.data): what is accepted, and how rejections read."""

from __future__ import annotations

import io
import time
import zipfile

import numpy as np
import pytest

from core.data import (
    DatasetError,
    ParsedDataset,
    feature_names_from_npz_bytes,
    from_npz_bytes,
    parse_csv,
    parse_json,
    parse_npz,
    parse_upload,
    sha256_hex,
    targets_from_npz_bytes,
    to_npz_bytes,
)

LIMITS = {"max_bytes": 1_000_000, "max_cells": 1_000_000}


def csv(text: str, target: str | list[str] = "y", **kw: object) -> ParsedDataset:
    return parse_csv(text.encode(), target, **{**LIMITS, **kw})  # type: ignore[arg-type]


def npz(**arrays: object) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def rejects(fn, *args: object, status: int, parts: list[str], **kw: object) -> DatasetError:  # type: ignore[no-untyped-def]
    with pytest.raises(DatasetError) as info:
        fn(*args, **kw)
    err = info.value
    assert err.status_code == status, str(err)
    for part in parts:
        assert part in str(err), f"{part!r} not in {str(err)!r}"
    return err


# ---------------------------------------------------------------------------- CSV accepted


def test_csv_numeric_target_is_regression() -> None:
    ds = csv("a,b,y\n1,2,0.5\n3,4.5,-1e3\n")
    assert ds.task == "regression" and ds.classes is None
    assert ds.feature_names == ["a", "b"]
    assert ds.X.dtype == np.float64 and ds.y.dtype == np.float64
    np.testing.assert_array_equal(ds.X, [[1, 2], [3, 4.5]])
    np.testing.assert_array_equal(ds.y, [[0.5], [-1000.0]])
    assert (ds.n_samples, ds.n_features, ds.n_targets) == (2, 2, 1)


def test_csv_label_column_is_one_hot_with_sorted_classes() -> None:
    ds = csv(
        "sepal,species,petal\n1,virginica,2\n3,setosa,4\n5,versicolor,6\n7,setosa,8\n", "species"
    )
    assert ds.task == "classification"
    assert ds.classes == ["setosa", "versicolor", "virginica"]
    assert ds.feature_names == ["sepal", "petal"]
    np.testing.assert_array_equal(ds.X, [[1, 2], [3, 4], [5, 6], [7, 8]])
    np.testing.assert_array_equal(ds.y, [[0, 0, 1], [1, 0, 0], [0, 1, 0], [1, 0, 0]])


def test_csv_two_text_labels_are_still_one_hot() -> None:
    ds = csv("x,y\n1,no\n2,yes\n3, no\n")
    assert ds.classes == ["no", "yes"]
    np.testing.assert_array_equal(ds.y, [[1, 0], [0, 1], [1, 0]])


def test_csv_several_targets_comma_separated_or_list() -> None:
    text = "a,t1,b,t2\n1,10,2,20\n3,30,4,40\n"
    for target in ("t1, t2", ["t1", "t2"]):
        ds = csv(text, target)
        assert ds.task == "regression" and ds.feature_names == ["a", "b"]
        np.testing.assert_array_equal(ds.y, [[10, 20], [30, 40]])


def test_csv_binary_01_classification_keeps_one_column() -> None:
    ds = csv("a,y\n1,0\n2,1\n3,1.0\n", task="classification")
    assert ds.task == "classification" and ds.classes == [0, 1]
    np.testing.assert_array_equal(ds.y, [[0], [1], [1]])


def test_csv_numeric_multiclass_is_one_hot_with_int_classes() -> None:
    ds = csv("a,y\n1,5\n2,1\n3,2\n4,5.0\n", task="classification")
    assert ds.classes == [1, 2, 5]
    assert all(type(c) is int for c in ds.classes)
    np.testing.assert_array_equal(ds.y, [[0, 0, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]])


def test_csv_numeric_classes_stay_float_when_not_integral() -> None:
    ds = csv("a,y\n1,0.5\n2,1.5\n3,1\n", task="classification")
    assert ds.classes == [0.5, 1.0, 1.5]
    assert all(type(c) is float for c in ds.classes)


def test_csv_one_hot_targets_accepted_as_is() -> None:
    ds = csv("a,c0,c1,c2\n1,0,1,0\n2,1,0,0\n3,0,0,1\n", "c0,c1,c2", task="classification")
    assert ds.classes == [0, 1, 2]
    np.testing.assert_array_equal(ds.y, [[0, 1, 0], [1, 0, 0], [0, 0, 1]])


def test_csv_bom_crlf_quotes_and_blank_lines() -> None:
    data = '\ufeff"a",b,"the y"\r\n"1",2,3\r\n\r\n4,"5",6\r\n\r\n'.encode()
    ds = parse_csv(data, "the y", **LIMITS)
    assert ds.feature_names == ["a", "b"]
    np.testing.assert_array_equal(ds.X, [[1, 2], [4, 5]])
    np.testing.assert_array_equal(ds.y, [[3], [6]])


def test_csv_explicit_regression_task() -> None:
    assert csv("a,y\n1,0\n2,1\n", task="regression").task == "regression"


def test_csv_of_several_megabytes_parses_quickly() -> None:
    rng = np.random.default_rng(0)
    table = rng.normal(size=(40_000, 11))
    buf = io.StringIO()
    np.savetxt(
        buf,
        table,
        delimiter=",",
        fmt="%.12g",
        header=",".join(f"x{i}" for i in range(11)),
        comments="",
    )
    data = buf.getvalue().encode()
    assert len(data) > 4_000_000
    start = time.perf_counter()
    ds = parse_csv(data, "x10", max_bytes=10_000_000, max_cells=1_000_000)
    # ~0.1 s here; a 50 MB upload takes ~1 s. Generous bound for a shared machine.
    assert time.perf_counter() - start < 3.0
    np.testing.assert_allclose(ds.X, table[:, :10], rtol=1e-11)
    np.testing.assert_allclose(ds.y[:, 0], table[:, 10], rtol=1e-11)


# ---------------------------------------------------------------------------- CSV rejected


@pytest.mark.parametrize(
    ("text", "target", "task", "status", "parts"),
    [
        ("a,b,y\n1,2,3\n4,,6\n", "y", None, 422, ["line 3", "column 'b'", "missing value"]),
        ("a,b,y\n1,2,3\n4,NA,6\n", "y", None, 422, ["line 3", "column 'b'", "missing value"]),
        (
            "a,b,y\n1,2,3\n4,5,6\n7,x7,9\n",
            "y",
            None,
            422,
            ["line 4", "column 'b'", "'x7'", "not a number"],
        ),
        ("a,b,y\n1,nan,3\n", "y", None, 422, ["line 2", "column 'b'", "NaN"]),
        ("a,b,y\n1,2,3\n-inf,5,6\n", "y", None, 422, ["line 3", "column 'a'", "infinite"]),
        ("a,b,y\n1,2,3\n4,5,inf\n", "y", None, 422, ["line 3", "column 'y'", "infinite"]),
        ("a,b,y\n1,2,3\n4,5,\n", "y", None, 422, ["line 3", "column 'y'", "missing value"]),
        ("a,b,y\n1,2,cat\n4,5,\n", "y", None, 422, ["line 3", "column 'y'", "missing value"]),
        ("a,b,y\n1,2,3\n4,5\n", "y", None, 400, ["line 3", "2 fields", "3 columns"]),
        ("a,b,y\n1,2,3,4\n", "y", None, 400, ["line 2", "4 fields", "3 columns"]),
        ("a,b,c\n1,2,3\n", "label", None, 422, ["'label' not found", "columns are: a, b, c"]),
        ("a,b,c\n1,2,3\n", "c,zz", None, 422, ["'zz' not found", "columns are: a, b, c"]),
        ("a,b,c\n1,2,3\n", "", None, 422, ["target", "columns are: a, b, c"]),
        ("a,b,y\n", "y", None, 422, ["zero data rows"]),
        ("a,b,y\n\n\n", "y", None, 422, ["zero data rows"]),
        ("", "y", None, 422, ["empty"]),
        ("a,y\n1,2\n", "a,y", None, 422, ["no feature columns"]),
        ("a,y,a\n1,2,3\n", "y", None, 400, ["'a' twice", "columns 1 and 3"]),
        ('a,y\n1,"2\n', "y", None, 400, ["malformed", "line 2"]),
        ("a,y\n1,2\n", "y", "clustering", 422, ["task", "'clustering'"]),
        ("a,y\n1,cat\n2,dog\n", "y", "regression", 422, ["regression", "'cat'"]),
        ("a,y,z\n1,cat,dog\n2,dog,cat\n", "y,z", None, 422, ["single target column", "'y'"]),
        ("a,y\n1,3\n2,3\n", "y", "classification", 422, ["at least 2 classes"]),
        ("a,y\n1,cat\n2,cat\n", "y", None, 422, ["at least 2 classes", "'cat'"]),
        ("a,c0,c1\n1,0,1\n2,1,1\n", "c0,c1", "classification", 422, ["one-hot", "line 3"]),
        ("a,c0,c1\n1,0,2\n", "c0,c1", "classification", 422, ["one-hot", "line 2"]),
    ],
)
def test_csv_rejections(
    text: str, target: str, task: str | None, status: int, parts: list[str]
) -> None:
    rejects(csv, text, target, task=task, status=status, parts=parts)


def test_csv_rows_after_blank_lines_keep_their_file_line_number() -> None:
    rejects(csv, "a,y\n1,2\n\n\n3,\n", status=422, parts=["line 5", "column 'y'"])


def test_csv_over_byte_limit_is_413_naming_both_sizes() -> None:
    data = b"a,y\n" + b"1,2\n" * 100
    rejects(
        parse_csv,
        data,
        "y",
        max_bytes=100,
        max_cells=10**6,
        status=413,
        parts=[f"file is {len(data)} bytes", "the limit is 100"],
    )


def test_csv_over_cell_limit_is_413_and_stops_early() -> None:
    data = b"a,b,y\n" + b"1,2,3\n" * 200_000
    start = time.perf_counter()
    rejects(
        parse_csv, data, "y", max_bytes=10**7, max_cells=30, status=413, parts=["limit is 30 cells"]
    )
    assert time.perf_counter() - start < 0.5


def test_csv_one_hot_expansion_counts_against_the_cell_limit() -> None:
    text = "a,y\n" + "".join(f"{i},c{i}\n" for i in range(50))
    rejects(csv, text, max_cells=1000, status=413, parts=["one-hot", "limit is 1000"])


def test_csv_not_utf8_is_400_naming_the_line() -> None:
    data = b"a,y\n1,2\n3,\xff\n"
    rejects(parse_csv, data, "y", **LIMITS, status=400, parts=["UTF-8", "line 3", "0xff"])


def test_dataset_error_is_a_value_error() -> None:
    err = rejects(csv, "a,y\n1,\n", status=422, parts=["missing value"])
    assert isinstance(err, ValueError)


# ---------------------------------------------------------------------------- NPZ


def test_npz_numeric_arrays_and_1d_y() -> None:
    X = np.arange(6, dtype=np.int32).reshape(3, 2)
    ds = parse_npz(npz(X=X, y=np.array([0.5, 1.5, 2.5])), **LIMITS)
    assert ds.task == "regression" and ds.feature_names is None
    assert ds.X.dtype == np.float64 and ds.y.shape == (3, 1)
    np.testing.assert_array_equal(ds.X, X)


def test_npz_text_labels_and_one_hot() -> None:
    ds = parse_npz(npz(X=np.ones((3, 2)), y=np.array(["b", "a", "b"])), **LIMITS)
    assert ds.classes == ["a", "b"]
    np.testing.assert_array_equal(ds.y, [[0, 1], [1, 0], [0, 1]])
    onehot = np.eye(3)[[2, 0, 1]]
    ds = parse_npz(npz(X=np.ones((3, 2)), y=onehot), task="classification", **LIMITS)
    assert ds.classes == [0, 1, 2]
    np.testing.assert_array_equal(ds.y, onehot)


@pytest.mark.parametrize(
    ("data", "status", "parts"),
    [
        (b"definitely not a zip", 400, ["not a valid .npz"]),
        (npz(X=np.ones((2, 2)), target=np.ones(2)), 422, ["'X' and 'y'", "missing y", "target"]),
        (npz(X=np.array([[1, None]], dtype=object), y=np.ones(1)), 422, ["'X'", "object"]),
        (npz(X=np.ones(3), y=np.ones(3)), 422, ["2-D", "(3,)"]),
        (npz(X=np.ones((3, 2, 1)), y=np.ones(3)), 422, ["2-D", "(3, 2, 1)"]),
        (npz(X=np.ones((3, 2)), y=np.ones(2)), 422, ["X has 3 rows but y has 2"]),
        (npz(X=np.zeros((0, 2)), y=np.zeros(0)), 422, ["zero rows"]),
        (npz(X=np.zeros((2, 0)), y=np.zeros(2)), 422, ["zero feature"]),
        (npz(X=np.array([[1.0, 2.0], [np.nan, 3.0]]), y=np.ones(2)), 422, ["X[1][0]", "NaN"]),
        (npz(X=np.ones((2, 2)), y=np.array([1.0, np.inf])), 422, ["y[1]", "infinite"]),
        (npz(X=np.array([["a", "b"]]), y=np.ones(1)), 422, ["X must hold numbers"]),
        (npz(X=np.ones((2, 2)), y=np.ones((2, 2, 2))), 422, ["y must be 1-D", "(2, 2, 2)"]),
    ],
)
def test_npz_rejections(data: bytes, status: int, parts: list[str]) -> None:
    rejects(parse_npz, data, **LIMITS, status=status, parts=parts)


def test_npz_object_y_is_refused_without_unpickling() -> None:
    data = npz(X=np.ones((1, 1)), y=np.array([{"evil": 1}], dtype=object))
    rejects(parse_npz, data, **LIMITS, status=422, parts=["'y'", "object", "pickle"])


def test_npz_cell_limit_is_checked_before_decompressing() -> None:
    # 8 MB of zeros compresses to a few kB: the header alone must trigger the 413.
    data = npz(X=np.zeros((1000, 1000)), y=np.zeros(1000))
    assert len(data) < 100_000
    rejects(
        parse_npz,
        data,
        max_bytes=10**6,
        max_cells=10_000,
        status=413,
        parts=["1001000 cells", "limit is 10000"],
    )


def test_npz_truncated_file_is_400() -> None:
    data = npz(X=np.random.default_rng(0).normal(size=(50, 4)), y=np.ones(50))
    rejects(parse_npz, data[: len(data) // 2], **LIMITS, status=400, parts=[".npz"])


def test_npz_over_byte_limit_is_413() -> None:
    data = npz(X=np.ones((2, 2)), y=np.ones(2))
    rejects(parse_npz, data, max_bytes=10, max_cells=100, status=413, parts=["limit is 10"])


def test_npz_corrupt_member_data_is_400() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("X.npy", b"\x93NUMPY garbage")
        zf.writestr("y.npy", b"")
    rejects(parse_npz, buf.getvalue(), **LIMITS, status=400, parts=["'X'", "unreadable"])


# ---------------------------------------------------------------------------- JSON


def test_json_1d_and_2d_y() -> None:
    ds = parse_json([[1, 2], [3, 4.5]], [1, 2], max_cells=100)
    assert ds.y.shape == (2, 1) and ds.task == "regression"
    ds = parse_json([[1, 2], [3, 4.5]], [[1, 2], [3, 4]], max_cells=100)
    np.testing.assert_array_equal(ds.y, [[1, 2], [3, 4]])
    assert ds.feature_names is None


def test_json_labels_and_one_hot_classification() -> None:
    ds = parse_json([[0], [1], [2]], ["dog", "cat", "dog"], max_cells=100)
    assert ds.classes == ["cat", "dog"] and ds.task == "classification"
    ds = parse_json([[0], [1]], [[1, 0], [0, 1]], task="classification", max_cells=100)
    assert ds.classes == [0, 1]
    np.testing.assert_array_equal(ds.y, [[1, 0], [0, 1]])


def test_json_binary_classification() -> None:
    ds = parse_json([[0], [1]], [1, 0], task="classification", max_cells=100)
    assert ds.classes == [0, 1] and ds.y.shape == (2, 1)


@pytest.mark.parametrize(
    ("X", "y", "status", "parts"),
    [
        ([[1, 2], [3]], [1, 2], 400, ["ragged", "X[1]"]),
        ([[1, 2], [3, None]], [1, 2], 422, ["X[1][1]", "missing value"]),
        ([[1, 2], [3, "4"]], [1, 2], 422, ["X[1][1]", "not a number"]),
        ([[1, 2], [3, float("nan")]], [1, 2], 422, ["X[1][1]", "NaN"]),
        ([[1, 2], [3, 10**400]], [1, 2], 422, ["too large"]),
        ([], [], 422, ["zero rows"]),
        ([1, 2], [1, 2], 422, ["2-D"]),
        ("abc", [1], 422, ["X must be a list"]),
        ([[1, 2], [3, 4]], [1], 422, ["X has 2 rows but y has 1"]),
        ([[1, 2], [3, 4]], [1, None], 422, ["y[1]", "missing value"]),
        ([[1, 2], [3, 4]], [1, "a"], 422, ["y[1]", "not a number"]),
        ([[1, 2], [3, 4]], [[1, 2], [3]], 400, ["ragged", "y[1]"]),
        ([[1, 2], [3, 4]], [1, float("inf")], 422, ["y[1]", "infinite"]),
        ([[1, 2], [3, 4]], {"y": 1}, 422, ["y must be a list"]),
        ([[1, 2], [3, 4]], ["a", "a"], 422, ["at least 2 classes"]),
    ],
)
def test_json_rejections(X: object, y: object, status: int, parts: list[str]) -> None:
    rejects(parse_json, X, y, max_cells=100, status=status, parts=parts)


@pytest.mark.parametrize(
    ("X", "where"),
    [
        ([[True, 1]], "X[0][0] (row 0, column 0"),  # NumPy alone would read 1, 1
        ([[1.5, 2.5], [3.5, False]], "X[1][1] (row 1, column 1"),  # ... or 3.5, 0.0
        ([[True, False], [False, True]], "X[0][0]"),  # ... or a bool array
    ],
)
def test_json_booleans_in_X_are_refused_like_in_y(X: list[list[object]], where: str) -> None:
    err = rejects(parse_json, X, [1.0] * len(X), max_cells=100, status=422, parts=[where])
    assert "is not a number" in str(err) and ("true" in str(err) or "false" in str(err))
    rejects(parse_json, [[1.0]], [True], max_cells=100, status=422, parts=["y[0]", "true"])


def test_json_boolean_deep_in_a_large_X_is_found() -> None:
    X = np.arange(20_000, dtype=np.float64).reshape(5_000, 4).tolist()
    X[4_321][2] = True
    rejects(parse_json, X, [0.0] * 5_000, max_cells=100_000, status=422, parts=["X[4321][2]"])
    X[4_321][2] = 1  # an integer is a number
    assert parse_json(X, [0.0] * 5_000, max_cells=100_000).X[4_321, 2] == 1.0


def test_json_cell_limit_is_413() -> None:
    rejects(
        parse_json,
        [[1.0] * 10] * 10,
        [0.0] * 10,
        max_cells=50,
        status=413,
        parts=["110 cells", "limit is 50"],
    )


# ---------------------------------------------------------------------------- uploads


@pytest.mark.parametrize(
    ("filename", "content_type"),
    [
        ("data.csv", None),
        ("DATA.CSV", "application/octet-stream"),
        (None, "text/csv; charset=utf-8"),
        ("blob", "application/vnd.ms-excel"),
    ],
)
def test_upload_picks_csv(filename: str | None, content_type: str | None) -> None:
    ds = parse_upload(filename, content_type, b"a,y\n1,2\n", target="y", task=None, **LIMITS)
    assert ds.feature_names == ["a"]


@pytest.mark.parametrize(
    ("filename", "content_type"),
    [
        ("data.npz", None),
        ("d.NPZ", "application/octet-stream"),
        (None, "application/x-npz"),
        ("upload", "application/zip"),
    ],
)
def test_upload_picks_npz_and_ignores_target(
    filename: str | None, content_type: str | None
) -> None:
    data = npz(X=np.ones((2, 3)), y=np.array([0, 1]))
    ds = parse_upload(
        filename, content_type, data, target="ignored", task="classification", **LIMITS
    )
    assert (ds.n_features, ds.classes) == (3, [0, 1])


def test_upload_unknown_format_is_415() -> None:
    rejects(
        parse_upload,
        "data.xlsx",
        "application/vnd.openxmlformats",
        b"PK..",
        target="y",
        task=None,
        **LIMITS,
        status=415,
        parts=["data.xlsx", ".csv", ".npz"],
    )
    rejects(
        parse_upload,
        None,
        None,
        b"a,y\n1,2\n",
        target="y",
        task=None,
        **LIMITS,
        status=415,
        parts=["unsupported"],
    )


def test_upload_csv_without_target_is_422() -> None:
    rejects(
        parse_upload,
        "d.csv",
        None,
        b"a,y\n1,2\n",
        target=None,
        task=None,
        **LIMITS,
        status=422,
        parts=["'target'"],
    )


def test_upload_size_checked_first() -> None:
    rejects(
        parse_upload,
        "d.xlsx",
        None,
        b"x" * 20,
        target=None,
        task=None,
        max_bytes=10,
        max_cells=10,
        status=413,
        parts=["20 bytes", "limit is 10"],
    )


# ---------------------------------------------------------------------------- storage


@pytest.mark.parametrize(
    "ds",
    [
        parse_csv(b"sepal,species\n1,b\n2,a\n3,c\n", "species", **LIMITS),
        parse_json([[1.0, 2.0]], [[0.5, 1.5]], max_cells=10),
        parse_json([[1], [2], [3]], [1, 2, 3], task="classification", max_cells=100),
        parse_json([[1], [2]], [0.5, 1.5], task="classification", max_cells=100),
    ],
    ids=["text-classes", "regression", "int-classes", "float-classes"],
)
def test_npz_bytes_round_trip(ds: ParsedDataset) -> None:
    blob = to_npz_bytes(ds)
    back = from_npz_bytes(blob)
    np.testing.assert_array_equal(back.X, ds.X)
    np.testing.assert_array_equal(back.y, ds.y)
    assert back.X.dtype == np.float64 and back.y.dtype == np.float64
    assert back.task == ds.task
    assert back.classes == ds.classes
    assert [type(c) for c in back.classes or []] == [type(c) for c in ds.classes or []]
    assert back.feature_names == ds.feature_names
    np.testing.assert_array_equal(targets_from_npz_bytes(blob), ds.y)
    assert feature_names_from_npz_bytes(blob) == ds.feature_names
    # Plain arrays only: loadable without pickle, and re-parseable as an upload.
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        assert {"X", "y"} <= set(z.files)
        assert all(z[name].dtype != object for name in z.files)
    assert parse_npz(blob, **LIMITS).n_samples == ds.n_samples


def test_from_npz_bytes_rejects_garbage() -> None:
    rejects(from_npz_bytes, b"nope", status=400, parts=["unreadable"])
    rejects(targets_from_npz_bytes, b"nope", status=400, parts=["unreadable"])
    rejects(feature_names_from_npz_bytes, b"nope", status=400, parts=["unreadable"])


def test_sha256_hex() -> None:
    assert sha256_hex(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
