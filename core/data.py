"""Dataset parsing and validation: uploaded CSV, NPZ or JSON → float64 arrays.

This module turns what a client sends to ``POST /api/v1/datasets`` (API.md §4) into a
:class:`ParsedDataset` — features ``X`` and targets ``y`` as float64 arrays plus the task and
the class labels — or raises :class:`DatasetError`, whose ``status_code`` is the HTTP status
to answer with and whose message names the offending row, column or limit. It also
serialises a parsed dataset to compressed ``.npz`` bytes (no pickle) for storage.

It is not the place for HTTP, storage or training: it imports NumPy and the standard library
only.

Conventions:

- CSV positions are given as file *lines*, counting the header as line 1 (so the first data
  row is line 2), and columns by header name. NPZ/JSON positions are 0-based array indices,
  written ``X[3][1]``.
- Size limits are checked before the data is expanded in memory: ``max_bytes`` bounds the
  upload, ``max_cells`` bounds ``n_samples * (n_features + n_targets)`` of the raw data and of
  the one-hot encoded result.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import math
import zipfile
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np

__all__ = [
    "TASKS",
    "DatasetError",
    "ParsedDataset",
    "feature_names_from_npz_bytes",
    "from_npz_bytes",
    "parse_csv",
    "parse_json",
    "parse_npz",
    "parse_upload",
    "sha256_hex",
    "targets_from_npz_bytes",
    "to_npz_bytes",
]

TASKS = ("regression", "classification")

# Cell texts read as "no value" rather than as a bad number or a class label.
_MISSING_TOKENS = frozenset({"", "na", "n/a", "null", "none", "?"})
# In a target column "nan" is a missing label, not a class called "nan".
_MISSING_TARGET_TOKENS = _MISSING_TOKENS | {"nan"}

_CSV_TYPES = frozenset(
    {"text/csv", "application/csv", "text/comma-separated-values", "application/vnd.ms-excel"}
)
_NPZ_TYPES = frozenset({"application/x-npz", "application/npz", "application/zip"})


class DatasetError(ValueError):
    """A dataset that cannot be accepted; ``str(err)`` says why, ``status_code`` how to answer.

    400 malformed (undecodable CSV/NPZ, ragged rows), 413 too large, 415 unsupported format,
    422 invalid values (NaN/inf, missing values, unknown target column, zero rows, bad task).
    """

    status_code: int

    def __init__(self, message: str, status_code: int = 422) -> None:
        super().__init__(message)
        self.status_code = status_code


@dataclass
class ParsedDataset:
    """A validated dataset.

    Attributes:
        X: features, shape ``(n_samples, n_features)``, float64, all finite.
        y: targets, shape ``(n_samples, n_targets)``, float64, all finite; one-hot
            ``(n_samples, n_classes)`` for multi-class classification, one 0/1 column for
            binary classification of a numeric {0, 1} target.
        task: ``"regression"`` or ``"classification"``.
        classes: class labels (str, int or float) in the column order of ``y`` — for the
            single-column binary case ``[0, 1]`` — or None for regression.
        feature_names: the CSV header names of the feature columns, else None.
    """

    X: np.ndarray
    y: np.ndarray
    task: str
    classes: list[Any] | None = None
    feature_names: list[str] | None = None

    @property
    def n_samples(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])

    @property
    def n_targets(self) -> int:
        return int(self.y.shape[1])


def sha256_hex(data: bytes) -> str:
    """The SHA-256 digest of ``data`` as 64 lowercase hex digits."""
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- checks


def _check_task(task: str | None) -> None:
    if task is not None and task not in TASKS:
        raise DatasetError(f"task must be 'regression' or 'classification', not {task!r}", 422)


def _check_bytes(data: bytes, max_bytes: int) -> None:
    if len(data) > max_bytes:
        raise DatasetError(f"file is {len(data)} bytes; the limit is {max_bytes}", 413)


def _check_cells(n_rows: int, n_cols: int, max_cells: int, what: str = "the dataset") -> None:
    cells = n_rows * n_cols
    if cells > max_cells:
        raise DatasetError(
            f"{what} has {n_rows} rows x {n_cols} columns = {cells} cells; "
            f"the limit is {max_cells} cells",
            413,
        )


def _first_nonfinite(a: np.ndarray) -> tuple[int, int, float] | None:
    """``(row, column, value)`` of the first NaN/inf in a 2-D float array, else None."""
    bad = ~np.isfinite(a)
    if not bad.any():
        return None
    i, j = np.argwhere(bad)[0]
    return int(i), int(j), float(a[i, j])


def _describe_nonfinite(value: float) -> str:
    return "NaN is not allowed" if math.isnan(value) else f"{value} (infinite) is not allowed"


# --------------------------------------------------------------------------- targets


def _class_value(v: float) -> int | float:
    return int(v) if float(v).is_integer() else float(v)


def _one_hot(codes: np.ndarray, n_classes: int) -> np.ndarray:
    """``(n_samples,)`` integer codes → ``(n_samples, n_classes)`` float64 one-hot."""
    y = np.zeros((codes.shape[0], n_classes), dtype=np.float64)
    y[np.arange(codes.shape[0]), codes] = 1.0
    return y


def _targets_from_numbers(
    y: np.ndarray,
    task: str | None,
    n_features: int,
    max_cells: int,
    row_name: Callable[[int], str],
) -> tuple[np.ndarray, str, list[Any] | None]:
    """Finite numeric targets ``(n_samples, k)`` → ``(y, task, classes)`` per API.md §4."""
    if task != "classification":
        return y, "regression", None
    n, k = y.shape
    if k == 1:
        values = np.unique(y[:, 0])
        if values.size < 2:
            raise DatasetError(
                f"classification needs at least 2 classes; the target has only {values.size} "
                f"distinct value ({_class_value(values[0])})",
                422,
            )
        if values.size == 2 and values[0] == 0.0 and values[1] == 1.0:
            return y, "classification", [0, 1]
        _check_cells(n, n_features + values.size, max_cells, "the one-hot encoded dataset")
        codes = np.searchsorted(values, y[:, 0])
        integral = bool(np.all(values == np.round(values)))
        classes: list[Any] = [int(v) if integral else float(v) for v in values]
        return _one_hot(codes, values.size), "classification", classes
    # Several numeric columns with task "classification": they must already be one-hot.
    not_binary = ~np.isin(y, (0.0, 1.0)).all(axis=1)
    not_single = y.sum(axis=1) != 1.0
    bad = np.flatnonzero(not_binary | not_single)
    if bad.size:
        i = int(bad[0])
        raise DatasetError(
            f"task is 'classification' and y has {k} columns, so y must be one-hot "
            f"(0/1 values, one 1 per row); {row_name(i)} is {y[i].tolist()}",
            422,
        )
    return y, "classification", list(range(k))


def _targets_from_labels(
    labels: np.ndarray,
    task: str | None,
    n_features: int,
    max_cells: int,
    what: str,
) -> tuple[np.ndarray, str, list[Any]]:
    """String class labels ``(n_samples,)`` → one-hot ``(y, "classification", classes)``."""
    if task == "regression":
        example = labels[0] if labels.size else ""
        raise DatasetError(
            f"task is 'regression' but {what} holds text labels (e.g. {str(example)!r}); "
            "regression needs numeric targets",
            422,
        )
    classes, codes = np.unique(labels, return_inverse=True)
    if classes.size < 2:
        raise DatasetError(
            f"classification needs at least 2 classes; {what} has only "
            f"{classes.size} ({', '.join(repr(str(c)) for c in classes)})",
            422,
        )
    _check_cells(labels.shape[0], n_features + classes.size, max_cells, "the one-hot dataset")
    return _one_hot(codes.reshape(-1), classes.size), "classification", [str(c) for c in classes]


# --------------------------------------------------------------------------- CSV


def _split_target(target: str | Sequence[str] | None) -> list[str]:
    if target is None:
        return []
    names = target.split(",") if isinstance(target, str) else list(target)
    return [n.strip() for n in names if n.strip()]


def _column_ref(names: list[str], j: int) -> str:
    return f"column {names[j]!r}" if names[j] else f"column {j + 1} (unnamed)"


def _line_ref(line: int, row: int, header_line: int) -> str:
    return f"line {line} (data row {row}; the header is line {header_line})"


def _decode_check(data: bytes) -> None:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DatasetError(
            f"the CSV is not UTF-8 text: line {line} has byte 0x{data[e.start]:02x} "
            f"at offset {e.start} that cannot be decoded",
            400,
        ) from None


def parse_csv(
    data: bytes,
    target: str | list[str],
    *,
    task: str | None = None,
    max_bytes: int,
    max_cells: int,
) -> ParsedDataset:
    """Parse a comma-separated UTF-8 CSV with a header row.

    Args:
        data: the file's bytes.
        target: the target column name(s): a comma-separated string or a list.
        task: ``"regression"``, ``"classification"`` or None (infer: text labels mean
            classification, numbers regression).
        max_bytes: largest accepted ``len(data)`` (413 above).
        max_cells: largest ``n_samples * n_columns`` (413 above), checked while reading.

    Returns:
        The dataset; ``feature_names`` are the header names of the non-target columns in
        file order.

    Raises:
        DatasetError: see the class; messages name the file line and the column.
    """
    _check_bytes(data, max_bytes)
    _check_task(task)
    _decode_check(data)

    stream = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", newline="")
    reader = csv.reader(stream, strict=True)
    try:
        header = next(reader, None)
        while header is not None and not [c for c in header if c.strip()]:
            header = next(reader, None)
    except csv.Error as e:
        raise DatasetError(f"malformed CSV at line {reader.line_num}: {e}", 400) from None
    if header is None:
        raise DatasetError("the CSV is empty: it has no header row and zero data rows", 422)
    names = [h.strip() for h in header]
    header_line = reader.line_num
    seen: dict[str, int] = {}
    for j, name in enumerate(names):
        if name in seen:
            raise DatasetError(
                f"the header names column {name!r} twice (columns {seen[name] + 1} and {j + 1})",
                400,
            )
        seen[name] = j

    wanted = _split_target(target)
    columns_list = ", ".join(n or f"(unnamed column {j + 1})" for j, n in enumerate(names))
    if not wanted:
        raise DatasetError(
            f"name the target column(s) with 'target'; columns are: {columns_list}", 422
        )
    target_idx: list[int] = []
    for name in wanted:
        if name not in seen:
            raise DatasetError(
                f"target column {name!r} not found; columns are: {columns_list}", 422
            )
        if seen[name] in target_idx:
            raise DatasetError(f"target column {name!r} is named twice", 422)
        target_idx.append(seen[name])
    feature_idx = [j for j in range(len(names)) if j not in target_idx]
    if not feature_idx:
        raise DatasetError(
            "no feature columns: every column is a target; columns are: " + columns_list, 422
        )

    n_cols = len(names)
    max_rows = max_cells // n_cols
    get_features = itemgetter(*feature_idx)
    features = array("d")
    target_cols: list[list[str]] = [[] for _ in target_idx]
    lines = array("q")
    row: list[str] = []

    def here() -> str:
        """The record the reader just returned."""
        return _line_ref(reader.line_num, len(lines) + 1, header_line)

    def at(i: int) -> str:
        """Data row ``i`` (0-based) after reading."""
        return _line_ref(int(lines[i]), i + 1, header_line)

    def bad_feature_cell() -> DatasetError:
        for j in feature_idx:
            text = row[j].strip()
            if text.lower() in _MISSING_TOKENS:
                return DatasetError(f"{here()}, {_column_ref(names, j)}: missing value", 422)
            try:
                float(text)
            except ValueError:
                return DatasetError(
                    f"{here()}, {_column_ref(names, j)}: {row[j]!r} is not a number",
                    422,
                )
        raise AssertionError("unreachable: no bad cell in a row that failed to convert")

    try:
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip() and n_cols > 1):
                continue  # blank line
            if len(row) != n_cols:
                raise DatasetError(
                    f"ragged rows: {here()} has {len(row)} fields "
                    f"but the header (line {header_line}) has {n_cols} columns",
                    400,
                )
            if len(lines) >= max_rows:
                raise DatasetError(
                    f"the CSV has more than {max_rows} data rows x {n_cols} columns; "
                    f"the limit is {max_cells} cells",
                    413,
                )
            try:
                if len(feature_idx) == 1:
                    features.append(float(get_features(row)))
                else:
                    features.extend(map(float, get_features(row)))
            except ValueError:
                raise bad_feature_cell() from None
            for col, j in zip(target_cols, target_idx, strict=True):
                col.append(row[j])
            lines.append(reader.line_num)
    except csv.Error as e:
        raise DatasetError(f"malformed CSV at line {reader.line_num}: {e}", 400) from None

    n = len(lines)
    if n == 0:
        raise DatasetError("the CSV has a header but zero data rows", 422)
    # A writable view of the array("d") buffer: no second copy of the features.
    X = np.frombuffer(features, dtype=np.float64).reshape(n, len(feature_idx))
    bad = _first_nonfinite(X)
    if bad is not None:
        i, jj, value = bad
        raise DatasetError(
            f"{at(i)}, {_column_ref(names, feature_idx[jj])}: {_describe_nonfinite(value)}",
            422,
        )

    # Targets: first missing cells, then numbers, else (one column) text class labels.
    numeric: list[np.ndarray] = []
    label_col: int | None = None
    for col, j in zip(target_cols, target_idx, strict=True):
        for i, text in enumerate(col):
            if text.strip().lower() in _MISSING_TARGET_TOKENS:
                raise DatasetError(f"{at(i)}, {_column_ref(names, j)}: missing value", 422)
        try:
            values = np.array(list(map(float, col)), dtype=np.float64)
        except ValueError:
            label_col = j
            break
        finite = np.isfinite(values)
        if not finite.all():
            i = int(np.flatnonzero(~finite)[0])
            raise DatasetError(
                f"{at(i)}, {_column_ref(names, j)}: {_describe_nonfinite(float(values[i]))}",
                422,
            )
        numeric.append(values)

    feature_names = [names[j] for j in feature_idx]
    classes: list[Any] | None
    if label_col is not None:
        if len(target_idx) > 1:
            raise DatasetError(
                f"target {_column_ref(names, label_col)} holds text labels; class labels must "
                f"be a single target column, but {len(target_idx)} target columns were named",
                422,
            )
        labels = np.array([t.strip() for t in target_cols[0]])
        y, task_out, classes = _targets_from_labels(
            labels, task, len(feature_idx), max_cells, f"target {_column_ref(names, label_col)}"
        )
    else:
        y, task_out, classes = _targets_from_numbers(
            np.column_stack(numeric),
            task,
            len(feature_idx),
            max_cells,
            at,
        )
    return ParsedDataset(X=X, y=y, task=task_out, classes=classes, feature_names=feature_names)


# --------------------------------------------------------------------------- arrays


def _from_arrays(X: np.ndarray, y: np.ndarray, task: str | None, max_cells: int) -> ParsedDataset:
    """Validate loaded ``X`` and ``y`` (any dtype) from an NPZ or JSON body."""
    if X.dtype.kind not in "biuf":
        raise DatasetError(f"X must hold numbers; its dtype is {X.dtype}", 422)
    if X.ndim != 2:
        raise DatasetError(
            f"X must be 2-D (n_samples, n_features); it has shape {tuple(X.shape)}", 422
        )
    if y.ndim not in (1, 2):
        raise DatasetError(
            f"y must be 1-D (n_samples,) or 2-D (n_samples, n_targets); "
            f"it has shape {tuple(y.shape)}",
            422,
        )
    if X.shape[0] == 0:
        raise DatasetError("the dataset has zero rows", 422)
    if X.shape[1] == 0:
        raise DatasetError("X has zero feature columns", 422)
    if X.shape[0] != y.shape[0]:
        raise DatasetError(f"X has {X.shape[0]} rows but y has {y.shape[0]}", 422)
    if y.ndim == 2 and y.shape[1] == 0:
        raise DatasetError("y has zero target columns", 422)
    n, n_features = X.shape
    _check_cells(n, n_features + (1 if y.ndim == 1 else y.shape[1]), max_cells)

    X = X.astype(np.float64)
    bad = _first_nonfinite(X)
    if bad is not None:
        i, j, value = bad
        raise DatasetError(
            f"X[{i}][{j}] (row {i}, column {j}, counting from 0): {_describe_nonfinite(value)}",
            422,
        )

    classes: list[Any] | None
    if y.dtype.kind in "US":
        if y.ndim == 2 and y.shape[1] != 1:
            raise DatasetError(
                f"y holds text labels, so it must be one column; it has shape {tuple(y.shape)}",
                422,
            )
        labels = y.reshape(-1)
        if labels.dtype.kind == "S":
            try:
                labels = np.char.decode(labels, "utf-8")
            except UnicodeDecodeError:
                raise DatasetError("y holds byte strings that are not UTF-8", 422) from None
        labels = np.char.strip(labels)
        missing = np.flatnonzero(np.isin(np.char.lower(labels), list(_MISSING_TARGET_TOKENS)))
        if missing.size:
            raise DatasetError(f"y[{int(missing[0])}] (counting from 0): missing value", 422)
        yy, task_out, classes = _targets_from_labels(labels, task, n_features, max_cells, "y")
        return ParsedDataset(X=X, y=yy, task=task_out, classes=classes)
    if y.dtype.kind not in "biuf":
        raise DatasetError(f"y must hold numbers or text labels; its dtype is {y.dtype}", 422)
    y2 = y.astype(np.float64).reshape(n, -1)
    bad = _first_nonfinite(y2)
    if bad is not None:
        i, j, value = bad
        where = f"y[{i}][{j}]" if y.ndim == 2 else f"y[{i}]"
        raise DatasetError(f"{where} (counting from 0): {_describe_nonfinite(value)}", 422)
    yy, task_out, classes = _targets_from_numbers(
        y2, task, n_features, max_cells, lambda i: f"y[{i}]"
    )
    return ParsedDataset(X=X, y=yy, task=task_out, classes=classes)


# --------------------------------------------------------------------------- NPZ


def _npy_header(zf: zipfile.ZipFile, member: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a ``.npy`` member, read from its header without loading data."""
    with zf.open(member) as fp:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, _fortran, dtype = np.lib.format.read_array_header_1_0(fp)
        else:
            # Versions 2.0 and 3.0 share the layout; 3.0 only allows UTF-8 field names.
            shape, _fortran, dtype = np.lib.format.read_array_header_2_0(fp)
    return tuple(int(s) for s in shape), dtype


def parse_npz(
    data: bytes, *, task: str | None = None, max_bytes: int, max_cells: int
) -> ParsedDataset:
    """Parse a ``.npz`` holding arrays ``X`` ``(n_samples, n_features)`` and ``y``.

    ``y`` is ``(n_samples,)`` or ``(n_samples, n_targets)``, numeric or text labels. Arrays
    load with ``allow_pickle=False``; their headers are checked against ``max_cells`` before
    any data is decompressed, so a small compressed file cannot expand without bound.
    """
    _check_bytes(data, max_bytes)
    _check_task(task)
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise DatasetError(f"not a valid .npz file (a zip of .npy arrays): {e}", 400) from None
    with zf:
        members = {n[:-4]: n for n in zf.namelist() if n.endswith(".npy")}
        missing = [k for k in ("X", "y") if k not in members]
        if missing:
            held = ", ".join(sorted(members)) or "no arrays"
            raise DatasetError(
                f"the .npz must hold arrays 'X' and 'y'; missing {', '.join(missing)} "
                f"(it holds: {held})",
                422,
            )
        headers: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        for key in ("X", "y"):
            try:
                headers[key] = _npy_header(zf, members[key])
            except Exception as e:  # any failure to read a header is a malformed file
                raise DatasetError(f"array {key!r} in the .npz is unreadable: {e}", 400) from None
        total = 0
        for key, (shape, dtype) in headers.items():
            if dtype.hasobject:
                raise DatasetError(
                    f"array {key!r} holds Python objects (dtype=object), which are not loaded "
                    "(no pickle); save numeric arrays (or text labels for y)",
                    422,
                )
            cells = math.prod(shape)
            # Text labels count by their size in float64 cells too, so itemsize is bounded.
            total += max(cells, cells * dtype.itemsize // 8)
        if total > max_cells:
            raise DatasetError(
                f"the arrays hold {total} cells (X {headers['X'][0]}, y {headers['y'][0]}); "
                f"the limit is {max_cells} cells",
                413,
            )
        arrays: dict[str, np.ndarray] = {}
        for key in ("X", "y"):
            try:
                with zf.open(members[key]) as fp:
                    arrays[key] = np.lib.format.read_array(fp, allow_pickle=False)
            except Exception as e:  # truncated or corrupt data is a malformed file
                raise DatasetError(f"array {key!r} in the .npz is unreadable: {e}", 400) from None
    return _from_arrays(arrays["X"], arrays["y"], task, max_cells)


# --------------------------------------------------------------------------- JSON


def _shown(value: Any) -> str:
    """A value as the client wrote it: JSON spelling for true/false, else ``repr``."""
    return json.dumps(value) if isinstance(value, bool) else repr(value)


def _json_matrix_error(X: Any) -> DatasetError:
    """Describe the first structural or type problem of a JSON ``X``."""
    problem = _json_matrix_problem(X)
    return problem or DatasetError("X must be a list of rows of numbers", 422)


def _json_matrix_problem(X: list[Any]) -> DatasetError | None:
    """The first structural or type problem of a JSON ``X``, None if there is none."""
    width: int | None = None
    for i, row in enumerate(X):
        if not isinstance(row, list):
            return DatasetError(f"X[{i}] must be a list of numbers (a row), not {row!r}", 422)
        if width is None:
            width = len(row)
        elif len(row) != width:
            return DatasetError(
                f"ragged rows: X[{i}] has {len(row)} values but X[0] has {width} "
                "(rows counted from 0)",
                400,
            )
        for j, v in enumerate(row):
            if v is None:
                return DatasetError(f"X[{i}][{j}] (counting from 0): missing value", 422)
            if isinstance(v, bool) or not isinstance(v, int | float):
                return DatasetError(
                    f"X[{i}][{j}] (row {i}, column {j}, counting from 0): {_shown(v)} is not "
                    "a number",
                    422,
                )
    return None


def _json_y_array(y: Any) -> np.ndarray:
    """Convert a JSON ``y`` (1-D or 2-D list of numbers, or 1-D list of text labels)."""
    if not isinstance(y, list):
        raise DatasetError("y must be a list (1-D) or a list of rows (2-D)", 422)
    if y and all(isinstance(v, str) for v in y):
        return np.array(y, dtype=np.str_)
    for i, v in enumerate(y):
        if v is None:
            raise DatasetError(f"y[{i}] (counting from 0): missing value", 422)
        if isinstance(v, list):
            for j, w in enumerate(v):
                if w is None:
                    raise DatasetError(f"y[{i}][{j}] (counting from 0): missing value", 422)
                if isinstance(w, bool) or not isinstance(w, int | float):
                    raise DatasetError(
                        f"y[{i}][{j}] (counting from 0): {_shown(w)} is not a number", 422
                    )
        elif isinstance(v, bool) or not isinstance(v, int | float):
            raise DatasetError(
                f"y[{i}] (counting from 0): {_shown(v)} is not a number; y must be all numbers "
                "or all text labels",
                422,
            )
    try:
        return np.array(y, dtype=np.float64)
    except ValueError:
        if any(isinstance(v, list) for v in y) and not all(isinstance(v, list) for v in y):
            raise DatasetError("y mixes numbers and rows; use a 1-D or a 2-D list", 422) from None
        width = len(y[0])
        for i, v in enumerate(y):
            if len(v) != width:
                raise DatasetError(
                    f"ragged rows: y[{i}] has {len(v)} values but y[0] has {width}", 400
                ) from None
        raise
    except OverflowError:
        raise DatasetError("y holds a number too large for float64", 422) from None


def parse_json(X: Any, y: Any, *, task: str | None = None, max_cells: int) -> ParsedDataset:
    """Validate a JSON body's ``X`` (list of rows of numbers) and ``y``.

    ``y`` is a 1-D list ``(n_samples,)`` of numbers or of text labels, or a 2-D list
    ``(n_samples, n_targets)`` of numbers. Positions in messages are 0-based indices.
    """
    _check_task(task)
    if not isinstance(X, list):
        raise DatasetError("X must be a list of rows (a 2-D list of numbers)", 422)
    if not X:
        raise DatasetError("the dataset has zero rows (X is empty)", 422)
    first = X[0]
    if isinstance(first, list):
        # Bound memory before converting: rows x width of the first row (+ targets).
        y_width = len(y[0]) if isinstance(y, list) and y and isinstance(y[0], list) else 1
        _check_cells(len(X), len(first) + y_width, max_cells)
    try:
        X_arr = np.array(X)
    except (ValueError, TypeError, OverflowError):
        raise _json_matrix_error(X) from None
    if X_arr.dtype.kind == "O" and _json_matrix_problem(X) is None:
        # Only numbers, but some Python ints are beyond int64: go through float64.
        try:
            X_arr = np.array(X, dtype=np.float64)
        except OverflowError:
            raise DatasetError("X holds a number too large for float64", 422) from None
    if X_arr.dtype.kind not in "biuf":
        raise _json_matrix_error(X)
    if X_arr.ndim != 2:
        raise DatasetError(
            f"X must be 2-D (a list of rows of numbers); it has shape {tuple(X_arr.shape)}", 422
        )
    # NumPy reads true/false as 1/0 (alone, or beside numbers): refuse them as y does.
    if X_arr.dtype.kind == "b" or bool in set(map(type, itertools.chain.from_iterable(X))):
        raise _json_matrix_error(X)
    return _from_arrays(X_arr, _json_y_array(y), task, max_cells)


# --------------------------------------------------------------------------- uploads


def _upload_format(filename: str | None, content_type: str | None) -> str | None:
    name = (filename or "").lower()
    if name.endswith(".csv"):
        return "csv"
    if name.endswith(".npz"):
        return "npz"
    ctype = (content_type or "").split(";")[0].strip().lower()
    if ctype in _CSV_TYPES:
        return "csv"
    if ctype in _NPZ_TYPES:
        return "npz"
    return None


def parse_upload(
    filename: str | None,
    content_type: str | None,
    data: bytes,
    *,
    target: str | None,
    task: str | None,
    max_bytes: int,
    max_cells: int,
) -> ParsedDataset:
    """Parse an uploaded file as CSV or NPZ.

    The format comes from the file name's extension (``.csv``, ``.npz``), else from the
    content type (``text/csv``…, ``application/x-npz``/``application/zip``); anything else
    is 415. ``target`` is required for a CSV and ignored for an NPZ.
    """
    _check_bytes(data, max_bytes)
    fmt = _upload_format(filename, content_type)
    if fmt == "csv":
        if not target:
            raise DatasetError(
                "a CSV upload needs the form field 'target' naming the target column(s)", 422
            )
        return parse_csv(data, target, task=task, max_bytes=max_bytes, max_cells=max_cells)
    if fmt == "npz":
        return parse_npz(data, task=task, max_bytes=max_bytes, max_cells=max_cells)
    raise DatasetError(
        f"unsupported file {filename or '(no name)'!r} of type {content_type or '(none)'!r}; "
        "upload a .csv with a header row or a .npz holding arrays X and y",
        415,
    )


# --------------------------------------------------------------------------- storage


def _json_text(value: Any) -> np.ndarray:
    return np.array(json.dumps(value), dtype=np.str_)


def to_npz_bytes(ds: ParsedDataset) -> bytes:
    """Serialise to a compressed ``.npz``: ``X``, ``y``, and ``task``, ``classes`` and
    ``feature_names`` as 0-d text arrays (JSON for the lists) — loadable without pickle."""
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        X=np.ascontiguousarray(ds.X, dtype=np.float64),
        y=np.ascontiguousarray(ds.y, dtype=np.float64),
        task=np.array(ds.task, dtype=np.str_),
        classes=_json_text(ds.classes),
        feature_names=_json_text(ds.feature_names),
    )
    return buf.getvalue()


def from_npz_bytes(data: bytes) -> ParsedDataset:
    """Load what :func:`to_npz_bytes` wrote (``allow_pickle=False``)."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            X = z["X"]
            y = z["y"]
            task = str(z["task"][()]) if "task" in z.files else None
            classes = json.loads(str(z["classes"][()])) if "classes" in z.files else None
            names = json.loads(str(z["feature_names"][()])) if "feature_names" in z.files else None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise DatasetError(f"stored dataset is unreadable: {e}", 400) from None
    if task is None:
        task = "regression" if classes is None else "classification"
    return ParsedDataset(X=X, y=y, task=task, classes=classes, feature_names=names)


def targets_from_npz_bytes(data: bytes) -> np.ndarray:
    """Only the targets ``y`` ``(n_samples, n_targets)`` of what :func:`to_npz_bytes` wrote:
    ``X`` is not decompressed."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            y: np.ndarray = z["y"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise DatasetError(f"stored dataset is unreadable: {e}", 400) from None
    return y


def feature_names_from_npz_bytes(data: bytes) -> list[str] | None:
    """Only the ``feature_names`` of what :func:`to_npz_bytes` wrote (None when the data did
    not come from a CSV): neither ``X`` nor ``y`` is decompressed."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            if "feature_names" not in z.files:
                return None
            names: list[str] | None = json.loads(str(z["feature_names"][()]))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise DatasetError(f"stored dataset is unreadable: {e}", 400) from None
    return names
