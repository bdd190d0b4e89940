"""The classical stages. evaluate: spot-check every model (fixed params) under the spec's CV scheme. improve:
search each model's space (grid / random / TPE) with nested CV where asked, pick the best pipeline, refit it
on all training data, score it once on the holdout and save it to `models/classical/`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from mlkube.trainer.artifacts import save_sklearn_model
from mlkube.trainer.classical import cv as cvlib
from mlkube.trainer.classical import zoo
from mlkube.trainer.classical.encode import Encoding
from mlkube.trainer.classical.search import (
    SearchSettings,
    Step,
    TrialData,
    connect_ray,
    fit_and_score,
    rank,
    ranking_score,
    release_ray,
    run_trials,
    trial_pipeline,
    tune_space,
)
from mlkube.trainer.columns import check_cardinality
from mlkube.trainer.errors import MlkubeError
from mlkube.trainer.run import CLASSICAL_MODEL, atomic_write_json, read_json
from mlkube.trainer.spec import SearchSpec, Spec
from mlkube.trainer.tabular import TabularData, load_tabular

DEFAULT_METRIC = {"classification": "accuracy", "regression": "r2"}
REGRESSION_METRIC_MARKS = (
    "r2",
    "explained_variance",
    "max_error",
    "neg_mean",
    "neg_median",
    "neg_root",
    "d2_",
)


# ------------------------------------------------------------------------------------------ the data
@dataclass
class ClassicalData:
    """The tabular data, its task, and the rows kept aside for the final validation."""

    data: TabularData
    train: np.ndarray  # row indices used for CV and the final refit
    holdout: np.ndarray | None

    @property
    def X(self) -> Any:
        from sklearn.utils import _safe_indexing

        return _safe_indexing(self.data.X, self.train)

    @property
    def y(self) -> np.ndarray:
        return self.data.y[self.train]

    @property
    def groups(self) -> np.ndarray | None:
        return None if self.data.groups is None else self.data.groups[self.train]


def classical_data(spec: Spec) -> ClassicalData:
    if spec.data is None:
        raise ValueError("the classical stages need the spec's data section")
    return _classical_data(spec.data.model_dump_json(), spec.classical.model_dump_json(), spec.seed)


@functools.lru_cache(maxsize=2)
def _classical_data(data_json: str, classical_json: str, seed: int) -> ClassicalData:
    from mlkube.trainer.spec import ClassicalSpec, DataSpec

    data_spec, classical = (
        DataSpec.model_validate_json(data_json),
        ClassicalSpec.model_validate_json(classical_json),
    )
    data = load_tabular(data_spec, classical.task)
    if classical.holdout is None:
        return ClassicalData(data, np.arange(data.n_rows), None)
    ordered = classical.cv.scheme == "timeseries" or not classical.holdout.shuffle
    stratify = classical.holdout.stratify and data.task == "classification"
    train, holdout = cvlib.holdout_split(
        classical.holdout.test_size, data.y, seed, ordered=ordered, stratify=stratify
    )
    return ClassicalData(data, train, holdout)


def metric_for(spec: Spec, task: str) -> str:
    """The ranking scorer (classical.metric), checked against the task."""
    metric = spec.classical.metric
    return DEFAULT_METRIC[task] if metric == "auto" else _checked_metric(metric, task, "classical.metric")


def metrics_for(spec: Spec, task: str) -> list[str]:
    """Every reported scorer: the ranking one first, then classical.metrics (each checked for the task)."""
    metric = metric_for(spec, task)
    extra = [
        _checked_metric(m, task, f"classical.metrics[{i}]") for i, m in enumerate(spec.classical.metrics)
    ]
    return [metric, *(m for m in dict.fromkeys(extra) if m != metric)]


def _checked_metric(metric: str, task: str, where: str) -> str:
    from sklearn.metrics import get_scorer_names

    if metric not in get_scorer_names():
        raise MlkubeError(
            f"{where}: unknown scorer {metric!r}",
            "use a scikit-learn scorer name, "
            "e.g. accuracy, f1_macro, roc_auc, r2, neg_root_mean_squared_error",
        )
    is_regression_metric = metric.startswith(REGRESSION_METRIC_MARKS)
    if is_regression_metric != (task == "regression"):
        raise MlkubeError(
            f"{where}: {metric} is a {'regression' if is_regression_metric else 'classification'} "
            f"metric, but the target is a {task} target",
            f"use e.g. {DEFAULT_METRIC[task]}",
        )
    return metric


def model_names(spec: Spec, task: str) -> list[str]:
    return spec.classical.models or zoo.DEFAULT_MODELS[task]


# ----------------------------------------------------------------------------------------- checking
def check_classical(spec: Spec) -> None:
    """Everything that can be refused before a trial runs: data, task, models, params, metric, scheme,
    folds, space."""
    cd = classical_data(spec)
    task, c = cd.data.task, spec.classical
    metrics_for(spec, task)
    if cd.data.is_table:
        check_cardinality(cd.data.X, cd.data.column_types, spec.preprocess.max_categories)
    names = model_names(spec, task)
    n_classes = len(cd.data.class_names)
    reduce = _reduce(spec)
    plans = [
        zoo.plan(n, task, c.params.get(n, {}), spec.preprocess.scaler, n_classes, spec.seed, reduce)
        for n in names
    ]
    unused = [m for m in c.params if m not in names]
    if unused:
        raise MlkubeError(
            f"classical.params: {unused} not among the models {names}",
            "add them to classical.models or remove their params",
        )
    if c.cv.scheme == "nested" and c.search is None:
        raise MlkubeError(
            "classical.cv.scheme: nested CV scores a tuned pipeline, but there is no classical.search",
            "add a search section, or use a non-nested scheme",
        )
    spot_rows, search_rows = _fold_rows(spec, cd)
    for model in plans:
        zoo.check_fold_rows(model, spot_rows, f"classical.params.{model.name}")
        zoo.check_param_pairs(model, n_classes)
    _check_missing(spec, cd, plans)
    _check_metric_methods(metrics_for(spec, task), plans)
    if c.search is not None:
        _check_space(spec, c.search, names, task, n_classes, search_rows)


def _fold_rows(spec: Spec, cd: ClassicalData) -> tuple[int, int]:
    """Split the data as the stages will and check every fold; return the training rows of the smallest
    spot-check fold and of the smallest search fold."""
    c, task, seed = spec.classical, cd.data.task, spec.seed
    ordered = c.cv.scheme == "timeseries"
    if c.cv.scheme != "nested":
        folds = cvlib.splits(c.cv, cd.X, cd.y, task, seed, cd.groups)
        rows = cvlib.check_folds(folds, cd.y, cd.data.class_names, ordered, "classical.cv")
        return rows, rows
    assert c.cv.outer is not None and c.cv.inner is not None  # the spec requires both with a nested scheme
    cvlib.check_scheme(c.cv.outer, cd.y, task, cd.groups, field="classical.cv.outer")
    nested = cvlib.nested_splits(c.cv, cd.X, cd.y, task, seed, cd.groups)
    outer = cvlib.check_folds(nested.outer, cd.y, cd.data.class_names, ordered, "classical.cv.outer")
    inner = [s for folds in nested.inner for s in folds] + cvlib.splits(
        c.cv.inner, cd.X, cd.y, task, seed, cd.groups
    )
    return outer, cvlib.check_folds(inner, cd.y, cd.data.class_names, ordered, "classical.cv.inner")


def _check_missing(spec: Spec, cd: ClassicalData, plans: list[zoo.ModelPlan]) -> None:
    """Missing feature values without `preprocess.impute`: refuse the models that cannot take them."""
    missing = cd.data.numeric_missing()
    refused = [model.name for model in plans if not zoo.takes_missing(model)]
    if spec.preprocess.impute != "none" or not missing.any() or not refused:
        return
    numeric = [name for name, kind in cd.data.column_types.items() if kind == "numeric"]
    columns = [numeric[i] for i in np.flatnonzero(missing.any(axis=0))]
    raise MlkubeError(
        f"data: {int(missing.sum())} missing feature value(s) in column(s) {columns}, and the model(s) "
        f"{refused} cannot take missing values",
        "set preprocess.impute: mean (or median), or keep only models that take them "
        f"({[model.name for model in plans if model.name not in refused] or 'e.g. CART, RF, GBM'})",
    )


def _check_metric_methods(metrics: list[str], plans: list[zoo.ModelPlan]) -> None:
    """Refuse a metric that needs a method (predict_proba, decision_function) a model lacks: every fold of
    that model would fail."""
    from sklearn.metrics import get_scorer

    for metric in metrics:
        methods = get_scorer(metric)._response_method
        methods = (methods,) if isinstance(methods, str) else tuple(methods)
        for model in plans:
            estimator = zoo.build_pipeline(model)[-1]
            if not any(hasattr(estimator, method) for method in methods):
                raise MlkubeError(
                    f"classical.metrics: {metric} needs {' or '.join(methods)}, which {model.name} with "
                    f"{model.params} lacks",
                    f"leave {metric} out, or the model"
                    + (
                        " (or give it classical.params.SVM: {probability: true})"
                        if model.name == "SVM"
                        else ""
                    ),
                )


def _check_space(
    spec: Spec, search: SearchSpec, names: list[str], task: str, n_classes: int, fold_rows: int
) -> None:
    if not search.space:
        raise MlkubeError("classical.search.space is empty", "give e.g. space: {SVM: {C: [0.1, 1, 10]}}")
    for model, space in search.space.items():
        if model not in names:
            raise MlkubeError(
                f"classical.search.space: {model} is not among the models {names}",
                "add it to classical.models",
            )
        where = f"classical.search.space.{model}"
        tune_space(space, search.algorithm, where)
        fixed = spec.classical.params.get(model, {})
        for param, values in space.items():
            for value in _axis_values(values):
                plan = zoo.plan(
                    model,
                    task,
                    {**fixed, param: value},
                    spec.preprocess.scaler,
                    n_classes,
                    spec.seed,
                    _reduce(spec),
                )
                zoo.check_fold_rows(plan, fold_rows, where)


def _axis_values(axis: list | dict) -> list:
    """The values of a search axis worth checking: every listed value, or a sampler's ends (randint's upper
    end is exclusive)."""
    if isinstance(axis, list):
        return axis
    kind, args = next(iter(axis.items()))
    if kind == "choice":
        return list(args)
    return [args[0], args[1] - 1] if kind == "randint" else []


# ---------------------------------------------------------------------------------------- settings
def _reduce(spec: Spec) -> dict[str, Any]:
    reduce = spec.preprocess.reduce
    return {} if reduce is None else {"pca": reduce.pca}


def encoding_of(spec: Spec, data: TabularData) -> Encoding | None:
    """How the typed columns enter the pipelines; None for an all-numeric array."""
    if not data.is_table:
        return None
    p = spec.preprocess
    return Encoding(types=dict(data.column_types), unknown=p.unknown_categories, dates=p.dates)


def _trial_data(spec: Spec, cd: ClassicalData, steps: list[Step]) -> TrialData:
    c = spec.classical
    return TrialData(
        X=cd.X,
        y=cd.y,
        steps=steps,
        task=cd.data.task,
        metric=metric_for(spec, cd.data.task),
        scaler=spec.preprocess.scaler,
        impute=spec.preprocess.impute,
        n_classes=len(cd.data.class_names),
        seed=spec.seed,
        fixed_params=c.params,
        parallel_folds=c.parallel_folds,
        cpus_per_fold=c.resources_per_trial.cpu,
        metrics=metrics_for(spec, cd.data.task),
        encoding=encoding_of(spec, cd.data),
        reduce=_reduce(spec),
    )


def _settings(spec: Spec, search: SearchSpec | None, status_path: str | None = None) -> SearchSettings:
    """One Tune experiment's settings; `search` None: the spot-check's (one trial per model, no scheduler)."""
    c = spec.classical
    settings = SearchSettings(
        max_concurrent=c.max_concurrent,
        cpu=c.resources_per_trial.cpu,
        gpu=c.resources_per_trial.gpu,
        max_failures=c.max_failures,
        metrics_port=spec.metrics.port,
        status_path=status_path,
    )
    if search is None:
        return settings
    return replace(
        settings,
        algorithm=search.algorithm,
        trials=search.trials,
        scheduler=search.scheduler,
        grace_folds=search.grace_folds,
    )


def _steps(splits: list[cvlib.Split], prefix: str = "") -> list[Step]:
    return [Step(f"{prefix}{i}", tr, te) for i, (tr, te) in enumerate(splits)]


def _status(ctx) -> str:
    return str(ctx.run.status_file)


def _connect(ctx) -> None:
    cluster = ctx.spec.cluster
    connect_ray(cluster.ray_address, cluster.num_cpus, ctx.progress)


# ---------------------------------------------------------------------------------------- evaluate
def evaluate(ctx) -> None:
    """Spot-check: one trial per model with its fixed params, every fold of the scheme."""
    from ray import tune

    spec, cd = ctx.spec, classical_data(ctx.spec)
    c = spec.classical
    scheme = c.cv.outer if c.cv.scheme == "nested" else c.cv
    steps = _steps(cvlib.splits(scheme, cd.X, cd.y, cd.data.task, spec.seed, cd.groups))
    names = model_names(spec, cd.data.task)
    ctx.progress.say(
        f"spot-check: {len(names)} models × {len(steps)} folds ({scheme.scheme}) on {len(cd.train)} rows"
    )
    _connect(ctx)
    rows = run_trials(
        "evaluate",
        {"model": tune.grid_search(names)},
        _trial_data(spec, cd, steps),
        _settings(spec, None, status_path=_status(ctx)),
        ctx.progress,
    )
    for row in rows:
        row["stage"] = "evaluate"
    atomic_write_json(
        ctx.run.stage_file("evaluate"),
        {
            "metric": metric_for(spec, cd.data.task),
            "metrics": metrics_for(spec, cd.data.task),
            "task": cd.data.task,
            "scheme": scheme.model_dump(mode="json"),
            "folds": [s.label for s in steps],
            "rows": rank(rows, names),
        },
    )


# ----------------------------------------------------------------------------------------- improve
def improve(ctx) -> None:
    """Tune each model in the search space (nested CV where asked), then refit and save the best pipeline."""
    spec, cd = ctx.spec, classical_data(ctx.spec)
    spot = read_json(ctx.run.stage_file("evaluate"))
    tuned, trials, nested = ([], [], {}) if spec.classical.search is None else _tune(ctx, cd)
    best = _pick_best(spot["rows"] + tuned)
    ctx.progress.say(f"best: {best['model']} {best['params']} mean {best['mean']:.4f} ({best['stage']})")
    final = _refit_and_save(ctx, cd, best)
    atomic_write_json(
        ctx.run.stage_file("improve"), {"tuned": tuned, "trials": trials, "nested": nested, "best": final}
    )
    release_ray()  # the last stage on Ray: give its CPUs and memory back before the LSTM trains


def _tune(ctx, cd: ClassicalData) -> tuple[list[dict], list[dict], dict]:
    """Search each model's space; return the best row per model, every trial, and the nested estimates."""
    spec = ctx.spec
    c, task = spec.classical, cd.data.task
    names = model_names(spec, task)
    is_nested = c.cv.scheme == "nested"
    if is_nested:
        ns = cvlib.nested_splits(c.cv, cd.X, cd.y, task, spec.seed, cd.groups)
        full_inner = cvlib.splits(c.cv.inner, cd.X, cd.y, task, spec.seed, cd.groups)
        steps = [s for k, inner in enumerate(ns.inner) for s in _steps(inner, f"outer{k}/inner")] + _steps(
            full_inner, "all/inner"
        )
    else:
        steps = _steps(cvlib.splits(c.cv, cd.X, cd.y, task, spec.seed, cd.groups))
    _connect(ctx)
    data = _trial_data(spec, cd, steps)
    all_trials, best_rows, nested = [], [], {}
    for model, space in c.search.space.items():
        ctx.progress.say(f"search {model}: {c.search.algorithm}, {len(steps)} folds per trial")
        param_space = {
            "model": model,
            "params": tune_space(space, c.search.algorithm, f"classical.search.space.{model}"),
        }
        rows = run_trials(
            f"improve-{model}",
            param_space,
            data,
            _settings(spec, c.search, status_path=_status(ctx)),
            ctx.progress,
        )
        all_trials += [{**r, "stage": "improve"} for r in rows]
        if is_nested:
            nested[model] = _nested_estimate(rows, ns, data)
            best_rows.append(_nested_row(model, rows, nested[model], data))
        else:
            ok = rank([r for r in rows if r["status"] == "ok"], names)
            if ok:
                best_rows.append({**ok[0], "stage": "improve"})
    return rank(best_rows, names), all_trials, nested


def _fold_mean(row: dict, prefix: str) -> float:
    scores = [s for s, label in zip(row["scores"], row["folds"], strict=False) if label.startswith(prefix)]
    return float(np.mean(scores)) if scores else -np.inf


def _nested_estimate(rows: list[dict], ns: cvlib.NestedSplits, data: TrialData) -> dict[str, Any]:
    """Per outer fold: pick params by inner CV only, refit on the outer training part, score the outer test
    part."""
    import ray

    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        return {"error": "every trial failed"}
    remote = ray.remote(num_cpus=data.cpus_per_fold)(fit_and_score)
    chosen, futures, inner_best = [], [], []
    for k, (train, test) in enumerate(ns.outer):
        best = max(ok, key=lambda r: _fold_mean(r, f"outer{k}/"))
        inner_best.append(_fold_mean(best, f"outer{k}/"))
        chosen.append(best["params"])
        pipeline = trial_pipeline(_plan_from_row(best, data), data)
        futures.append(remote.remote(pipeline, data.X, data.y, train, test, data.metrics))
    outer = [ranking_score(scores, data.metric) for scores, _ in ray.get(futures)]
    return {
        "outer_scores": outer,
        "nested_mean": float(np.mean(outer)),
        "nested_std": float(np.std(outer)),
        "inner_mean": float(np.mean(inner_best)),
        "optimism": float(np.mean(inner_best) - np.mean(outer)),
        "chosen_params": chosen,
    }


def _nested_row(model: str, rows: list[dict], estimate: dict, data: TrialData) -> dict[str, Any]:
    ok = [r for r in rows if r["status"] == "ok"]
    if "error" in estimate:
        return {
            "model": model,
            "params": {},
            "mean": None,
            "std": None,
            "scores": [],
            "folds": [],
            "fit_time": None,
            "node": None,
            "status": "failed",
            "error": estimate["error"],
            "stage": "improve",
        }
    best = max(ok, key=lambda r: _fold_mean(r, "all/"))
    return {
        **best,
        "mean": estimate["nested_mean"],
        "std": estimate["nested_std"],
        "scores": estimate["outer_scores"],
        "folds": [f"outer{k}" for k in range(len(estimate["outer_scores"]))],
        "stage": "improve",
        "inner_mean": _fold_mean(best, "all/"),
    }


def _plan_from_row(row: dict, data: TrialData) -> zoo.ModelPlan:
    params = {k: v for k, v in row["params"].items() if k not in ("scaling", "multiclass")}
    return zoo.plan(row["model"], data.task, params, data.scaler, data.n_classes, data.seed, data.reduce)


def _pick_best(rows: list[dict]) -> dict:
    ok = [r for r in rows if r["status"] == "ok" and r["mean"] is not None]
    if not ok:
        raise MlkubeError(
            "every model failed; see the errors in stages/evaluate.json", "check the models' params"
        )
    return max(ok, key=lambda r: r["mean"])


def _refit_and_save(ctx, cd: ClassicalData, best: dict) -> dict[str, Any]:
    """Refit the best pipeline on all training rows, score it on the holdout once with every metric, save it
    with model.json."""
    spec = ctx.spec
    data = _trial_data(spec, cd, [])
    pipeline = trial_pipeline(_plan_from_row(best, data), data).fit(cd.X, cd.y)
    final = {
        "model": best["model"],
        "params": best["params"],
        "cv_mean": best["mean"],
        "cv_std": best["std"],
        "stage": best["stage"],
        "metric": data.metric,
        "holdout_score": None,
        "artifact": ctx.run.relative(ctx.run.model_dir(CLASSICAL_MODEL)),
    }
    cv_metrics = best.get("metrics") or {data.metric: {"mean": best["mean"], "std": best["std"]}}
    holdout: dict[str, float | None] = {}
    if cd.holdout is not None:
        holdout = _holdout_results(pipeline, cd, data, final)
    save_sklearn_model(
        ctx.run.model_dir(CLASSICAL_MODEL),
        pipeline,
        {
            "name": CLASSICAL_MODEL,
            "task": cd.data.task,
            "estimator": best["model"],
            "params": best["params"],
            "features": cd.data.feature_names,
            "columns": input_columns(cd.data, cd.train),
            "unknown_categories": spec.preprocess.unknown_categories,
            "example": example_row(cd.data, cd.holdout if cd.holdout is not None else cd.train),
            "target": cd.data.target_name,
            "classes": cd.data.class_names,
            "metrics": {
                m: {
                    "cv_mean": cv_metrics.get(m, {}).get("mean"),
                    "cv_std": cv_metrics.get(m, {}).get("std"),
                    "holdout": holdout.get(m),
                }
                for m in data.metrics
            },
            "run_id": ctx.run.id,
        },
    )
    return final


def _holdout_results(pipeline, cd: ClassicalData, data: TrialData, final: dict) -> dict[str, float | None]:
    """Score the refitted pipeline on the holdout once (every metric, scikit-learn's multi-metric scorer);
    fill `final` with the scores, the confusion matrix and the predictions the report plots."""
    from sklearn.metrics import check_scoring, confusion_matrix
    from sklearn.utils import _safe_indexing

    X_hold, y_hold = _safe_indexing(cd.data.X, cd.holdout), cd.data.y[cd.holdout]
    scored = check_scoring(pipeline, scoring=data.metrics)(pipeline, X_hold, y_hold)
    holdout = {m: float(v) if np.isfinite(v) else None for m, v in scored.items()}
    predicted = pipeline.predict(X_hold)
    final.update(
        holdout_score=holdout[data.metric],
        holdout_scores=holdout,
        holdout_rows=len(y_hold),
        holdout_predictions={"observed": y_hold.tolist(), "predicted": predicted.tolist()},
    )
    if cd.data.task == "classification":
        labels = np.arange(len(cd.data.class_names))
        final["confusion_matrix"] = confusion_matrix(y_hold, predicted, labels=labels).tolist()
        if hasattr(pipeline, "predict_proba"):
            final["holdout_predictions"]["probabilities"] = pipeline.predict_proba(X_hold).tolist()
    return holdout


def input_columns(data: TabularData, rows: np.ndarray) -> list[dict[str, Any]]:
    """The model card's input columns: name, type and, for a categorical one, the categories of the training
    rows."""
    out = []
    for name, kind in data.column_types.items():
        column: dict[str, Any] = {"name": name, "type": kind}
        if kind == "categorical":
            column["categories"] = sorted(data.X[name].iloc[rows].dropna().unique().tolist())
        out.append(column)
    return out


def example_row(data: TabularData, rows: np.ndarray) -> dict[str, Any]:
    """The first complete row of `rows` (else the first) as a request sends it: a real row of the data, the
    serving example."""
    from mlkube.trainer.columns import json_value

    X = data.X.iloc[rows] if data.is_table else data.X[rows]
    complete = np.flatnonzero(~(X.isna().to_numpy() if data.is_table else np.isnan(X)).any(axis=1))
    at = int(complete[0]) if len(complete) else 0
    values = X.iloc[at] if data.is_table else dict(zip(data.feature_names, X[at], strict=True))
    return {name: json_value(values[name], kind) for name, kind in data.column_types.items()}
