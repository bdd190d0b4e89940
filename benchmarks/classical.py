"""mlkube's Ray Tune grid search vs scikit-learn's GridSearchCV(n_jobs=-1), same grid, same folds, same
machine.

    python benchmarks/classical.py [--rows 20000] [--folds 5]

Prints wall times and their ratio (target: mlkube ≤ 1.15× GridSearchCV; with ASHA the goal is < 1×), the
largest score difference between the two (must be ≤ 1e-9), and the per-trial scheduling overhead measured with
trivial trials.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

C_VALUES = [0.03, 0.1, 0.3, 1, 3, 10, 30, 100]
GAMMA_VALUES = [0.003, 0.01, 0.03, 0.1, 0.3]


def data(rows: int, folds: int):
    from sklearn.datasets import make_classification
    from sklearn.model_selection import StratifiedKFold

    X, y = make_classification(n_samples=rows, n_features=20, n_informative=8, flip_y=0.05, random_state=0)
    splits = list(StratifiedKFold(folds, shuffle=True, random_state=0).split(X, y))
    return X, y, splits


def sklearn_grid(X, y, splits):
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    grid = GridSearchCV(
        make_pipeline(StandardScaler(), SVC(random_state=0)),
        {"svc__C": C_VALUES, "svc__gamma": GAMMA_VALUES},
        cv=splits,
        n_jobs=-1,
    )
    start = time.perf_counter()
    grid.fit(X, y)
    wall = time.perf_counter() - start
    scores = {
        (p["svc__C"], p["svc__gamma"]): [
            grid.cv_results_[f"split{k}_test_score"][i] for k in range(len(splits))
        ]
        for i, p in enumerate(grid.cv_results_["params"])
    }
    return wall, scores


def mlkube_grid(X, y, splits, scheduler: str, model: str = "SVM", space=None):
    from ray import tune

    from mlkube.trainer.classical.search import SearchSettings, Step, TrialData, run_trials
    from mlkube.trainer.progress import Progress

    steps = [Step(str(i), tr, te) for i, (tr, te) in enumerate(splits)]
    trial_data = TrialData(
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
    space = (
        space
        if space is not None
        else {"C": tune.grid_search(C_VALUES), "gamma": tune.grid_search(GAMMA_VALUES)}
    )
    settings = SearchSettings(scheduler=scheduler, grace_folds=1)
    start = time.perf_counter()
    rows = run_trials(
        f"bench-{scheduler}", {"model": model, "params": space}, trial_data, settings, Progress(quiet=True)
    )
    return time.perf_counter() - start, rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args()
    import ray
    from ray import tune

    X, y, splits = data(args.rows, args.folds)
    n_configs = len(C_VALUES) * len(GAMMA_VALUES)
    print(
        f"grid: SVM C×gamma = {n_configs} configs × {args.folds} folds on {args.rows} rows, "
        f"{os.cpu_count()} CPUs"
    )
    start = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    print(f"ray.init: {time.perf_counter() - start:.1f} s (once per run, not counted below)")

    sk_wall, sk_scores = sklearn_grid(X, y, splits)
    ml_wall, rows = mlkube_grid(X, y, splits, "none")
    asha_wall, asha_rows = mlkube_grid(X, y, splits, "asha")
    diff = max(
        abs(a - b)
        for r in rows
        for a, b in zip(r["scores"], sk_scores[(r["params"]["C"], r["params"]["gamma"])], strict=False)
    )
    best_sk = max(sk_scores.items(), key=lambda kv: np.mean(kv[1]))[0]
    best_asha = max((r for r in asha_rows if r["status"] == "ok"), key=lambda r: r["mean"])
    stopped = sum(r["status"] == "early_stopped" for r in asha_rows)

    trivial_wall, trivial = mlkube_grid(
        X[:200],
        y[:200],
        data(200, args.folds)[2],
        "none",
        model="NB",
        space={"var_smoothing": tune.grid_search(list(np.logspace(-12, -6, n_configs)))},
    )
    compute = sum(r["fit_time"] * len(r["scores"]) for r in trivial)
    overhead_ms = (trivial_wall - compute / os.cpu_count()) / len(trivial) * 1000 * os.cpu_count()

    print(f"GridSearchCV(n_jobs=-1):   {sk_wall:8.1f} s")
    print(f"mlkube (Ray Tune, grid):   {ml_wall:8.1f} s   ratio {ml_wall / sk_wall:.2f}× (target ≤ 1.15×)")
    print(
        f"mlkube (grid + ASHA):      {asha_wall:8.1f} s   ratio {asha_wall / sk_wall:.2f}×, "
        f"{stopped}/{n_configs} trials stopped early"
    )
    print(
        f"best config: GridSearchCV C={best_sk[0]} gamma={best_sk[1]}; ASHA C={best_asha['params']['C']} "
        f"gamma={best_asha['params']['gamma']}"
    )
    print(f"largest |score difference| vs GridSearchCV: {diff:.2e} (must be ≤ 1e-9)")
    print(
        f"per-trial scheduling overhead: {overhead_ms:.0f} ms "
        f"({n_configs} trivial trials in {trivial_wall:.1f} s)"
    )
    ray.shutdown()


if __name__ == "__main__":
    main()
