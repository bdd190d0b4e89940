"""Classical ML on a real two-node Ray cluster: spot-check, every CV scheme, search, nested CV, faults."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.integration


def _board(run):
    return json.loads((run.path / "leaderboard.json").read_text())


def _tutorial_models():
    """The tutorial's six models exactly as it builds them (LR's multi_class='ovr' is OneVsRestClassifier in
    scikit-learn ≥ 1.7; CART seeded, which the tutorial leaves unseeded), no scaling."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import SVC
    from sklearn.tree import DecisionTreeClassifier

    return {
        "LR": OneVsRestClassifier(LogisticRegression(solver="liblinear", random_state=1)),
        "LDA": LinearDiscriminantAnalysis(),
        "KNN": KNeighborsClassifier(),
        "CART": DecisionTreeClassifier(random_state=1),
        "NB": GaussianNB(),
        "SVM": SVC(gamma="auto", random_state=1),
    }


def test_iris_leaderboard_follows_the_contract(iris_run):
    board = _board(iris_run)
    assert board["metric"] == "accuracy"
    assert {r["model"] for r in board["rows"]} == {"LR", "LDA", "KNN", "CART", "NB", "SVM"}
    for row in board["rows"]:
        assert {"model", "params", "mean", "std", "scores", "fit_time", "node"} <= row.keys()
        assert len(row["scores"]) == 10 and row["status"] == "ok"
        assert "scaling" not in row["params"]  # preprocess.scaler: none, as the tutorial
    means = [r["mean"] for r in board["rows"]]
    assert means == sorted(means, reverse=True)
    assert board["best"]["model"] == board["rows"][0]["model"]
    lr = next(r for r in board["rows"] if r["model"] == "LR")
    assert "one-vs-rest" in lr["params"]["multiclass"]


def test_iris_example_is_the_tutorials_protocol_exactly(iris_run):
    """The tutorial's script, step by step: the same fold scores (1e-12) and the same validation accuracy."""
    from sklearn.datasets import load_iris
    from sklearn.metrics import accuracy_score
    from sklearn.model_selection import StratifiedKFold, cross_val_score, train_test_split

    X, y = load_iris(return_X_y=True)
    X_train, X_validation, Y_train, Y_validation = train_test_split(X, y, test_size=0.20, random_state=1)
    kfold = StratifiedKFold(n_splits=10, random_state=1, shuffle=True)
    board = _board(iris_run)
    rows = {r["model"]: r for r in board["rows"]}
    means = {}
    for name, model in _tutorial_models().items():
        cv_results = cross_val_score(model, X_train, Y_train, cv=kfold, scoring="accuracy")
        assert rows[name]["scores"] == pytest.approx(list(cv_results), abs=1e-12), name
        means[name] = cv_results.mean()
    best = max(means, key=means.get)  # the tutorial picks SVM by its mean
    assert board["best"]["model"] == best == "SVM"
    model = _tutorial_models()[best].fit(X_train, Y_train)
    expected = accuracy_score(Y_validation, model.predict(X_validation))
    assert board["best"]["holdout_score"] == pytest.approx(expected, abs=1e-12)
    assert board["best"]["holdout_rows"] == 30


def test_trials_spread_over_both_nodes(iris_run, ray_cluster):
    import ray

    alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    used = {r["node"] for r in _board(iris_run)["rows"]}
    assert len(alive) == 2 and used == alive


def test_outputs_of_a_finished_run(iris_run):
    from mlkube.trainer.artifacts import load_sklearn_model
    from mlkube.trainer.classical.trust import trusted_skops_types

    path = iris_run.path
    assert (path / "figures" / "algorithm_comparison.png").read_bytes()[:4] == b"\x89PNG"
    assert (path / "figures" / "confusion_matrix.png").exists()
    lines = (path / "cv_scores.csv").read_text().splitlines()
    assert lines[0] == "model,stage,params,fold,score" and len(lines) == 1 + 6 * 10
    model, card = load_sklearn_model(path / "models" / "classical", trusted_skops_types())
    assert card.estimator == _board(iris_run)["best"]["model"]
    assert card.features == [
        "sepal length (cm)",
        "sepal width (cm)",
        "petal length (cm)",
        "petal width (cm)",
    ]
    assert list(model.predict(np.array([[5.1, 3.5, 1.4, 0.2]]))) == [0]
    env = json.loads((path / "env.json").read_text())
    assert env["seed"] == 1 and env["end_time"] and len(env["data_hash"]["classical"]) == 64


def test_report_rebuilds_the_same_files_and_compare_lines_up_two_runs(iris_run, capsys):
    from mlkube.cli import main

    before = {
        p: p.read_bytes() for p in [iris_run.path / "leaderboard.json", *iris_run.figures.glob("*.png")]
    }
    assert main(["report", str(iris_run.path)]) == 0
    assert {p: p.read_bytes() for p in before} == before  # same stage results, same bytes
    assert main(["compare", str(iris_run.path), str(iris_run.path)]) == 0
    table = capsys.readouterr().out
    assert "metric: accuracy" in table and "LDA" in table and "+0.0000" in table


SCHEMES = {  # scheme → (data, cv, folds); iris is sorted by class, so ordered folds take breast_cancer
    "holdout": ("iris", "{scheme: holdout, test_size: 0.3}", 1),
    "kfold": ("iris", "{scheme: kfold, folds: 4}", 4),
    "repeated": ("iris", "{scheme: repeated, folds: 3, repeats: 2}", 6),
    "loocv": ("iris", "{scheme: loocv}", 150),
    "timeseries": ("breast_cancer", "{scheme: timeseries, folds: 3}", 3),
}


@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_cv_scheme_runs_with_the_splitters_folds(scheme, ray_cluster, run_spec):
    data, cv, n_folds = SCHEMES[scheme]
    run = run_spec(f"seed: 3\ndata: {{name: {data}}}\nclassical: {{models: [LDA, NB], cv: {cv}}}\n")
    board = _board(run)
    assert [len(r["scores"]) for r in board["rows"]] == [n_folds, n_folds]
    assert board["scheme"]["scheme"] == scheme


def test_group_scheme_keeps_each_group_in_one_fold(ray_cluster, run_spec, tmp_path):
    from sklearn.datasets import make_classification
    from sklearn.model_selection import GroupKFold, cross_val_score
    from sklearn.naive_bayes import GaussianNB

    X, y = make_classification(n_samples=120, n_features=5, random_state=0)
    groups = np.repeat(np.arange(12), 10)
    table = "\n".join(",".join(map(str, [*x, t, g])) for x, t, g in zip(X, y, groups, strict=False))
    (tmp_path / "g.csv").write_text("a,b,c,d,e,label,site\n" + table + "\n")
    run = run_spec(
        f"data: {{path: {tmp_path / 'g.csv'}, target: label, groups: site}}\n"
        "classical: {models: [NB], cv: {scheme: group, folds: 4}}\n"
    )
    expected = cross_val_score(GaussianNB(), X, y, groups=groups, cv=GroupKFold(4))
    assert _board(run)["rows"][0]["scores"] == pytest.approx(list(expected), abs=1e-12)


def test_grid_search_scores_equal_grid_search_cv(ray_cluster, run_spec):
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    run = run_spec(
        "seed: 5\ndata: {name: breast_cancer}\nclassical:\n  models: [SVM]\n"
        "  cv: {scheme: stratified, folds: 3}\n"
        "  search: {algorithm: grid, space: {SVM: {C: [0.1, 1, 10], gamma: [0.01, 0.1]}}}\n"
    )
    trials = json.loads(run.stage_file("improve").read_text())["trials"]
    assert len(trials) == 6
    X, y = load_breast_cancer(return_X_y=True)
    grid = GridSearchCV(
        make_pipeline(StandardScaler(), SVC(random_state=5)),
        {"svc__C": [0.1, 1, 10], "svc__gamma": [0.01, 0.1]},
        cv=StratifiedKFold(3, shuffle=True, random_state=5),
        scoring="accuracy",
    ).fit(X, y)
    for i, params in enumerate(grid.cv_results_["params"]):
        trial = next(
            t
            for t in trials
            if t["params"]["C"] == params["svc__C"] and t["params"]["gamma"] == params["svc__gamma"]
        )
        expected = [grid.cv_results_[f"split{k}_test_score"][i] for k in range(3)]
        assert trial["scores"] == pytest.approx(expected, abs=1e-9)
    best = json.loads(run.stage_file("improve").read_text())["best"]
    assert (
        best["params"]["C"] == grid.best_params_["svc__C"]
        and best["params"]["gamma"] == grid.best_params_["svc__gamma"]
    )


@pytest.mark.parametrize("algorithm", ["random", "tpe"])
def test_random_and_tpe_search_sample_the_space(algorithm, ray_cluster, run_spec):
    run = run_spec(
        f"seed: 2\ndata: {{name: wine}}\nclassical:\n  models: [KNN]\n  cv: {{scheme: kfold, folds: 3}}\n"
        f"  search: {{algorithm: {algorithm}, trials: 4, space: {{KNN: {{n_neighbors: {{randint: [1, 30]}}, "
        f"weights: [uniform, distance]}}}}}}\n"
    )
    trials = json.loads(run.stage_file("improve").read_text())["trials"]
    assert len(trials) == 4 and all(t["status"] == "ok" for t in trials)
    assert all(
        1 <= t["params"]["n_neighbors"] < 30 and t["params"]["weights"] in ("uniform", "distance")
        for t in trials
    )


def test_asha_stops_weak_trials_after_the_grace_folds(ray_cluster, run_spec):
    run = run_spec(
        "seed: 0\ndata: {name: breast_cancer}\nclassical:\n  models: [KNN]\n  max_concurrent: 1\n"
        "  cv: {scheme: stratified, folds: 8}\n"
        "  search: {algorithm: grid, scheduler: asha, grace_folds: 1, "
        "space: {KNN: {n_neighbors: [5, 300, 350, 400]}}}\n"
    )
    trials = json.loads(run.stage_file("improve").read_text())["trials"]
    stopped = [t for t in trials if t["status"] == "early_stopped"]
    assert stopped and all(t["params"]["n_neighbors"] >= 300 and len(t["scores"]) < 8 for t in stopped)
    assert [len(t["scores"]) for t in trials if t["params"]["n_neighbors"] == 5] == [8]


def test_nested_cv_equals_a_hand_written_nested_loop(ray_cluster, run_spec):
    from sklearn.datasets import load_wine
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    run = run_spec(
        "seed: 4\ndata: {name: wine}\nclassical:\n  models: [SVM]\n"
        "  cv: {scheme: nested, outer: {scheme: stratified, folds: 3}, "
        "inner: {scheme: stratified, folds: 3}}\n"
        "  search: {space: {SVM: {C: [0.01, 1, 100]}}}\n"
    )
    nested = json.loads(run.stage_file("improve").read_text())["nested"]["SVM"]
    X, y = load_wine(return_X_y=True)
    expected = []
    for train, test in StratifiedKFold(3, shuffle=True, random_state=4).split(X, y):
        inner = StratifiedKFold(3, shuffle=True, random_state=4)

        def pipe(c):
            return make_pipeline(StandardScaler(), SVC(C=c, random_state=4))

        best_c = max(
            [0.01, 1, 100], key=lambda c: cross_val_score(pipe(c), X[train], y[train], cv=inner).mean()
        )
        expected.append(pipe(best_c).fit(X[train], y[train]).score(X[test], y[test]))
    assert nested["outer_scores"] == pytest.approx(expected, abs=1e-12)
    assert nested["optimism"] == pytest.approx(nested["inner_mean"] - nested["nested_mean"])
    tuned = json.loads(run.stage_file("improve").read_text())["tuned"]
    assert tuned[0]["scores"] == nested["outer_scores"]
    assert (run.path / "figures" / "nested_cv.png").exists() and "optimism" in (
        run.path / "report.html"
    ).read_text()


def test_a_failing_trial_is_recorded_and_the_others_finish(ray_cluster, run_spec):
    # valid for validation's probe fit (4 features); only the data (30 features) makes RF's fit refuse it
    run = run_spec(
        "data: {name: breast_cancer}\n"
        "classical: {models: [GBM, RF], params: {RF: {monotonic_cst: [1, 0, 0, 0]}}, max_failures: 0}\n"
    )
    board = _board(run)
    status = {r["model"]: r for r in board["rows"]}
    assert status["GBM"]["status"] == "ok" and status["RF"]["status"] == "failed"
    assert "monotonic_cst" in status["RF"]["error"]
    assert board["failed"] == [{"model": "RF", "error": status["RF"]["error"]}]
    assert board["rows"][-1]["model"] == "RF"


def test_same_seed_gives_identical_scores_with_folds_in_trials_or_as_parallel_tasks(ray_cluster, run_spec):
    text = "seed: 9\ndata: {name: wine}\nclassical: {models: [CART, RF], cv: {scheme: kfold, folds: 3}}\n"
    first = _board(run_spec(text, run_id="a"))
    second = _board(run_spec(text, run_id="b"))
    parallel = _board(
        run_spec(
            text.replace("folds: 3}", "folds: 3}, parallel_folds: true, resources_per_trial: {cpu: 0.5}"),
            run_id="c",
        )
    )
    scores = [[(r["model"], r["scores"]) for r in board["rows"]] for board in (first, second, parallel)]
    assert scores[0] == scores[1] == scores[2]


def _kill_first_trial_worker(killed: list[int], deadline: float) -> None:
    """SIGKILL the first Tune trial worker process seen (once it has run for a moment)."""
    import os
    import signal
    import subprocess
    import time

    while time.monotonic() < deadline and not killed:
        table = subprocess.run(["ps", "-eo", "pid,args"], check=False, capture_output=True, text=True).stdout
        pids = [int(line.split()[0]) for line in table.splitlines() if "ray::ImplicitFunc.train" in line]
        if pids:
            time.sleep(0.5)
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])
        time.sleep(0.05)


def test_a_killed_trial_worker_is_retried_and_the_trial_finishes(ray_cluster):
    import threading
    import time

    from ray import tune
    from sklearn.datasets import make_classification
    from sklearn.model_selection import KFold

    from mlkube.trainer.classical.search import SearchSettings, Step, TrialData, run_trials
    from mlkube.trainer.progress import Progress

    X, y = make_classification(n_samples=3000, n_features=20, random_state=0)
    steps = [Step(str(i), tr, te) for i, (tr, te) in enumerate(KFold(5).split(X))]
    data = TrialData(
        X=X,
        y=y,
        steps=steps,
        task="classification",
        metric="accuracy",
        scaler="auto",
        impute="none",
        n_classes=2,
        seed=0,
    )
    killed: list[int] = []
    killer = threading.Thread(target=_kill_first_trial_worker, args=(killed, time.monotonic() + 60))
    killer.start()
    rows = run_trials(
        "fault",
        {"model": tune.grid_search(["RF", "GBM"])},
        data,
        SearchSettings(max_failures=2),
        Progress(quiet=True),
    )
    killer.join()
    assert killed, "no trial worker was seen to kill"
    assert [r["status"] for r in rows] == ["ok", "ok"] and all(len(r["scores"]) == 5 for r in rows)
    calm = run_trials(
        "calm", {"model": tune.grid_search(["RF", "GBM"])}, data, SearchSettings(), Progress(quiet=True)
    )
    assert {r["model"]: r["scores"] for r in rows} == {r["model"]: r["scores"] for r in calm}


def test_a_typed_csv_spot_checks_and_searches_with_every_metric_equal_to_scikit_learns(
    ray_cluster, run_spec, tmp_path
):
    """A semicolon, decimal-comma CSV with categorical, boolean and date columns through the real stages: each
    metric of the leaderboard equals scikit-learn's `cross_validate` on the same folds, and class_weight and
    the PCA step's components are searched like any parameter."""
    from sklearn.model_selection import StratifiedKFold, cross_validate

    from mlkube.trainer.classical import zoo
    from mlkube.trainer.classical.encode import Encoding
    from mlkube.trainer.spec import DataSpec
    from mlkube.trainer.tabular import load_tabular
    from tests.serving_fixtures import tables_csv

    path = tables_csv(tmp_path)
    metrics = ["balanced_accuracy", "f1", "roc_auc", "average_precision", "neg_log_loss"]
    run = run_spec(
        f"seed: 2\ndata: {{path: {path}, target: label}}\npreprocess: {{reduce: {{pca: 3}}}}\n"
        f"classical:\n  models: [LR, CART]\n  metric: accuracy\n  metrics: {metrics}\n"
        "  cv: {scheme: stratified, folds: 3}\n"
        "  search: {space: {LR: {class_weight: [null, balanced], pca__n_components: [2, 4]}}}\n"
    )
    board = _board(run)
    assert board["metrics"] == ["accuracy", *metrics]
    data = load_tabular(DataSpec(path=path, target="label"))
    folds = list(StratifiedKFold(3, shuffle=True, random_state=2).split(data.X, data.y))
    for row in board["rows"]:
        params = {k: v for k, v in row["params"].items() if k != "scaling"}
        plan = zoo.plan(row["model"], "classification", params, "auto", 2, 2, {"pca": 3})
        pipeline = zoo.build_pipeline(plan, "none", Encoding(data.column_types))
        expected = cross_validate(pipeline, data.X, data.y, cv=folds, scoring=["accuracy", *metrics])
        assert row["scores"] == pytest.approx(list(expected["test_accuracy"]), abs=1e-12)
        for m in metrics:
            assert row["metrics"][m]["scores"] == pytest.approx(list(expected[f"test_{m}"]), abs=1e-12), m
    searched = {
        (r["params"].get("class_weight"), r["params"]["pca__n_components"])
        for r in board["rows"]
        if r["stage"] == "improve"
    }
    assert len(searched) == 1 and next(iter(searched))[1] in (2, 4)
    trials = json.loads(run.stage_file("improve").read_text())["trials"]
    assert {(t["params"]["class_weight"], t["params"]["pca__n_components"]) for t in trials} == {
        (None, 2),
        (None, 4),
        ("balanced", 2),
        ("balanced", 4),
    }
