"""Cross-validation over sites (`lstm.cv`, stage basin_cv): prediction in ungauged basins.

Each fold is a training of its own: the deep stage's configuration on the other folds' sites, standardised
with statistics of those sites alone (as neuralhydrology does: a held-out basin's forcings, attributes and
flow never reach the statistics), then scored on its held-out sites' test period. Every site is held out by
exactly one fold, so the pooled scores cover each site once, beside the same sites trained gauged (the deep
stage's model). Each fold records the sites it trained on and held out, and the statistics fitted on the
former, in `basin_cv/fold-<k>/fold.json`, before it trains; its model (`basin_cv/fold-<k>/model.json`,
model.pt, training.json) carries the statistics it trained with, which scoring checks against the record.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mlkube.trainer.errors import MlkubeError
from mlkube.trainer.lstm.jobs import STORAGE, Job, run_jobs
from mlkube.trainer.lstm.prepared import Prepared, load_prepared, select_sites
from mlkube.trainer.run import atomic_write_json, atomic_write_text, read_json

if TYPE_CHECKING:
    from mlkube.trainer.preprocess import Statistics
    from mlkube.trainer.series import TimeSeriesData
    from mlkube.trainer.spec import BasinCVSpec, Spec

STAGE = "basin_cv"
FOLD_RECORD = "fold.json"
PERIOD = "test"
FIGURE = "basin_cv_nse_cdf.png"


@dataclass(frozen=True)
class BasinFold:
    """One fold: the sites it trains on and the sites it holds out (never among the former)."""

    index: int  # 0-based
    train_sites: tuple[str, ...]
    test_sites: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "fold": self.index,
            "train_sites": list(self.train_sites),
            "test_sites": list(self.test_sites),
        }


def basin_folds(
    cv: BasinCVSpec, sites: tuple[str, ...], groups: list[str] | None, seed: int
) -> list[BasinFold]:
    """The folds of scikit-learn's KFold over the sites (kfold) or GroupKFold over their groups (group)."""
    from sklearn.model_selection import GroupKFold, KFold

    index = np.arange(len(sites))
    shuffle = {"shuffle": cv.shuffle, "random_state": seed if cv.shuffle else None}
    if cv.scheme == "group":
        assert groups is not None  # site_groups gives them under scheme group
        splits = GroupKFold(fold_count(cv, sites, groups), **shuffle).split(index, groups=groups)
    else:
        splits = KFold(fold_count(cv, sites, groups), **shuffle).split(index)
    return [
        BasinFold(k, tuple(sites[i] for i in train), tuple(sites[i] for i in test))
        for k, (train, test) in enumerate(splits)
    ]


def fold_count(cv: BasinCVSpec, sites: tuple[str, ...], groups: list[str] | None) -> int:
    """`cv.folds`, or one fold per site (kfold) or per group (group)."""
    units = len(set(groups)) if cv.scheme == "group" and groups is not None else len(sites)
    return cv.folds or units


def site_groups(spec: Spec, sites: tuple[str, ...]) -> list[str] | None:
    """Each site's group under scheme group (a static attribute of the source, or the spec's mapping), as
    text; None under kfold."""
    assert spec.lstm is not None and spec.lstm.cv is not None
    cv = spec.lstm.cv
    if cv.scheme != "group":
        return None
    if isinstance(cv.groups, dict):
        missing = [s for s in sites if s not in cv.groups]
        if missing:
            raise MlkubeError(
                f"lstm.cv.groups: no group for site(s) {missing[:5]}",
                "map every site of lstm.data to a group, or name a static attribute (e.g. huc_02)",
            )
        return [str(cv.groups[s]) for s in sites]
    from mlkube.trainer.series.load import open_source

    attributes = open_source(spec.lstm.data, spec.seed).attributes
    if cv.groups not in attributes.columns:
        raise MlkubeError(
            f"lstm.cv.groups: the data set has no attribute {cv.groups!r}",
            f"name one of its attributes ({', '.join(map(str, attributes.columns[:12]))}, ...) or map "
            "each site to a group",
        )
    values = attributes[cv.groups].reindex(list(sites))
    if values.isna().any():
        raise MlkubeError(
            f"lstm.cv.groups: attribute {cv.groups!r} is missing for site(s) "
            f"{list(values[values.isna()].index[:5])}",
            "name an attribute every site has, or map each site to a group",
        )
    return [str(v) for v in values]


def check_cv(spec: Spec, sites: tuple[str, ...]) -> list[BasinFold]:
    """The folds of `spec.lstm.cv` over `sites`, or MlkubeError naming the setting that cannot work."""
    assert spec.lstm is not None and spec.lstm.cv is not None
    cv = spec.lstm.cv
    if spec.preprocess.normalization == "per_site":
        raise MlkubeError(
            "lstm.cv: preprocess.normalization per_site standardises each site with its own statistics, "
            "which a held-out (ungauged) basin must not have",
            "use preprocess.normalization: global with lstm.cv",
        )
    groups = site_groups(spec, sites)
    units = f"{len(set(groups))} groups" if groups is not None else f"{len(sites)} sites"
    k = fold_count(cv, sites, groups)
    if k < 2:
        raise MlkubeError(
            f"lstm.cv: the data hold {units}: cross-validation over sites needs at least 2",
            "add sites to lstm.data (or groups), or remove lstm.cv",
        )
    if k > int(units.split()[0]):
        raise MlkubeError(
            f"lstm.cv.folds ({k}) exceeds the {units} of lstm.data: every fold must hold one out",
            f"set folds to at most {units.split()[0]} (or leave it out: one fold per "
            f"{'group' if groups is not None else 'site'})",
        )
    return basin_folds(cv, sites, groups, spec.seed)


def statistics_for(stats: Statistics, n_sites: int) -> Statistics:
    """Global statistics (one row repeated) with a row for each of `n_sites` other sites: how held-out sites
    are standardised with a fold's statistics. Their loss weights stay undefined (NaN): they never train."""
    if stats.normalization != "global":
        raise ValueError("only global statistics apply to sites they were not fitted on")
    rows = np.zeros(n_sites, dtype=int)
    return dataclasses.replace(
        stats,
        dynamic_mean=stats.dynamic_mean[rows],
        dynamic_std=stats.dynamic_std[rows],
        target_mean=stats.target_mean[rows],
        target_std=stats.target_std[rows],
        target_site_std=np.full(n_sites, np.nan),
    )


def simulate_held_out(net: Any, stats: Statistics, data: TimeSeriesData, lstm, period: str) -> np.ndarray:
    """The target [held-out sites, period days] of a fold's network on sites it never saw, standardised
    with the fold's (training sites') statistics."""
    from mlkube.trainer.lstm.evaluate import simulate
    from mlkube.trainer.preprocess import standardize

    held_out = statistics_for(stats, len(data.sites))
    return simulate(net, standardize(data, held_out), held_out, period, lstm.sequence_length, lstm.horizon)


# ------------------------------------------------------------------------------------------------ the stage
def basin_cv(ctx) -> None:
    """Train every fold (Ray Tune trials, side by side), score each on its held-out sites, pool the scores and
    set them beside the deep stage's (gauged) scores of the same sites: stages/basin_cv.json,
    basin_cv_scores.csv and figures/basin_cv_nse_cdf.png."""
    from mlkube.trainer.lstm.search import site_subset

    spec, run = configured_spec(ctx), ctx.run
    assert spec.lstm is not None and spec.lstm.cv is not None  # the stage runs only then
    prepared = load_prepared(spec, run.path)
    folds = check_cv(spec, prepared.data.sites)
    fitted = {f.index: site_subset(prepared, f.train_sites, spec.preprocess).stats for f in folds}
    for fold in folds:  # what each fold trains on and holds out, written before it trains
        record = {**fold.to_json(), "statistics": fitted[fold.index].to_json()}
        atomic_write_json(run.basin_fold(fold.index) / FOLD_RECORD, record)
    jobs = [Job(f"fold-{f.index}", spec.seed, run.basin_fold(f.index), f.train_sites) for f in folds]
    start = time.perf_counter()
    run_jobs(
        STAGE, jobs, spec, prepared, run.path / STAGE / STORAGE, ctx.progress, spec.lstm.cv.max_concurrent
    )
    trained = time.perf_counter()
    results = [
        fold_scores(fold, job, fitted[fold.index], prepared, spec.lstm)
        for fold, job in zip(folds, jobs, strict=True)
    ]
    pooled = pool(results, prepared.data.sites)
    gauged = gauged_scores(run, spec, prepared.data.sites)
    write_scores(run.basin_cv_scores_file, results, gauged)
    figure = draw(run, pooled, gauged, len(folds))
    result = {
        "scheme": spec.lstm.cv.scheme,
        "period": PERIOD,
        "folds": results,
        "pooled": pooled,
        "gauged": gauged,
        "scores": run.relative(run.basin_cv_scores_file),
        "figures": {"nse_cdf": figure},
        "seconds": {
            "training": round(trained - start, 3),
            "evaluation": round(time.perf_counter() - trained, 3),
        },
    }
    atomic_write_json(run.stage_file(STAGE), result)
    ctx.progress.say(
        f"{STAGE}: median NSE over held-out sites {_fmt(pooled['median']['nse'])} "
        f"(gauged: {_fmt(gauged['median']['nse'])}), {len(folds)} folds"
    )


def configured_spec(ctx):
    """The spec whose configuration the folds train: the search's best where the run searched."""
    from mlkube.trainer.lstm.overrides import best_spec

    return best_spec(ctx.spec, ctx.run.path)[0]


def fold_scores(fold: BasinFold, job: Job, stats: Statistics, prepared: Prepared, lstm) -> dict[str, Any]:
    """A fold's scores on its held-out sites' test period; its model must carry the statistics fitted on its
    training sites (anything else would mean the held-out sites leaked in, or the wrong data trained)."""
    from mlkube.trainer.lstm.ensemble import load_lstm_members
    from mlkube.trainer.lstm.evaluate import score
    from mlkube.trainer.lstm.scores import json_safe

    (net,), card = load_lstm_members(job.folder)
    expected = {k: v for k, v in stats.to_json().items() if k != "log_target"}
    if any(getattr(card.preprocessing, k) != v for k, v in expected.items()):
        raise MlkubeError(
            f"{job.folder}: its model's statistics differ from those of its training sites",
            f"remove {job.folder} and resume the run: the fold trains again",
        )
    held_out = select_sites(prepared.data, fold.test_sites)
    scores = score(simulate_held_out(net, stats, held_out, lstm, PERIOD), held_out, PERIOD, lstm.horizon)
    return {**fold.to_json(), "model": str(job.folder.name), **scores, "sites": json_safe(scores["sites"])}


def pool(results: list[dict[str, Any]], sites: tuple[str, ...]) -> dict[str, Any]:
    """Every site's scores from the fold that held it out, in the data's site order, with their medians and
    means (each site counts once)."""
    from mlkube.trainer.lstm.scores import summarize

    by_site = {site: row for r in results for site, row in r["sites"].items()}
    fold_of = {site: r["fold"] for r in results for site in r["test_sites"]}
    pooled = {site: by_site[site] for site in sites}
    return {"sites": pooled, "fold_of": {s: fold_of[s] for s in sites}, **summarize(pooled)}


def gauged_scores(run, spec, sites: tuple[str, ...]) -> dict[str, Any]:
    """The same sites' test scores trained gauged: the deep stage's model of the same seed (its single model,
    or under an ensemble the member with the run's seed), from stages/deep.json."""
    from mlkube.trainer.lstm.ensemble import member_name
    from mlkube.trainer.lstm.scores import summarize

    deep = read_json(run.stage_file("deep"))
    name = "lstm" if spec.lstm.ensemble == 1 else member_name(spec.seed)
    scores = {site: deep["models"][name]["sites"][site] for site in sites}
    return {"model": name, "sites": scores, **summarize(scores)}


def write_scores(path, results: list[dict[str, Any]], gauged: dict[str, Any]) -> None:
    """basin_cv_scores.csv: setting (ungauged: the fold that held the site out; gauged: the deep stage's
    model), fold, site, then every metric (empty where undefined)."""
    import csv
    import io

    from mlkube.trainer.lstm.scores import METRICS

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["setting", "fold", "site", *METRICS])
    rows = [("ungauged", r["fold"], site, row) for r in results for site, row in r["sites"].items()]
    rows += [("gauged", "", site, row) for site, row in gauged["sites"].items()]
    for setting, fold, site, row in rows:
        writer.writerow([setting, fold, site, *("" if row[k] is None else repr(row[k]) for k in METRICS)])
    atomic_write_text(path, buffer.getvalue())


def draw(run, pooled: dict[str, Any], gauged: dict[str, Any], folds: int) -> str:
    """figures/basin_cv_nse_cdf.png: NSE over the sites, held out (ungauged) and trained gauged."""
    from mlkube.trainer.lstm.figures import nse_cdf

    path = nse_cdf(
        {
            f"ungauged, {folds} folds": [row["nse"] for row in pooled["sites"].values()],
            f"gauged, {gauged['model']}": [row["nse"] for row in gauged["sites"].values()],
        },
        run.figures / FIGURE,
    )
    return run.relative(path)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
