"""Tabular data sets for the classical models: scikit-learn's bundled sets by name, or a user's CSV/Parquet
file. (The LSTM's time series are `mlkube.trainer.series`.)"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlkube.trainer import columns as coltypes
from mlkube.trainer.errors import MlkubeError
from mlkube.trainer.spec import DataSpec

MAX_CLASSES_FOR_INTEGER_TARGET = 20


@dataclass
class TabularData:
    """Features X [rows, features], target y [rows], optional groups, and what they mean. X is a float64
    array when every feature is numeric, else a DataFrame of the converted columns (`trainer.columns`)."""

    X: Any  # np.ndarray | pandas.DataFrame
    y: np.ndarray
    feature_names: list[str]
    target_name: str
    task: str  # "classification" | "regression"
    class_names: list[str] = field(default_factory=list)
    groups: np.ndarray | None = None
    source: str = ""
    column_types: dict[str, str] = field(default_factory=dict)  # feature → numeric|categorical|boolean|date

    def __post_init__(self) -> None:
        self.column_types = self.column_types or dict.fromkeys(self.feature_names, "numeric")

    @property
    def n_rows(self) -> int:
        return int(self.X.shape[0])

    @property
    def is_table(self) -> bool:
        """Whether X is a DataFrame of typed columns (some feature is not numeric)."""
        return not isinstance(self.X, np.ndarray)

    def numeric_missing(self) -> np.ndarray:
        """[rows, numeric features] True where a numeric feature is missing (the others are encoded)."""
        if not self.is_table:
            return np.isnan(self.X)
        names = [n for n, kind in self.column_types.items() if kind == "numeric"]
        return self.X[names].isna().to_numpy().reshape(self.n_rows, len(names))

    def digest(self) -> str:
        """SHA-256 of the arrays: the data hash recorded in env.json."""
        import pandas as pd

        h = hashlib.sha256()
        features = pd.util.hash_pandas_object(self.X, index=False).to_numpy() if self.is_table else self.X
        for arr in (features, self.y) + ((self.groups,) if self.groups is not None else ()):
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()

    def summary(self) -> dict:
        out = {
            "source": self.source,
            "rows": self.n_rows,
            "features": len(self.feature_names),
            "feature_names": self.feature_names,
            "target": self.target_name,
            "task": self.task,
            "missing_values": int(
                self.X.isna().to_numpy().sum() if self.is_table else np.isnan(self.X).sum()
            ),
            "column_types": self.column_types,
        }
        if self.task == "classification":
            counts = np.bincount(self.y.astype(int), minlength=len(self.class_names))
            out["classes"] = {name: int(c) for name, c in zip(self.class_names, counts, strict=False)}
        else:
            out["target_stats"] = {
                "mean": float(self.y.mean()),
                "std": float(self.y.std()),
                "min": float(self.y.min()),
                "max": float(self.y.max()),
            }
        return out


def _sklearn_builtin(loader_name: str, task: str) -> Callable[[], TabularData]:
    def load() -> TabularData:
        import sklearn.datasets as skd

        bunch = getattr(skd, loader_name)()
        names = list(getattr(bunch, "target_names", [])) if task == "classification" else []
        target = (
            "species" if loader_name == "load_iris" else ("class" if task == "classification" else "target")
        )
        return TabularData(
            X=np.asarray(bunch.data, dtype=np.float64),
            y=np.asarray(bunch.target),
            feature_names=[str(f) for f in bunch.feature_names],
            target_name=target,
            task=task,
            class_names=[str(n) for n in names],
            source=f"builtin:{loader_name.removeprefix('load_')}",
        )

    return load


BUILTINS: dict[str, Callable[[], TabularData]] = {
    "iris": _sklearn_builtin("load_iris", "classification"),
    "wine": _sklearn_builtin("load_wine", "classification"),
    "breast_cancer": _sklearn_builtin("load_breast_cancer", "classification"),
    "diabetes": _sklearn_builtin("load_diabetes", "regression"),
}


def load_tabular(spec: DataSpec, task: str = "auto") -> TabularData:
    """Load the data a `data:` section names; `task` overrides the inferred one."""
    if spec.path is not None:
        return _load_file(spec, task)
    if spec.name is None:
        raise ValueError("data: give either `name` (a built-in) or `path` (the spec requires one)")
    data = BUILTINS[spec.name]()
    return data if task in ("auto", data.task) else _retask(data, task)


def _read_table(path: Path, spec: DataSpec):
    """The table of a CSV (separator, decimal mark and encoding given or sniffed) or Parquet file; duplicate
    column names are refused."""
    if not path.is_file():
        raise MlkubeError(
            f"data.path: file not found: {path}", "check the path (relative paths are from the spec's folder)"
        )
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise MlkubeError(
            f"data.path: {path.name} is neither .csv nor .parquet", "convert the file to CSV or Parquet"
        )
    try:
        table = (
            _read_csv(path, spec or DataSpec(path=path, target="-")) if suffix == ".csv" else _parquet(path)
        )
    except MlkubeError:
        raise
    except Exception as exc:  # noqa: BLE001 -- pandas/pyarrow raise many types for unreadable files
        raise MlkubeError(
            f"data.path: cannot read {path}: {exc}", "check that the file is valid CSV/Parquet"
        ) from None
    if table.empty:
        raise MlkubeError(f"data.path: {path} has no rows", "give a file with a header and at least one row")
    return table


def _parquet(path: Path):
    import pandas as pd

    table = pd.read_parquet(path)
    _refuse_duplicates([str(c) for c in table.columns], path)
    return table


def _read_csv(path: Path, spec: DataSpec):
    import io

    import pandas as pd

    text = _decode(path.read_bytes(), spec.encoding, path)
    sep = "\t" if spec.sep == "\\t" else (spec.sep or sniff_separator(text))
    decimal = spec.decimal or sniff_decimal(text, sep)
    header = pd.read_csv(io.StringIO(text), sep=sep, header=None, nrows=1, dtype=str)
    _refuse_duplicates([str(c).strip() for c in header.iloc[0].tolist()] if len(header) else [], path)
    return pd.read_csv(io.StringIO(text), sep=sep, decimal=decimal)


def _decode(raw: bytes, encoding: str | None, path: Path) -> str:
    """The file's text in `encoding` (data.encoding), or UTF-8 (a BOM is dropped); a file that is not is
    refused with the byte and line, and the encodings it likely is."""
    try:
        return raw.decode(encoding or "utf-8-sig")
    except LookupError:
        raise MlkubeError(
            f"data.encoding: unknown encoding {encoding!r}", "use e.g. utf-8, latin-1, cp1252 or utf-16"
        ) from None
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise MlkubeError(
            f"data.path: {path.name} is not {encoding or 'UTF-8'}: byte 0x{raw[err.start]:02x} on line "
            f"{line} cannot be decoded",
            "give its encoding as data.encoding (files saved by Excel on Windows are usually cp1252; "
            "latin-1 reads any byte), or save the file as UTF-8",
        ) from None


SEPARATORS = (",", ";", "\t", "|")


def sniff_separator(text: str) -> str:
    """The separator that splits the first lines into the same number (≥ 2) of fields, the most fields
    first (quotes respected); ',' when none does (a one-column file)."""
    import csv

    lines = text.splitlines()[:50]
    best, fields = ",", 1
    for sep in SEPARATORS:
        counts = {len(row) for row in csv.reader(lines, delimiter=sep) if row}
        if len(counts) == 1 and (n := counts.pop()) > fields:
            best, fields = sep, n
    return best


DECIMAL_COMMA = re.compile(r"^[+-]?\d+,\d+$")
DECIMAL_POINT = re.compile(r"^[+-]?\d*\.\d+$")


def sniff_decimal(text: str, sep: str) -> str:
    """',' when the separator is not ',' and the numbers of the first lines are written 1,5 (none 1.5)."""
    import csv

    if sep == ",":
        return "."
    values = [v.strip() for row in csv.reader(text.splitlines()[1:200], delimiter=sep) for v in row]
    comma = any(DECIMAL_COMMA.match(v) for v in values)
    return "," if comma and not any(DECIMAL_POINT.match(v) for v in values) else "."


def _refuse_duplicates(names: list[str], path: Path) -> None:
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise MlkubeError(
            f"data.path: {path.name} names the column(s) {repeated} more than once",
            "give every column its own name in the header (pandas would rename the copies silently)",
        )


def _load_file(spec: DataSpec, task: str) -> TabularData:
    path, target_name = spec.path, spec.target
    if path is None or target_name is None:
        raise ValueError("data: a file needs `path` and `target` (the spec requires `target` with `path`)")
    table = _read_table(path, spec)
    columns = [str(c) for c in table.columns]
    table.columns = columns
    needed = [target_name] + (spec.features or []) + ([spec.groups] if spec.groups else [])
    missing = [c for c in needed if c not in columns]
    if missing:
        raise MlkubeError(f"data: column(s) {missing} not in {path.name}", f"columns there: {columns}")
    features = spec.features or [c for c in columns if c not in (target_name, spec.groups)]
    if target_name in features:
        raise MlkubeError(
            f"data.features: lists the target {target_name!r}: every model would see the answer it predicts",
            f"remove {target_name!r} from data.features",
        )
    if not features:
        raise MlkubeError(
            f"data: {path.name} has no feature columns besides the target", "add feature columns"
        )
    types = coltypes.column_types(table, features, spec.columns, path)
    target = table[target_name]
    if target.isna().any():
        rows = [int(i) + 2 for i in np.flatnonzero(target.isna().to_numpy())[:5]]
        raise MlkubeError(
            f"data.target: column {target_name!r} has {int(target.isna().sum())} missing value(s) "
            f"(file lines {rows}…)",
            "drop or fill those rows: a target cannot be missing",
        )
    numeric = [c for c in features if types[c] == "numeric"]
    X = coltypes.convert(table, types, path)
    _check_finite(X, numeric, path)
    if _is_numeric(target):
        _check_finite(table, [target_name], path)
    y, class_names, task = _encode_target(target, task)
    _check_target_varies(y, target_name, task)
    groups = table[spec.groups].to_numpy() if spec.groups else None
    return TabularData(
        X=X if len(numeric) < len(features) else X.to_numpy(dtype=np.float64),
        y=y,
        feature_names=features,
        target_name=target_name,
        task=task,
        class_names=class_names,
        groups=groups,
        source=str(path),
        column_types=types,
    )


def _file_lines(mask: np.ndarray, limit: int = 5) -> str:
    """The file lines (header = line 1) of the first `limit` rows where `mask` holds."""
    rows = np.flatnonzero(mask)
    lines = ", ".join(str(int(i) + 2) for i in rows[:limit])
    return lines + (f", … ({len(rows)} rows in all)" if len(rows) > limit else "")


def _check_finite(table, columns: list[str], path: Path) -> None:
    """±inf in a numeric column fails every model, and an imputer cannot fill it: name the column, rows."""
    for column in columns:
        values = table[column].to_numpy(dtype=np.float64)
        infinite = np.isinf(values)
        if infinite.any():
            raise MlkubeError(
                f"data: column {column!r} of {path.name} holds ±inf (file lines {_file_lines(infinite)})",
                "replace those values with finite numbers, or leave them empty to impute them "
                "(preprocess.impute: mean or median)",
            )


def _check_target_varies(y: np.ndarray, target: str, task: str) -> None:
    """A target with one value makes every model 'perfect' (or its score undefined): nothing to learn."""
    values = np.unique(y)
    if len(values) < 2:
        what = "one class" if task == "classification" else "one value"
        raise MlkubeError(
            f"data.target: column {target!r} holds {what} in every row, so there is nothing to learn "
            "(every model would score as if perfect)",
            "give a target with at least two classes (or values), or choose another data.target",
        )


def _is_numeric(column) -> bool:
    import pandas as pd

    return pd.api.types.is_numeric_dtype(column)  # bool counts as numeric


def _encode_target(target, task: str) -> tuple[np.ndarray, list[str], str]:
    """Classes → 0..k-1 with their names; numbers stay numbers. With task auto, integer targets with few
    values are classes."""
    import pandas as pd

    values = target.to_numpy()
    is_number = pd.api.types.is_numeric_dtype(target) and not pd.api.types.is_bool_dtype(target)
    if task == "regression" and not is_number:
        raise MlkubeError(
            f"classical.task: regression needs a numeric target; {target.name!r} holds {target.dtype} values",
            "use task: classification, or auto",
        )
    few_integers = (
        is_number and np.all(np.mod(values, 1) == 0) and target.nunique() <= MAX_CLASSES_FOR_INTEGER_TARGET
    )
    if task == "regression" or (task == "auto" and is_number and not few_integers):
        return values.astype(np.float64), [], "regression"
    _check_class_count(target.nunique(), str(target.name))
    classes, codes = np.unique(values, return_inverse=True)
    return codes.astype(np.int64), [str(c) for c in classes], "classification"


def _check_class_count(n_unique: int, target: str) -> None:
    if n_unique > MAX_CLASSES_FOR_INTEGER_TARGET * 5:
        raise MlkubeError(
            f"classical.task: a classification target, but {target!r} has {n_unique} distinct values",
            "use task: regression, or auto",
        )


def _retask(data: TabularData, task: str) -> TabularData:
    if task == "regression":
        data.y = data.y.astype(np.float64)
        data.class_names = []
    else:
        _check_class_count(len(np.unique(data.y)), data.target_name)
        classes, codes = np.unique(data.y, return_inverse=True)
        data.y, data.class_names = codes.astype(np.int64), [str(c) for c in classes]
    data.task = task
    return data
