"""Column types of a user's table: inferred from the values, overridable in the spec (`data.columns`), and
each column converted once to the form the pipeline takes (numbers, category strings, 0/1, timestamps).

numeric: numbers (float64). categorical: text (strings; missing stays missing). boolean: true/false, yes/no
or 0/1 (float64 0/1). date: ISO 8601 dates or date-times (datetime64).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mlkube.trainer.errors import MlkubeError

COLUMN_TYPES = ("numeric", "categorical", "boolean", "date")
TRUE, FALSE = frozenset({"true", "yes", "1"}), frozenset({"false", "no", "0"})
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?$")


def infer_type(column) -> str:
    """numeric, boolean, date or categorical, from a pandas column's dtype and values."""
    import pandas as pd

    if pd.api.types.is_bool_dtype(column):
        return "boolean"
    if pd.api.types.is_numeric_dtype(column):
        return "numeric"
    if pd.api.types.is_datetime64_any_dtype(column):
        return "date"
    values = column.dropna().astype(str).str.strip()
    if len(values) and values.str.lower().isin((TRUE | FALSE) - {"1", "0"}).all():
        return "boolean"
    if len(values) and values.str.match(ISO_DATE).all():
        return "date"
    return "categorical"


def column_types(table, features: list[str], given: Mapping[str, str], path: Path) -> dict[str, str]:
    """Feature → type: `given` (data.columns) where it names the feature, else inferred."""
    unknown = sorted(set(given) - set(features))
    if unknown:
        raise MlkubeError(
            f"data.columns: {unknown} not among the feature columns of {path.name}",
            f"feature columns: {features}",
        )
    return {name: given.get(name) or infer_type(table[name]) for name in features}


def convert(table, types: dict[str, str], path: Path):
    """The feature columns of `table` in their types' forms (a new DataFrame, same row order)."""
    import pandas as pd

    converters = {"numeric": _numeric, "categorical": _categorical, "boolean": _boolean, "date": _date}
    return pd.DataFrame(
        {name: converters[kind](table[name], f"{name!r} of {path.name}") for name, kind in types.items()}
    )


def _lines(mask) -> str:
    rows = np.flatnonzero(np.asarray(mask))
    return ", ".join(str(int(i) + 2) for i in rows[:5]) + (f", … ({len(rows)} rows)" if len(rows) > 5 else "")


def _refuse(column, bad, where: str, kind: str, accepted: str):
    sample = sorted({str(v) for v in column[bad].head(5)})
    raise MlkubeError(
        f"data.columns: column {where} is {kind}, but holds {sample} (file lines {_lines(bad)})",
        f"a {kind} column takes {accepted}; fix those values, or set another type in data.columns",
    )


def _numeric(column, where: str):
    import pandas as pd

    if pd.api.types.is_bool_dtype(column):
        return column.astype(np.float64)
    values = pd.to_numeric(column, errors="coerce")
    bad = values.isna() & column.notna()
    if bad.any():
        _refuse(column, bad, where, "numeric", "numbers (empty: missing)")
    return values.astype(np.float64)


def _categorical(column, where: str):
    import pandas as pd

    if pd.api.types.is_float_dtype(column) and np.all(np.mod(column.dropna(), 1) == 0):
        column = column.astype("Int64")  # integer codes read as floats (a gap makes pandas use floats)
    return column.map(lambda v: v if pd.isna(v) else str(v).strip()).astype(object)


def _boolean(column, where: str):
    import pandas as pd

    text = column.map(lambda v: v if pd.isna(v) else str(v).strip().lower())
    values = text.map(lambda v: 1.0 if v in TRUE else 0.0 if v in FALSE else np.nan)
    bad = values.isna() & column.notna()
    if bad.any():
        _refuse(column, bad, where, "boolean", "true/false, yes/no or 1/0 (empty: missing)")
    return values.astype(np.float64)


def _date(column, where: str):
    import pandas as pd

    values = pd.to_datetime(column, errors="coerce", format="ISO8601")
    bad = values.isna() & column.notna()
    if bad.any():
        _refuse(
            column, bad, where, "date", "ISO 8601 dates, e.g. 2024-03-01 or 2024-03-01T12:00 (empty: missing)"
        )
    return values.dt.tz_localize(None) if values.dt.tz is not None else values


def check_cardinality(X, types: dict[str, str], max_categories: int) -> None:
    """Refuse a categorical column with more distinct values than `preprocess.max_categories`: an id or
    free text would one-hot into as many columns as rows."""
    for name, kind in types.items():
        n = int(X[name].nunique()) if kind == "categorical" else 0
        if n > max_categories:
            raise MlkubeError(
                f"data.columns: categorical column {name!r} has {n} distinct values, more than "
                f"preprocess.max_categories ({max_categories})",
                f"leave it out with data.features (an id or free text predicts nothing), set "
                f"data.columns: {{{name}: numeric}} if it holds numbers, or raise preprocess.max_categories",
            )


def json_value(value: Any, kind: str) -> Any:
    """One value of a converted column as a request sends it: a number, a string, a bool, an ISO date."""
    import pandas as pd

    if pd.isna(value):
        return None
    if kind == "boolean":
        return bool(value)
    if kind == "date":
        return value.date().isoformat() if value == value.normalize() else value.isoformat()
    return str(value) if kind == "categorical" else float(value)
