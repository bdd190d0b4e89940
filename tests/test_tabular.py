"""Tabular data: built-ins, user CSV/Parquet files, task inference and the errors a user meets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlkube.trainer.errors import MlkubeError
from mlkube.trainer.spec import DataSpec
from mlkube.trainer.tabular import load_tabular

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "name, task, rows, classes",
    [
        ("iris", "classification", 150, 3),
        ("wine", "classification", 178, 3),
        ("breast_cancer", "classification", 569, 2),
        ("diabetes", "regression", 442, 0),
    ],
)
def test_builtins_load_without_download(name, task, rows, classes):
    data = load_tabular(DataSpec(name=name))
    assert (data.task, data.n_rows, len(data.class_names)) == (task, rows, classes)
    assert data.X.dtype == np.float64 and len(data.feature_names) == data.X.shape[1]


def test_parquet_with_string_classes_and_chosen_features(tmp_path):
    frame = pd.DataFrame(
        {
            "a": [1.0, 2, 3, 4],
            "b": [0.5, 0.1, 0.2, 0.3],
            "noise": [9, 9, 9, 9],
            "kind": ["cat", "dog", "cat", "dog"],
        }
    )
    frame.to_parquet(tmp_path / "t.parquet")
    data = load_tabular(DataSpec(path=tmp_path / "t.parquet", target="kind", features=["a", "b"]))
    assert data.task == "classification" and data.class_names == ["cat", "dog"]
    assert data.y.tolist() == [0, 1, 0, 1] and data.feature_names == ["a", "b"]


def test_a_continuous_target_is_regression_and_task_can_be_forced(tmp_path):
    (tmp_path / "r.csv").write_text("x,y\n1,0.5\n2,1.5\n3,2.25\n4,3\n")
    assert load_tabular(DataSpec(path=tmp_path / "r.csv", target="y")).task == "regression"
    (tmp_path / "c.csv").write_text("x,y\n1,1\n2,2\n3,1\n4,2\n")
    assert load_tabular(DataSpec(path=tmp_path / "c.csv", target="y")).task == "classification"
    assert (
        load_tabular(DataSpec(path=tmp_path / "c.csv", target="y"), task="regression").y.dtype == np.float64
    )


@pytest.mark.parametrize(
    "content, message",
    [
        ("x,y\n", "has no rows"),
        ("x,y\n1,\n2,1\n", "has 1 missing value(s) (file lines [2]"),
        ("x,y\n1,0\n", "column(s) ['z'] not in"),
        ("y\n1\n2\n", "no feature columns"),
    ],
)
def test_bad_files_are_refused_with_the_fix(tmp_path, content, message):
    (tmp_path / "bad.csv").write_text(content)
    features = ["z"] if "'z'" in message else None
    with pytest.raises(MlkubeError) as err:
        load_tabular(DataSpec(path=tmp_path / "bad.csv", target="y", features=features))
    assert message in str(err.value) and err.value.fix


def test_unknown_file_type_and_digest_changes_with_the_data(tmp_path):
    (tmp_path / "t.xlsx").write_text("x")
    with pytest.raises(MlkubeError, match="neither .csv nor .parquet"):
        load_tabular(DataSpec(path=tmp_path / "t.xlsx", target="y"))
    (tmp_path / "a.csv").write_text("x,y\n1,0\n2,1\n")
    (tmp_path / "b.csv").write_text("x,y\n1,0\n3,1\n")
    digest = [load_tabular(DataSpec(path=tmp_path / f, target="y")).digest() for f in ("a.csv", "b.csv")]
    assert digest[0] != digest[1] and len(digest[0]) == 64


@pytest.mark.parametrize(
    "content, spec, message",
    [
        ("a,y\n1,0\n2,inf\n3,1\n", {}, "column 'y' of bad.csv holds ±inf (file lines 3)"),
        ("a,y\n1,0\n2,1\n-inf,0\n", {}, "column 'a' of bad.csv holds ±inf (file lines 4)"),
        ("a,y\n1,cat\n2,cat\n3,cat\n", {}, "'y' holds one class in every row"),
        ("a,y\n1,0.5\n2,0.5\n", {}, "'y' holds one value in every row"),
        ("a,y\n1,0\n2,1\n", {"features": ["a", "y"]}, "data.features: lists the target 'y'"),
    ],
)
def test_data_that_would_score_wrongly_are_refused(tmp_path, content, spec, message):
    (tmp_path / "bad.csv").write_text(content)
    with pytest.raises(MlkubeError) as err:
        load_tabular(DataSpec(path=tmp_path / "bad.csv", target="y", **spec))
    assert message in str(err.value) and err.value.fix
