"""The first step of a pipeline on a typed table: one scikit-learn ColumnTransformer that treats each column
by its type, fitted with the rest of the pipeline on each fold's training rows only (nothing leaks
across folds).

numeric → [impute] → [scale] (as `preprocess.impute` and the model's scaling say); categorical → one-hot for
linear, distance and kernel models, ordinal codes for trees (unknown categories as
`preprocess.unknown_categories` says); boolean → 0/1 (a missing value gets the most frequent); date → calendar
parts or a day number (`preprocess.dates`), then as numeric.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

import numpy as np

# OrdinalEncoder's codes for a category unseen in training and for a missing one
UNKNOWN_CODE, MISSING_CODE = -1, -2


@dataclass(frozen=True)
class Encoding:
    """How a table's typed columns enter every model's pipeline (from `data.columns` and `preprocess`)."""

    types: dict[str, str] = field(default_factory=dict)  # feature → numeric|categorical|boolean|date
    unknown: str = "ignore"  # ignore | error
    dates: str = "parts"  # parts | ordinal

    def of(self, kind: str) -> list[str]:
        return [name for name, k in self.types.items() if k == kind]


def date_parts(X) -> np.ndarray:
    """Date columns → year, month, day and weekday of each (NaN where missing), [rows, 4 × columns]."""
    import pandas as pd

    parts = []
    for name in X.columns:
        days = pd.to_datetime(X[name])
        parts += [days.dt.year, days.dt.month, days.dt.day, days.dt.dayofweek]
    return np.column_stack([p.to_numpy(dtype=np.float64, na_value=np.nan) for p in parts])


def date_ordinal(X) -> np.ndarray:
    """Date columns → days since 1970-01-01 (fractional for times of day; NaN where missing)."""
    import pandas as pd

    days = [
        (pd.to_datetime(X[name]) - pd.Timestamp(0)).dt.total_seconds().to_numpy(dtype=np.float64) / 86400
        for name in X.columns
    ]
    return np.column_stack(days)


DATE_FUNCTIONS = {"parts": date_parts, "ordinal": date_ordinal}


def instance(path: str, **params):
    """An instance of the class at a dotted path (imported on use)."""
    module, name = path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)(**params)


def _numeric(impute: str, scaler: str | None, first: list | None = None):
    """[first steps] → [impute] → [scale] (`scaler`: the scaler class's dotted path) as a Pipeline, or
    "passthrough" when there is nothing to do."""
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline

    steps = list(first or [])
    if impute != "none":
        steps.append(("impute", SimpleImputer(strategy=impute)))
    if scaler:
        steps.append(("scale", instance(scaler)))
    return Pipeline(steps) if steps else "passthrough"


def _categorical(encoder: str, unknown: str):
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

    if encoder == "onehot":
        return OneHotEncoder(handle_unknown=unknown, sparse_output=False)
    if unknown == "error":
        return OrdinalEncoder(handle_unknown="error", encoded_missing_value=MISSING_CODE)
    return OrdinalEncoder(
        handle_unknown="use_encoded_value", unknown_value=UNKNOWN_CODE, encoded_missing_value=MISSING_CODE
    )


def column_transformer(encoding: Encoding, encoder: str, impute: str, scaler: str | None):
    """The ColumnTransformer for one model: `encoder` is the zoo's onehot or ordinal for its categories,
    `scaler` the dotted path of its numeric columns' scaler (None: unscaled)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import FunctionTransformer

    dates = [("calendar", FunctionTransformer(DATE_FUNCTIONS[encoding.dates])), ("fill", SimpleImputer())]
    parts = [
        ("numeric", _numeric(impute, scaler), encoding.of("numeric")),
        ("categorical", _categorical(encoder, encoding.unknown), encoding.of("categorical")),
        ("boolean", SimpleImputer(strategy="most_frequent"), encoding.of("boolean")),
        ("date", _numeric("none", scaler, dates), encoding.of("date")),
    ]
    return ColumnTransformer([part for part in parts if part[2]], remainder="drop")
