"""Real tables: separators, decimal marks, encodings and duplicate names; typed columns through scikit-learn's
ColumnTransformer per fold; several metrics, each scikit-learn's scorer; exact hold-out protocols; PCA."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlkube.trainer.classical import cv as cvlib
from mlkube.trainer.classical import zoo
from mlkube.trainer.classical.encode import Encoding
from mlkube.trainer.classical.search import fit_and_score
from mlkube.trainer.columns import check_cardinality
from mlkube.trainer.errors import MlkubeError
from mlkube.trainer.spec import DataSpec
from mlkube.trainer.tabular import load_tabular

pytestmark = pytest.mark.unit

ROWS = [["1.5", "2", "red", "2024-01-02", "yes", "a"], ["2.5", "3", "blue", "2024-02-03", "no", "b"]] * 4
TYPES = {"f1": "numeric", "f2": "numeric", "colour": "categorical", "when": "date", "flag": "boolean"}


def _csv(tmp_path, sep: str, decimal: str = ".", header: str | None = None, name: str = "t.csv"):
    lines = [header or sep.join([*TYPES, "label"])]
    lines += [sep.join(v.replace(".", decimal) for v in row) for row in ROWS]
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(("sep", "decimal"), [(",", "."), (";", ","), (";", "."), ("\t", "."), ("|", ",")])
def test_each_separator_and_decimal_mark_is_sniffed(tmp_path, sep, decimal):
    data = load_tabular(DataSpec(path=_csv(tmp_path, sep, decimal), target="label"))
    assert data.feature_names == list(TYPES) and data.column_types == TYPES
    assert data.X["f1"].tolist() == [1.5, 2.5] * 4 and data.class_names == ["a", "b"]


@pytest.mark.parametrize(("sep", "given"), [(";", ";"), ("\t", "\\t"), ("\t", "\t"), (":", ":")])
def test_a_given_separator_and_decimal_mark_are_used(tmp_path, sep, given):
    data = load_tabular(DataSpec(path=_csv(tmp_path, sep, ","), target="label", sep=given, decimal=","))
    assert data.X["f1"].tolist() == [1.5, 2.5] * 4


def test_duplicate_column_names_are_refused_naming_them(tmp_path):
    path = _csv(tmp_path, ",", header="f1,f1,colour,when,flag,label")
    with pytest.raises(MlkubeError, match=r"names the column\(s\) \['f1'\] more than once") as err:
        load_tabular(DataSpec(path=path, target="label"))
    assert "silently" in err.value.fix


def test_a_file_that_is_not_utf8_is_refused_with_its_line_and_read_with_its_encoding(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("x,city,y\n1,Zurich,a\n2,Zürich,b\n3,Genève,a\n4,Bern,b\n".encode("latin-1"))
    with pytest.raises(MlkubeError, match="is not UTF-8: byte 0xfc on line 3") as err:
        load_tabular(DataSpec(path=path, target="y"))
    assert "data.encoding" in err.value.fix and "cp1252" in err.value.fix
    data = load_tabular(DataSpec(path=path, target="y", encoding="latin-1"))
    assert data.X["city"].tolist() == ["Zurich", "Zürich", "Genève", "Bern"]
    with pytest.raises(MlkubeError, match="unknown encoding 'klingon'"):
        load_tabular(DataSpec(path=path, target="y", encoding="klingon"))


def test_a_utf8_bom_is_dropped(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffx,y\n1,a\n2,b\n".encode())
    assert load_tabular(DataSpec(path=path, target="y")).feature_names == ["x"]


def test_column_types_are_inferred_and_overridden(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("zip,flag,day,y\n8001,true,2024-03-01,a\n8002,false,2024-03-02T10:30,b\n8001,,,a\n")
    inferred = load_tabular(DataSpec(path=path, target="y"))
    assert inferred.column_types == {"zip": "numeric", "flag": "boolean", "day": "date"}
    assert inferred.X["flag"].tolist()[:2] == [1.0, 0.0] and np.isnan(inferred.X["flag"][2])
    assert str(inferred.X["day"].dtype).startswith("datetime64") and inferred.X["day"].isna().tolist()[2]
    given = load_tabular(
        DataSpec(path=path, target="y", columns={"zip": "categorical", "flag": "categorical"})
    )
    assert given.X["zip"].tolist() == ["8001", "8002", "8001"] and given.column_types["zip"] == "categorical"


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({"colour": "numeric"}, r"column 'colour' of t.csv is numeric, but holds \['blue', 'red'\]"),
        ({"colour": "date"}, "is date, but holds"),
        ({"colour": "boolean"}, "is boolean, but holds"),
        ({"size": "numeric"}, r"data.columns: \['size'\] not among the feature columns"),
    ],
)
def test_a_column_that_does_not_hold_its_type_is_refused_naming_lines(tmp_path, columns, message):
    with pytest.raises(MlkubeError, match=message) as err:
        load_tabular(DataSpec(path=_csv(tmp_path, ","), target="label", columns=columns))
    assert err.value.fix


def test_a_categorical_column_above_the_cap_is_refused_with_the_fix():
    X = pd.DataFrame({"id": [f"u{i}" for i in range(60)]})
    check_cardinality(X, {"id": "categorical"}, 60)
    with pytest.raises(
        MlkubeError, match="'id' has 60 distinct values, more than preprocess.max_categories"
    ) as e:
        check_cardinality(X, {"id": "categorical"}, 50)
    assert "data.features" in e.value.fix


def _typed_table(n: int = 80, seed: int = 0):
    rng = np.random.default_rng(seed)
    colour = rng.choice(["red", "blue", "green"], n).astype(object)
    x = rng.normal(size=n)
    X = pd.DataFrame(
        {
            "x": x,
            "colour": colour,
            "flag": rng.choice([0.0, 1.0], n),
            "day": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 365, n), unit="D"),
        }
    )
    y = ((colour == "red") | (x > 1.2)).astype(int)  # imbalanced: about a third
    return X, y, Encoding({"x": "numeric", "colour": "categorical", "flag": "boolean", "day": "date"})


def test_linear_models_one_hot_and_trees_ordinal_encode_categories():
    X, y, encoding = _typed_table()
    for name, encoder in (("LR", "OneHotEncoder"), ("KNN", "OneHotEncoder"), ("CART", "OrdinalEncoder")):
        pipeline = zoo.build_pipeline(zoo.plan(name, "classification", {}, "auto", 2, 0), "mean", encoding)
        columns = pipeline.fit(X, y).named_steps["columns"]
        assert type(columns.named_transformers_["categorical"]).__name__ == encoder
    width = {"parts": 4, "ordinal": 1}
    for dates, parts in width.items():
        lr = zoo.plan("LR", "classification", {}, "auto", 2, 0)
        columns = zoo.build_pipeline(lr, "mean", Encoding(encoding.types, dates=dates))[0].fit(X, y)
        assert columns.transform(X).shape[1] == 1 + 3 + 1 + parts


def test_encoders_are_fitted_on_the_training_fold_only():
    """A category seen only in the test rows is unknown to the fitted pipeline: ignored or refused, as the
    spec says."""
    X, y, encoding = _typed_table()
    train = np.flatnonzero(X["colour"] != "green")
    test = np.flatnonzero(X["colour"] == "green")
    for name in ("LR", "CART"):
        plan = zoo.plan(name, "classification", {}, "auto", 2, 0)
        ignoring = zoo.build_pipeline(plan, "none", encoding).fit(X.iloc[train], y[train])
        assert "green" not in np.concatenate(ignoring[0].named_transformers_["categorical"].categories_)
        assert len(ignoring.predict(X.iloc[test])) == len(test)
        refusing = zoo.build_pipeline(plan, "none", Encoding(encoding.types, unknown="error"))
        refusing.fit(X.iloc[train], y[train])
        with pytest.raises(ValueError, match="unknown categor"):
            refusing.predict(X.iloc[test])


METRICS = ["accuracy", "balanced_accuracy", "f1", "roc_auc", "average_precision", "neg_log_loss"]


@pytest.mark.parametrize("name", ["LR", "CART", "GBM"])
def test_each_metric_equals_scikit_learns_scorer_on_the_same_folds(name):
    from sklearn.model_selection import StratifiedKFold, cross_validate

    X, y, encoding = _typed_table()
    pipeline = zoo.build_pipeline(zoo.plan(name, "classification", {}, "auto", 2, 0), "mean", encoding)
    folds = list(StratifiedKFold(4, shuffle=True, random_state=0).split(X, y))
    expected = cross_validate(pipeline, X, y, cv=folds, scoring=METRICS)
    for k, (train, test) in enumerate(folds):
        scores, _ = fit_and_score(pipeline, X, y, train, test, METRICS)
        for metric in METRICS:
            assert scores[metric] == pytest.approx(expected[f"test_{metric}"][k], abs=1e-12), (metric, k)


def test_regression_metrics_equal_scikit_learns_scorers():
    from sklearn.datasets import load_diabetes
    from sklearn.model_selection import KFold, cross_validate

    X, y = load_diabetes(return_X_y=True)
    metrics = ["r2", "neg_root_mean_squared_error", "neg_mean_absolute_error"]
    pipeline = zoo.build_pipeline(zoo.plan("Ridge", "regression", {}, "auto", 0, 0))
    folds = list(KFold(3, shuffle=True, random_state=0).split(X))
    expected = cross_validate(pipeline, X, y, cv=folds, scoring=metrics)
    for k, (train, test) in enumerate(folds):
        scores, _ = fit_and_score(pipeline, X, y, train, test, metrics)
        assert [scores[m] for m in metrics] == pytest.approx([expected[f"test_{m}"][k] for m in metrics])


@pytest.mark.parametrize("stratify", [True, False])
def test_the_holdout_is_train_test_split_with_or_without_stratification(stratify):
    from sklearn.model_selection import train_test_split

    y = np.array([0] * 40 + [1] * 10)
    train, test = cvlib.holdout_split(0.2, y, 1, stratify=stratify)
    expected = train_test_split(
        np.arange(50), test_size=0.2, random_state=1, stratify=y if stratify else None
    )
    assert train.tolist() == expected[0].tolist() and test.tolist() == expected[1].tolist()
    last = cvlib.holdout_split(0.2, y, 1, ordered=True, stratify=False)
    assert last[1].tolist() == list(range(40, 50))


def test_pca_is_a_pipeline_step_whose_components_are_searchable():
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    plan = zoo.plan("SVM", "classification", {"pca__n_components": 3}, "auto", 3, 0, {"pca": 2})
    pipeline = zoo.build_pipeline(plan).fit(X, y)
    assert [s for s, _ in pipeline.steps] == ["scale", "pca", "model"]
    assert pipeline.named_steps["pca"].n_components_ == 3 and plan.describe()["pca__n_components"] == 3
    kept = zoo.build_pipeline(zoo.plan("LDA", "classification", {}, "none", 3, 0, {"pca": 0.95})).fit(X, y)
    assert kept.named_steps["pca"].explained_variance_ratio_.sum() >= 0.95
    with pytest.raises(MlkubeError, match="the pipeline has no 'pca' step") as err:
        zoo.plan("SVM", "classification", {"pca__n_components": 3}, "auto", 3, 0)
    assert "preprocess.reduce" in err.value.fix


def test_class_weight_is_a_searchable_parameter_where_the_model_has_it():
    for name in ("LR", "SVM", "CART", "RF", "GBM"):
        plan = zoo.plan(name, "classification", {"class_weight": "balanced"}, "auto", 2, 0)
        assert zoo.build_pipeline(plan)[-1].get_params()["class_weight"] == "balanced"
    with pytest.raises(MlkubeError, match=r"unknown parameter\(s\) \['class_weight'\]"):
        zoo.plan("KNN", "classification", {"class_weight": "balanced"}, "auto", 2, 0)


def _best(observed, probabilities=None, predicted=None):
    predictions = {"observed": observed, "predicted": predicted or observed}
    if probabilities is not None:
        predictions["probabilities"] = probabilities
    return {"model": "LR", "holdout_predictions": predictions}


def test_roc_and_precision_recall_curves_for_binary_and_one_vs_rest_and_residuals_for_regression(tmp_path):
    from mlkube.trainer.report import class_curves, residual_plot

    rng = np.random.default_rng(0)
    binary = rng.dirichlet([1, 1], 40)
    paths = class_curves(_best(rng.integers(0, 2, 40).tolist(), binary.tolist()), ["no", "yes"], tmp_path)
    assert [p.name for p in paths] == ["roc_curve.png", "precision_recall.png"]
    assert all(p.stat().st_size > 1000 for p in paths)
    three = rng.dirichlet([1, 1, 1], 40).tolist()
    assert len(class_curves(_best([0, 1, 2] * 13 + [0], three), ["a", "b", "c"], tmp_path / "ovr")) == 2
    assert class_curves(_best([0, 1]), ["a", "b"], tmp_path) == []  # no probabilities (e.g. an SVC)
    residuals = residual_plot(_best([1.0, 2.0, 3.0], predicted=[1.1, 1.8, 3.3]), tmp_path)
    assert residuals is not None and residuals.name == "residuals.png"


def test_every_metric_is_a_column_of_the_leaderboard_table_and_cv_scores_csv(tmp_path):
    import csv

    from mlkube.trainer.report import leaderboard_table, write_cv_scores

    row = {
        "model": "LR",
        "stage": "evaluate",
        "params": {},
        "mean": 0.8,
        "std": 0.1,
        "scores": [0.7, 0.9],
        "folds": ["0", "1"],
        "fit_time": 0.01,
        "status": "ok",
        "metrics": {
            "f1": {"mean": 0.5, "std": 0.1, "scores": [0.4, 0.6]},
            "roc_auc": {"mean": None, "scores": []},
        },
    }
    board = {"metric": "accuracy", "metrics": ["accuracy", "f1", "roc_auc"], "task": "classification"}
    board |= {"scheme": {"scheme": "stratified"}, "rows": [row]}
    table = leaderboard_table(board).splitlines()
    assert table[2].split()[:7] == ["#", "model", "stage", "mean", "std", "f1", "roc_auc"]
    assert table[4].split()[3:7] == ["0.8000", "0.1000", "0.5000", "-"]
    write_cv_scores(tmp_path / "cv.csv", [row], board["metrics"])
    lines = list(csv.DictReader((tmp_path / "cv.csv").open()))
    assert [(r["fold"], r["score"], r["f1"], r["roc_auc"]) for r in lines] == [
        ("0", "0.7", "0.4", ""),
        ("1", "0.9", "0.6", ""),
    ]


def test_the_penguins_example_is_a_real_typed_table_with_an_imbalanced_target():
    from pathlib import Path

    from mlkube.pipeline import check_inputs
    from mlkube.trainer.classical.stages import classical_data
    from mlkube.trainer.spec import load_spec

    spec = load_spec(Path(__file__).resolve().parents[1] / "examples" / "penguins.yaml")
    check_inputs(spec)
    data = classical_data(spec).data
    assert data.n_rows == 344 and data.class_names == ["No", "Yes"]
    assert data.summary()["classes"] == {"No": 36, "Yes": 308}
    kinds = data.column_types
    assert [kinds[c] for c in ("Species", "Island", "Sex", "Date Egg")] == ["categorical"] * 3 + ["date"]
    assert kinds["Body Mass (g)"] == "numeric" and data.numeric_missing().any()


def test_a_metric_that_needs_a_method_a_model_lacks_is_refused_before_any_trial():
    from mlkube.pipeline import check_inputs
    from mlkube.trainer.spec import parse_spec

    spec = parse_spec(
        "data: {name: iris}\nclassical: {models: [LR, SVM], metrics: [f1_macro, neg_log_loss]}\n"
    )
    with pytest.raises(
        MlkubeError, match="classical.metrics: neg_log_loss needs predict_proba, which SVM"
    ) as e:
        check_inputs(spec)
    assert "probability: true" in e.value.fix
    check_inputs(parse_spec("data: {name: iris}\nclassical: {models: [LR, SVM], metrics: [f1_macro]}\n"))
