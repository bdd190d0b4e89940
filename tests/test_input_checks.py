"""Hostile inputs (issue 16, classes 7 and 8): every check that needs only the spec and the data runs in
`mlkube validate`, and `mlkube run` runs the same checks before it creates anything. A result that would be
wrong but look successful (one class, the answer among the inputs, a fold without a class) is refused too.

Each case runs the real command in a subprocess, as a user would, and expects exit 2, a message naming the
field or column, a fix, no traceback, and no run directory."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration

LSTM = "lstm:\n  sequence_length: 30\n  train: {batch_size: 8}\n  elastic: {nproc_per_node: 1}\n"

# name → (spec, files written beside it {name: text}, what the message must say)
WRONG_BUT_SUCCESSFUL = {
    "one-class target": (
        "data: {path: t.csv, target: y}\n",
        {"t.csv": "a,b,y\n" + "".join(f"{i},{i % 3},1\n" for i in range(30))},
        ["data.target", "'y' holds one class", "fix:"],
    ),
    "constant regression target": (
        "data: {path: t.csv, target: y}\nclassical: {task: regression, cv: {scheme: kfold}}\n",
        {"t.csv": "a,y\n" + "".join(f"{i},2.5\n" for i in range(30))},
        ["data.target", "one value", "fix:"],
    ),
    "inf in a feature": (
        "data: {path: t.csv, target: y}\n",
        {"t.csv": "a,b,y\n" + "".join(f"{i},{'inf' if i in (4, 9) else i},{i % 2}\n" for i in range(30))},
        ["column 'b'", "±inf", "file lines 6, 11", "fix:"],
    ),
    "inf in a regression target": (
        "data: {path: t.csv, target: y}\nclassical: {cv: {scheme: kfold}}\n",
        {"t.csv": "a,y\n" + "".join(f"{i},{'-inf' if i == 7 else i * 1.5}\n" for i in range(30))},
        ["column 'y'", "±inf", "file lines 9", "fix:"],
    ),
    "NaN in features without impute": (
        "data: {path: t.csv, target: y}\nclassical: {models: [LR, KNN, RF], cv: {folds: 3}}\n",
        {"t.csv": "a,b,y\n" + "".join(f"{i},{'' if i == 3 else i % 7},{i % 2}\n" for i in range(30))},
        ["1 missing feature value(s) in column(s) ['b']", "['LR', 'KNN']", "preprocess.impute", "['RF']"],
    ),
    "target among the features": (
        "data: {path: t.csv, target: y, features: [a, y]}\n",
        {"t.csv": "a,y\n" + "".join(f"{i},{i % 2}\n" for i in range(30))},
        ["data.features", "target 'y'", "fix:"],
    ),
    "unshuffled folds of sorted classes": (
        "data: {name: iris}\nclassical: {cv: {scheme: kfold, folds: 3, shuffle: false}}\n",
        {},
        ["classical.cv", "training part of fold 0", "['versicolor', 'virginica']", "shuffle: true"],
    ),
    "the LSTM's target among its inputs": (
        LSTM.replace("lstm:\n", "lstm:\n  data: {dynamic_inputs: [prcp, QObs]}\n"),
        {},
        ["lstm.data.dynamic_inputs", "'QObs(mm/d)'", "lstm.horizon > 1"],
    ),
}

VALID_THEN_FAILED = {
    "period outside the data": (
        LSTM + "  data: {train_period: [1990-01-01, 1990-12-31]}\n",
        {},
        ["lstm.data.train_period", "falls outside the data", "2000-01-01..2002-12-31"],
    ),
    "train after test": (
        LSTM + "  data:\n    train_period: [2002-01-01, 2002-12-31]\n"
        "    validation_period: [2001-01-01, 2001-12-31]\n    test_period: [2000-01-01, 2000-12-31]\n",
        {},
        ["lstm.data.test_period starts on 2000-01-01", "days of inputs before it", "fix:"],
    ),
    "sequence longer than the data": (
        LSTM.replace("sequence_length: 30", "sequence_length: 2000"),
        {},
        ["lstm.sequence_length (2000 days)", "train_period", "fix:"],
    ),
    "unknown site": (
        LSTM + "  data: {sites: ['01022500', '99999999']}\n",
        {},
        ["lstm.data.sites", "'99999999'", "choose from: 01022500"],
    ),
    "warm-up as long as the sequence": (
        LSTM.replace("batch_size: 8", "batch_size: 8, warmup_days: 30"),
        {},
        ["lstm.train.warmup_days (30)", "lstm.sequence_length (30)", "fix:"],
    ),
    "missing series path": (
        LSTM + "  data: {path: no-such-folder, target: q}\n",
        {},
        ["lstm.data.path", "no-such-folder does not exist", "fix:"],
    ),
    "batch smaller than the workers": (
        LSTM.replace("nproc_per_node: 1", "nproc_per_node: 2, max_nodes: 2").replace(
            "batch_size: 8", "batch_size: 3"
        ),
        {},
        ["lstm.train.batch_size (3)", "4 = nproc_per_node × max_nodes", "fix:"],
    ),
    "stratified CV on a regression target": (
        "data: {name: diabetes}\n",
        {},
        ["classical.cv.scheme", "stratified splits by class", "regression target", "scheme: kfold"],
    ),
    "stratified inner CV of nested on a regression target": (
        "data: {name: diabetes}\nclassical:\n  models: [Ridge]\n"
        "  cv: {scheme: nested, outer: {scheme: kfold}, inner: {scheme: stratified}}\n"
        "  search: {space: {Ridge: {alpha: [0.1, 1]}}}\n",
        {},
        ["classical.cv.inner.scheme", "stratified splits by class"],
    ),
    "n_neighbors larger than a training fold": (
        "data: {name: iris}\nclassical: {models: [KNN], params: {KNN: {n_neighbors: 130}}}\n",
        {},
        ["classical.params.KNN.n_neighbors: 130", "smallest training fold has 120 rows", "n_neighbors ≤ 120"],
    ),
    "n_neighbors in a search space larger than an inner fold": (
        "data: {name: iris}\nclassical:\n  models: [KNN]\n"
        "  cv: {scheme: nested, outer: {scheme: stratified}, inner: {scheme: stratified, folds: 3}}\n"
        "  search: {algorithm: random, trials: 4, space: {KNN: {n_neighbors: {randint: [1, 100]}}}}\n",
        {},
        ["classical.search.space.KNN.n_neighbors: 99", "smallest training fold has 80 rows"],
    ),
    "a parameter pair only fitting refuses (l1 with LR's default solver)": (
        "data: {name: iris}\nclassical: {models: [LR], params: {LR: {penalty: l1}}}\n",
        {},
        [
            "classical.params.LR: scikit-learn refuses these parameters together",
            "Solver lbfgs supports only 'l2' or None penalties, got l1 penalty",
        ],
    ),
    "a parameter pair only fitting refuses (elasticnet with liblinear, binary target)": (
        "data: {name: breast_cancer}\n"
        "classical: {models: [LR], params: {LR: {solver: liblinear, penalty: elasticnet}}}\n",
        {},
        [
            "classical.params.LR: scikit-learn refuses these parameters together",
            "Only 'saga' solver supports",
        ],
    ),
}


def _write(tmp_path, spec: str, files: dict[str, str]):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    path = tmp_path / "spec.yaml"
    path.write_text(spec)
    return path


def _refused(proc, expected: list[str]) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    for words in expected:
        assert words in proc.stderr, f"{words!r} not in:\n{proc.stderr}"
    assert "fix:" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("case", [*WRONG_BUT_SUCCESSFUL, *VALID_THEN_FAILED])
def test_validate_and_run_refuse_it_before_creating_a_run(case, tmp_path, run_cli):
    spec, files, expected = {**WRONG_BUT_SUCCESSFUL, **VALID_THEN_FAILED}[case]
    path = _write(tmp_path, spec, files)
    _refused(run_cli("validate", path), expected)
    _refused(run_cli("--quiet", "run", path), expected)
    assert not (tmp_path / "runs").exists(), "a refused run left a run directory"


def test_missing_features_with_impute_or_models_that_take_them_are_valid(tmp_path, run_cli):
    table = "a,b,y\n" + "".join(f"{i},{'' if i == 3 else i % 7},{i % 2}\n" for i in range(30))
    for section in (
        "preprocess: {impute: median}\nclassical: {models: [LR, KNN]}",
        "classical: {models: [RF, GBM]}",
    ):
        path = _write(tmp_path, f"data: {{path: t.csv, target: y}}\n{section}\n", {"t.csv": table})
        proc = run_cli("validate", path)
        assert proc.returncode == 0 and "valid" in proc.stdout, proc.stderr


@pytest.mark.gpu
def test_more_workers_than_gpus_is_refused_before_a_run(tmp_path, run_cli):
    import torch

    workers = torch.cuda.device_count() + 1
    path = _write(tmp_path, LSTM.replace("nproc_per_node: 1", f"nproc_per_node: {workers}"), {})
    expected = [f"lstm.elastic.nproc_per_node ({workers}) exceeds the {workers - 1} GPU(s)", "fix:"]
    _refused(run_cli("validate", path), expected)
    _refused(run_cli("--quiet", "run", path), expected)
    assert not (tmp_path / "runs").exists()
