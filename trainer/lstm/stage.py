"""The deep stage: train the LSTM (the caller's launcher runs the workers), score it beside the baselines on
the test period, draw the figures, and write `stages/deep.json`."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mlkube.trainer.errors import MlkubeError
from mlkube.trainer.lstm.baselines import simulate_baselines
from mlkube.trainer.lstm.elastic import TRAINING_RECORD
from mlkube.trainer.lstm.evaluate import observed, score
from mlkube.trainer.lstm.prepared import Prepared, load_prepared
from mlkube.trainer.run import LSTM_MODEL, atomic_write_json, atomic_write_text, read_json

PERIOD = "test"
FIGURES = {"training": "lstm_training.png", "hydrographs": "hydrographs.png", "nse_cdf": "nse_cdf.png"}


def deep(ctx, train: Callable[[], None]) -> None:
    """Train (or resume) the LSTM with `train` (the launcher of the place it runs: torchrun on this machine),
    then compare it with the baselines; see the module docstring."""
    from mlkube.trainer.lstm.overrides import best_spec

    run = ctx.run
    spec = best_spec(ctx.spec, run.path)[0]  # with lstm.search: the best trial's settings, as the workers
    lstm = spec.lstm
    check_training(lstm, load_prepared(spec, run.path))
    start = time.perf_counter()
    train()  # the data is the workers' meanwhile: this process holds none of it while they train
    trained = time.perf_counter()
    prepared = load_prepared(spec, run.path)
    simulations = simulate_all(spec, prepared, run.model_dir(LSTM_MODEL))
    models = {name: _scores(sim, prepared, lstm.horizon) for name, sim in simulations.items()}
    record = read_json(run.model_dir(LSTM_MODEL) / TRAINING_RECORD)
    figures = draw(run, prepared, simulations, models, record["history"], lstm.horizon)
    write_basin_scores(run.basin_scores_file, models)
    result = {
        "period": PERIOD,
        "dates": [str(d) for d in prepared.data.period_dates(PERIOD)],
        "target": prepared.data.target_name,
        "sites": list(prepared.data.sites),
        "models": models,
        "ranking": ranking(models),
        "training": record,
        "artifact": run.relative(run.model_dir(LSTM_MODEL)),
        "basin_scores": run.relative(run.basin_scores_file),
        "figures": figures,
        "seconds": {
            "training": round(trained - start, 3),
            "evaluation": round(time.perf_counter() - trained, 3),
        },
    }
    atomic_write_json(run.stage_file("deep"), result)
    ctx.progress.say(
        "test median NSE: " + ", ".join(f"{r['model']} {_fmt(r['median_nse'])}" for r in result["ranking"])
    )


def check_training(lstm, prepared: Prepared) -> None:
    """User errors that would otherwise fail every torchrun worker: no training window, batch smaller than the
    workers, more workers than GPUs."""
    from mlkube.trainer.preprocess import BatchSampler

    BatchSampler(
        prepared.data, lstm.sequence_length, 0, horizon=lstm.horizon, warmup_days=lstm.train.warmup_days
    )
    gpus = gpu_count()
    if 0 < gpus < lstm.elastic.nproc_per_node:
        raise MlkubeError(
            f"lstm.elastic.nproc_per_node ({lstm.elastic.nproc_per_node}) exceeds the {gpus} GPU(s) of "
            "this machine: each worker trains on a GPU of its own",
            f"set nproc_per_node: {gpus}",
        )
    workers = lstm.elastic.nproc_per_node * lstm.elastic.max_nodes
    if lstm.train.batch_size < workers:
        raise MlkubeError(
            f"lstm.train.batch_size ({lstm.train.batch_size}) is smaller than the number of workers "
            f"({workers} = nproc_per_node × max_nodes): some would get no sequence",
            f"raise batch_size to at least {workers}, or lower nproc_per_node",
        )
    from mlkube.trainer.lstm.overrides import search_extremes

    for overrides, hardest in search_extremes(lstm):  # what a trial, then the deep stage, may train with
        try:
            check_training(hardest, prepared)
        except MlkubeError as err:
            raise MlkubeError(
                f"lstm.search.space allows {overrides}, and then: {err.message}", err.fix
            ) from None


def gpu_count() -> int:
    """The GPUs torch sees. Without a GPU driver (NVIDIA's /proc/driver/nvidia, ROCm's /dev/kfd) there are
    none, and torch is not imported: its import took 3 s of the start-up before torchrun here."""
    if not (Path("/proc/driver/nvidia").exists() or Path("/dev/kfd").exists()):
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def simulate_all(spec, prepared: Prepared, artifact) -> dict[str, np.ndarray]:
    """The test-period target [sites, days] of the trained LSTM (an ensemble's mean, and each member's under
    its own name) and of the spec's baselines."""
    from mlkube.trainer.lstm.ensemble import simulate_members

    lstm = spec.lstm
    out = simulate_members(artifact, prepared, lstm, PERIOD)
    return out | simulate_baselines(
        lstm.baselines,
        prepared.data,
        lstm.sequence_length,
        lstm.horizon,
        spec.seed,
        PERIOD,
        lstm.baseline_max_rows,
    )


def _scores(sim: np.ndarray, prepared: Prepared, horizon: int) -> dict[str, Any]:
    from mlkube.trainer.lstm.scores import json_safe

    scores = score(sim, prepared.data, PERIOD, horizon)
    return {**scores, "sites": json_safe(scores["sites"])}


def ranking(models: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Models by median test NSE, best first (undefined last)."""
    rows = [
        {
            "model": name,
            "median_nse": m["median"]["nse"],
            "mean_nse": m["mean"]["nse"],
            "median_kge": m["median"]["kge"],
            "medians": m["median"],  # every metric of scores.METRICS
        }
        for name, m in models.items()
    ]
    return sorted(rows, key=lambda r: -np.inf if r["median_nse"] is None else -r["median_nse"])


def write_basin_scores(path, models: dict[str, dict[str, Any]]) -> None:
    """basin_scores.csv: model, site, then every metric (empty where a site has no score)."""
    import csv
    import io

    from mlkube.trainer.lstm.scores import METRICS

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["model", "site", *METRICS])
    for name, m in models.items():
        for site, row in m["sites"].items():
            writer.writerow([name, site, *("" if row[k] is None else repr(row[k]) for k in METRICS)])
    atomic_write_text(path, buffer.getvalue())


def draw(
    run,
    prepared: Prepared,
    simulations: dict[str, np.ndarray],
    models: dict[str, dict[str, Any]],
    history: list[dict[str, Any]],
    horizon: int,
) -> dict[str, str]:
    """figures/lstm_training.png, figures/hydrographs.png (best, median and worst site by LSTM NSE) and
    figures/nse_cdf.png (the distribution of NSE over the sites, per model)."""
    from mlkube.trainer.lstm.figures import hydrographs, nse_cdf, training_curves

    lstm_scores = models["lstm"]

    data = prepared.data
    lo, hi = data.periods[PERIOD]
    training_curves(history, run.figures / FIGURES["training"])
    shown = {"LSTM": simulations["lstm"]}
    if "climatology" in simulations:  # a baseline the spec may skip
        shown["climatology"] = simulations["climatology"]
    hydrographs(
        data.dates[max(lo, horizon - 1) : hi],
        observed(data, PERIOD, horizon),
        shown,
        chosen_sites(data.sites, lstm_scores["sites"]),
        data.target_name,
        run.figures / FIGURES["hydrographs"],
    )
    nse_cdf(
        {name: [row["nse"] for row in m["sites"].values()] for name, m in models.items()},
        run.figures / FIGURES["nse_cdf"],
    )
    return {name: run.relative(run.figures / file) for name, file in FIGURES.items()}


def chosen_sites(sites: tuple[str, ...], scores: dict[str, dict[str, float | None]]) -> dict[str, tuple]:
    """{"best" | "median" | "worst": (index, site, NSE)} by LSTM NSE (sites without one come last)."""

    def rank(i: int) -> float:
        nse = scores[sites[i]]["nse"]
        return -np.inf if nse is None else -nse

    order = sorted(range(len(sites)), key=rank)
    picks: dict[str, int] = {}
    for label, i in (("best", order[0]), ("median", order[(len(order) - 1) // 2]), ("worst", order[-1])):
        if i not in picks.values():
            picks[label] = i
    return {label: (i, sites[i], scores[sites[i]]["nse"]) for label, i in picks.items()}


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
