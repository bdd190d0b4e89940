"""Tabular data sets for the classical models: scikit-learn's bundled sets by name, or a user's CSV/Parquet
file. (The LSTM's time series are `mlkube.trainer.series`.)"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlkube.trainer.errors import MlkubeError
from mlkube.trainer.spec import DataSpec

MAX_CLASSES_FOR_INTEGER_TARGET = 20


@dataclass
class TabularData:
    """Features X [rows, features] (float64), target y [rows], optional groups, and what they mean."""

    X: np.ndarray
    y: np.ndarray
    feature_names: list[str]
    target_name: str
    task: str  # "classification" | "regression"
    class_names: list[str] = field(default_factory=list)
    groups: np.ndarray | None = None
    source: str = ""

    @property
    def n_rows(self) -> int:
        return int(self.X.shape[0])

    def digest(self) -> str:
        """SHA-256 of the arrays: the data hash recorded in env.json."""
        h = hashlib.sha256()
        for arr in (self.X, self.y) + ((self.groups,) if self.groups is not None else ()):
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
            "missing_values": int(np.isnan(self.X).sum()),
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


def _read_table(path: Path):
    import pandas as pd

    if not path.is_file():
        raise MlkubeError(
            f"data.path: file not found: {path}", "check the path (relative paths are from the spec's folder)"
        )
    readers = {".csv": pd.read_csv, ".parquet": pd.read_parquet, ".pq": pd.read_parquet}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise MlkubeError(
            f"data.path: {path.name} is neither .csv nor .parquet", "convert the file to CSV or Parquet"
        )
    try:
        table = reader(path)
    except Exception as exc:  # noqa: BLE001 -- pandas/pyarrow raise many types for unreadable files
        raise MlkubeError(
            f"data.path: cannot read {path}: {exc}", "check that the file is valid CSV/Parquet"
        ) from None
    if table.empty:
        raise MlkubeError(f"data.path: {path} has no rows", "give a file with a header and at least one row")
    return table


def _load_file(spec: DataSpec, task: str) -> TabularData:
    path, target_name = spec.path, spec.target
    if path is None or target_name is None:
        raise ValueError("data: a file needs `path` and `target` (the spec requires `target` with `path`)")
    table = _read_table(path)
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
    non_numeric = [c for c in features if not _is_numeric(table[c])]
    if non_numeric:
        raise MlkubeError(
            f"data.features: non-numeric column(s) {non_numeric} in {path.name}",
            "encode them as numbers, or leave them out with `data.features`",
        )
    target = table[target_name]
    if target.isna().any():
        rows = [int(i) + 2 for i in np.flatnonzero(target.isna().to_numpy())[:5]]
        raise MlkubeError(
            f"data.target: column {target_name!r} has {int(target.isna().sum())} missing value(s) "
            f"(file lines {rows}…)",
            "drop or fill those rows: a target cannot be missing",
        )
    _check_finite(table, [*features, target_name] if _is_numeric(target) else features, path)
    y, class_names, task = _encode_target(target, task)
    _check_target_varies(y, target_name, task)
    groups = table[spec.groups].to_numpy() if spec.groups else None
    return TabularData(
        X=table[features].to_numpy(dtype=np.float64),
        y=y,
        feature_names=features,
        target_name=target_name,
        task=task,
        class_names=class_names,
        groups=groups,
        source=str(path),
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
