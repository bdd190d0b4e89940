"""The model zoo: short name → scikit-learn estimator, per task. Adding a model is adding a line (and a test).

Every model is built as a Pipeline (imputation and scaling inside it, so nothing leaks across folds). Scaling
is in a model's pipeline where the spec asks for it (`preprocess.scaler: standard|minmax`) or, with `auto`,
where the model is known to need it (distance-, margin- or penalty-based models).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from mlkube.trainer.classical.encode import Encoding, column_transformer, instance
from mlkube.trainer.errors import MlkubeError


@dataclass(frozen=True)
class ZooEntry:
    """One model: its estimator class (dotted path, imported on use), whether it needs scaled inputs, and how
    it takes categorical columns (onehot: one 0/1 column per category; ordinal: one code per category, for
    trees, which split on codes)."""

    estimator: str
    needs_scaling: bool
    encoder: str = "onehot"

    def cls(self) -> type:
        module, name = self.estimator.rsplit(".", 1)
        return getattr(importlib.import_module(module), name)


CLASSIFIERS: dict[str, ZooEntry] = {
    "LR": ZooEntry("sklearn.linear_model.LogisticRegression", True),
    "LDA": ZooEntry("sklearn.discriminant_analysis.LinearDiscriminantAnalysis", False),
    "KNN": ZooEntry("sklearn.neighbors.KNeighborsClassifier", True),
    "CART": ZooEntry("sklearn.tree.DecisionTreeClassifier", False, "ordinal"),
    "NB": ZooEntry("sklearn.naive_bayes.GaussianNB", False),
    "SVM": ZooEntry("sklearn.svm.SVC", True),
    "RF": ZooEntry("sklearn.ensemble.RandomForestClassifier", False, "ordinal"),
    "GBM": ZooEntry("sklearn.ensemble.HistGradientBoostingClassifier", False, "ordinal"),
}
REGRESSORS: dict[str, ZooEntry] = {
    "LinReg": ZooEntry("sklearn.linear_model.LinearRegression", False),
    "Ridge": ZooEntry("sklearn.linear_model.Ridge", True),
    "Lasso": ZooEntry("sklearn.linear_model.Lasso", True),
    "EN": ZooEntry("sklearn.linear_model.ElasticNet", True),
    "KNN": ZooEntry("sklearn.neighbors.KNeighborsRegressor", True),
    "CART": ZooEntry("sklearn.tree.DecisionTreeRegressor", False, "ordinal"),
    "SVR": ZooEntry("sklearn.svm.SVR", True),
    "RF": ZooEntry("sklearn.ensemble.RandomForestRegressor", False, "ordinal"),
    "GBM": ZooEntry("sklearn.ensemble.HistGradientBoostingRegressor", False, "ordinal"),
}
ZOOS = {"classification": CLASSIFIERS, "regression": REGRESSORS}
DEFAULT_MODELS = {
    "classification": ["LR", "LDA", "KNN", "CART", "NB", "SVM", "RF", "GBM"],
    "regression": ["LinReg", "Ridge", "Lasso", "EN", "KNN", "CART", "SVR", "RF", "GBM"],
}
# integer parameters that count training rows: each must be at most the rows of the smallest training fold
ROW_COUNT_PARAMS = {"n_neighbors": "neighbours", "max_samples": "rows per tree"}
SCALERS = {"standard": "sklearn.preprocessing.StandardScaler", "minmax": "sklearn.preprocessing.MinMaxScaler"}
BINARY_ONLY_SOLVERS = {"liblinear"}
REDUCERS = {"pca": "sklearn.decomposition.PCA"}  # preprocess.reduce: step name → transformer


@dataclass(frozen=True)
class ModelPlan:
    """How a model is built for one task: what the leaderboard records beside the params."""

    name: str
    task: str
    params: dict[str, Any]
    scaled: str | None  # "standard", "minmax" or None
    one_vs_rest: bool
    reduce: dict[str, Any] = field(default_factory=dict)  # reducer step → its params, e.g. {"pca": {...}}

    def describe(self) -> dict[str, Any]:
        """The params as the leaderboard shows them, with what the pipeline added."""
        out = dict(self.params)
        out.update({f"{step}__{k}": v for step, params in self.reduce.items() for k, v in params.items()})
        if self.scaled:
            out["scaling"] = self.scaled
        if self.one_vs_rest:
            out["multiclass"] = "one-vs-rest (solver is binary-only)"
        return out


def entry(name: str, task: str) -> ZooEntry:
    zoo = ZOOS[task]
    if name in zoo:
        return zoo[name]
    other = "regression" if task == "classification" else "classification"
    if name in ZOOS[other]:
        raise MlkubeError(
            f"classical.models: {name} is a {other} model, but the target is a {task} target",
            f"{task} models: {', '.join(zoo)}",
        )
    raise MlkubeError(f"classical.models: unknown model {name!r}", f"{task} models: {', '.join(zoo)}")


def plan(
    name: str,
    task: str,
    params: dict[str, Any],
    scaler: str,
    n_classes: int,
    seed: int,
    reduce: dict[str, Any] | None = None,
) -> ModelPlan:
    """Decide scaling, one-vs-rest wrapping, the reducer step (`reduce`: preprocess.reduce, e.g. {"pca": 2})
    and the seed for a model; check its params (`pca__n_components` sets the reducer's)."""
    zoo_entry = entry(name, task)
    steps = reducer_params(name, reduce or {}, {k: v for k, v in params.items() if "__" in k})
    params = {k: v for k, v in params.items() if "__" not in k}
    if "random_state" in zoo_entry.cls()().get_params() and "random_state" not in params:
        params["random_state"] = seed
    check_params(name, zoo_entry, params)
    if scaler == "auto":
        scaled = "standard" if zoo_entry.needs_scaling else None
    else:
        scaled = None if scaler == "none" else scaler
    one_vs_rest = task == "classification" and n_classes > 2 and params.get("solver") in BINARY_ONLY_SOLVERS
    return ModelPlan(
        name=name, task=task, params=params, scaled=scaled, one_vs_rest=one_vs_rest, reduce=steps
    )


def reducer_params(name: str, reduce: dict[str, Any], given: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The reducer steps' params: preprocess.reduce's {"pca": n} as n_components, under the model's
    `pca__<param>` values; checked by scikit-learn's constraints."""
    out = {step: {"n_components": n} for step, n in reduce.items()}
    for key, value in given.items():
        step, param = key.split("__", 1)
        if step not in out:
            raise MlkubeError(
                f"classical.params.{name}.{key}: the pipeline has no {step!r} step",
                f"add it with preprocess.reduce: {{{step}: 2}}"
                if step in REDUCERS
                else "use the model's own parameter names (only the pca__ step's are prefixed)",
            )
        out[step][param] = value
    for step, params in out.items():
        try:
            instance(REDUCERS[step], **params)._validate_params()
        except (ValueError, TypeError) as exc:
            raise MlkubeError(f"classical.params.{name}.{step}: {exc}", "see the PCA documentation") from None
    return out


def check_params(name: str, zoo_entry: ZooEntry, params: dict[str, Any]) -> None:
    """Unknown parameter names and values outside scikit-learn's declared constraints are user errors."""
    cls = zoo_entry.cls()
    valid = cls().get_params()
    unknown = [p for p in params if p not in valid]
    if unknown:
        raise MlkubeError(
            f"classical.params.{name}: unknown parameter(s) {unknown} for {cls.__name__}",
            f"valid parameters: {', '.join(sorted(valid))}",
        )
    try:
        cls(**params)._validate_params()
    except (ValueError, TypeError) as exc:
        raise MlkubeError(
            f"classical.params.{name}: {exc}", f"see the {cls.__name__} documentation"
        ) from None


def check_fold_rows(model: ModelPlan, rows: int, where: str) -> None:
    """Refuse a row-counting parameter (n_neighbors, an integer max_samples) above `rows`, the training rows
    of the smallest fold: every fold would fail."""
    for param, counts in ROW_COUNT_PARAMS.items():
        value = model.params.get(param)
        if isinstance(value, int) and not isinstance(value, bool) and value > rows:
            raise MlkubeError(
                f"{where}.{param}: {value} {counts}, but the smallest training fold has {rows} rows",
                f"use {param} ≤ {rows}, or fewer folds (classical.cv.folds)",
            )


PROBE_ROWS = 24  # rows of the probe fit of `check_param_pairs`: a few per class, enough for every zoo model


def check_param_pairs(model: ModelPlan, n_classes: int) -> None:
    """Parameters that scikit-learn accepts one by one but refuses together (LR `penalty: l1` with its default
    solver lbfgs, LinearSVC's l1 with hinge) fail only when fitted: fit the model with its fixed parameters
    on a small random problem of its task, and refuse what scikit-learn refuses, with its own words. Row
    counts (`n_neighbors`, ...) are checked against the real folds instead (`check_fold_rows`)."""
    import warnings

    import numpy as np
    from sklearn.multiclass import OneVsRestClassifier

    rows = max(PROBE_ROWS, 3 * n_classes)
    X = np.random.default_rng(0).normal(size=(rows, 4))
    y = np.arange(rows) % max(n_classes, 2) if model.task == "classification" else X @ [1.0, -1, 0.5, 0]
    params = {k: v for k, v in model.params.items() if k not in ROW_COUNT_PARAMS}
    estimator = entry(model.name, model.task).cls()(**params)
    if model.one_vs_rest:  # as build_pipeline wraps it
        estimator = OneVsRestClassifier(estimator)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence on random data says nothing about the user's
            estimator.fit(X, y)
    except (ValueError, TypeError) as exc:
        raise MlkubeError(
            f"classical.params.{model.name}: scikit-learn refuses these parameters together: {exc}",
            f"change one of the parameters it names (see the {type(estimator).__name__} documentation)",
        ) from None


def takes_missing(model: ModelPlan) -> bool:
    """Whether the model (with its params) fits on features with NaN, by scikit-learn's `allow_nan` tag."""
    from sklearn.utils import get_tags

    return bool(get_tags(entry(model.name, model.task).cls()(**model.params)).input_tags.allow_nan)


def build_pipeline(model: ModelPlan, impute: str = "none", encoding: Encoding | None = None):
    """The scikit-learn Pipeline for a plan: [impute] → [scale] on a numeric array, or one ColumnTransformer
    on a typed table (`encoding`, see `encode`), then [reduce] → model (one-vs-rest where needed)."""
    from sklearn.impute import SimpleImputer
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import Pipeline

    zoo_entry = entry(model.name, model.task)
    estimator = zoo_entry.cls()(**model.params)
    if model.one_vs_rest:
        estimator = OneVsRestClassifier(estimator)
    steps = []
    if encoding is not None:
        scaler = SCALERS[model.scaled] if model.scaled else None
        steps.append(("columns", column_transformer(encoding, zoo_entry.encoder, impute, scaler)))
    else:
        if impute != "none":
            steps.append(("impute", SimpleImputer(strategy=impute)))
        if model.scaled:
            steps.append(("scale", instance(SCALERS[model.scaled])))
    steps += [(step, instance(REDUCERS[step], **params)) for step, params in model.reduce.items()]
    steps.append(("model", estimator))
    return Pipeline(steps)
