"""Baselines the LSTM is compared with on the same period: a table of name → function(data, sequence_length,
horizon, seed, period) giving the target [sites, period days] in its units, NaN where a baseline has no
prediction.

- climatology: the day-of-year mean of each site's target over the training period.
- classical models of the zoo (trainer/classical/zoo.py), one model for all sites, fitted on the training
  period with lagged forcings as features: each input on the last `LAGS` days, its means over the last `MEANS`
  days (at most the LSTM's sequence length, so every model sees the same history), and the static attributes.
  Their training rows are built once for all of them (`simulate_baselines`), in float32, on the training
  days only (at scale a seeded sample of them: `lstm.baseline_max_rows`); the scored period is predicted a
  block of sites at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np

from mlkube.trainer.lstm.evaluate import observed
from mlkube.trainer.series import TimeSeriesData

LAGS = 7  # days of each dynamic input, the last input day first
MEANS = (30, 90)  # trailing means (days) of each dynamic input


def climatology(
    data: TimeSeriesData, sequence_length: int, horizon: int, seed: int, period: str
) -> np.ndarray:
    """Each site's mean target per day of the year over the training period (the site's mean for a day of the
    year the training period lacks)."""
    lo, hi = data.periods["train"]
    doy = _day_of_year(data.dates)
    target = data.target[:, lo:hi].astype(np.float64)
    seen = np.isfinite(target)
    sums, counts = np.zeros((len(data.sites), 366)), np.zeros((len(data.sites), 366))
    np.add.at(sums.T, doy[lo:hi], np.where(seen, target, 0.0).T)
    np.add.at(counts.T, doy[lo:hi], seen.T)
    with np.errstate(invalid="ignore", divide="ignore"):
        table = np.where(counts > 0, sums / counts, (sums.sum(1) / counts.sum(1))[:, None])
    first, last = _target_days(data, period, horizon)
    return table[:, doy[first:last]]


def regression(
    model: str,
    data: TimeSeriesData,
    sequence_length: int,
    horizon: int,
    seed: int,
    period: str,
    max_rows: int | None = None,
) -> np.ndarray:
    """A zoo regressor on lagged forcings, fitted on the training period's days, predicting `period`'s."""
    return regressions([model], data, sequence_length, horizon, seed, period, max_rows)[model]


BASELINES: dict[str, Callable[..., np.ndarray]] = {
    "climatology": climatology,
    "Ridge": partial(regression, "Ridge"),
    "GBM": partial(regression, "GBM"),
}
REGRESSIONS = ("Ridge", "GBM")  # the baselines fitted on the lagged rows
SITE_BLOCK = 64  # sites whose scored days are predicted at a time


def simulate_baselines(
    names: list[str],
    data: TimeSeriesData,
    sequence_length: int,
    horizon: int,
    seed: int,
    period: str,
    max_rows: int | None = None,
) -> dict[str, np.ndarray]:
    """{name: target [sites, period days]} of the named baselines, in their order; the regressions' training
    rows built once for all of them (`max_rows`: see `training_rows`)."""
    models = [name for name in names if name in REGRESSIONS]
    fitted = regressions(models, data, sequence_length, horizon, seed, period, max_rows) if models else {}
    return {
        name: fitted[name]
        if name in fitted
        else BASELINES[name](data, sequence_length, horizon, seed, period)
        for name in names
    }


def regressions(
    models: list[str],
    data: TimeSeriesData,
    sequence_length: int,
    horizon: int,
    seed: int,
    period: str,
    max_rows: int | None = None,
) -> dict[str, np.ndarray]:
    """The zoo regressors `models`, fitted on the training rows (built once for all of them), each predicting
    `period`'s days, SITE_BLOCK sites at a time: no array of every site's scored days' features is held."""
    from mlkube.trainer.classical import zoo

    x, y = training_rows(data, sequence_length, horizon, seed, max_rows)
    fit = np.isfinite(x).all(axis=1) & np.isfinite(y)
    if not fit.all():
        x, y = x[fit], y[fit]
    pipelines = {}
    for model in models:
        pipelines[model] = zoo.build_pipeline(zoo.plan(model, "regression", {}, "auto", 0, seed)).fit(x, y)
    del x, y
    first, last = _target_days(data, period, horizon)
    out = {model: np.full((len(data.sites), last - first), np.nan) for model in models}
    for block in range(0, len(data.sites), SITE_BLOCK):
        sites = range(block, min(block + SITE_BLOCK, len(data.sites)))
        rows = np.concatenate([site_rows(data, site, sequence_length, horizon, period) for site in sites])
        known = np.isfinite(rows).all(axis=1)
        for model, pipeline in pipelines.items():
            sim = np.full(len(rows), np.nan)
            sim[known] = pipeline.predict(rows[known])
            out[model][sites.start : sites.stop] = sim.reshape(len(sites), -1)
    return out


def training_rows(
    data: TimeSeriesData, sequence_length: int, horizon: int, seed: int, max_rows: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The regressions' training rows, site by site: the float32 features [rows, features] of each training
    day's last input day and its target (float64, as the regressors fit it). With more rows than `max_rows`,
    a sample of `max_rows` of them drawn from `seed` (in site and day order); each site's features are built
    one site at a time, so no array of every site's every day is ever held."""
    first, last = _target_days(data, "train", horizon)
    days = last - first
    target = observed(data, "train", horizon).reshape(-1)
    chosen = None
    if max_rows is not None and target.size > max_rows:
        chosen = np.sort(np.random.default_rng([seed, 17]).choice(target.size, max_rows, replace=False))
        target = target[chosen]
    bounds = np.arange(len(data.sites) + 1) * days  # site s: flat rows [s * days, (s + 1) * days)
    cuts = bounds if chosen is None else np.searchsorted(chosen, bounds)
    first_site = site_rows(data, 0, sequence_length, horizon, "train")  # its width is every site's
    x = np.empty((len(target), first_site.shape[1]), np.float32)
    for site in range(len(data.sites)):
        rows = first_site if site == 0 else site_rows(data, site, sequence_length, horizon, "train")
        lo, hi = cuts[site], cuts[site + 1]
        x[lo:hi] = rows if chosen is None else rows[chosen[lo:hi] - bounds[site]]
    return x, target.astype(np.float64)


def site_rows(data: TimeSeriesData, site: int, sequence_length: int, horizon: int, period: str) -> np.ndarray:
    """One site's float32 features of each target day of `period` (its last input day's)."""
    first, last = _target_days(data, period, horizon)
    features = site_features(data.dynamic[site], data.static[site], sequence_length)
    return features[first - (horizon - 1) : last - (horizon - 1)].astype(np.float32)


def site_features(dynamic: np.ndarray, static: np.ndarray, sequence_length: int) -> np.ndarray:
    """[days, features] of one site for each input day: every dynamic input on the last LAGS days and averaged
    over the last MEANS days (NaN where that history holds a gap or starts before the data), then the static
    attributes; float64."""
    dynamic = dynamic.astype(np.float64)
    days = len(dynamic)
    columns = [_shifted(dynamic, lag) for lag in range(min(LAGS, sequence_length))]
    finite = np.isfinite(dynamic)
    total = _cumulative(np.where(finite, dynamic, 0.0))
    count = _cumulative(finite.astype(np.float64))
    for window in sorted({min(w, sequence_length) for w in MEANS}):
        n = count[window:] - count[:-window]
        mean = np.full_like(dynamic, np.nan)
        mean[window - 1 :] = np.where(n == window, (total[window:] - total[:-window]) / window, np.nan)
        columns.append(mean)
    columns.append(np.broadcast_to(static.astype(np.float64), (days, len(static))))
    return np.concatenate(columns, axis=1)


def _shifted(values: np.ndarray, lag: int) -> np.ndarray:
    out = np.full_like(values, np.nan)
    out[lag:] = values[: len(values) - lag]
    return out


def _cumulative(values: np.ndarray) -> np.ndarray:
    """Cumulative sums over days with a leading zero day: [days + 1, variables]."""
    return np.concatenate([np.zeros_like(values[:1]), values.cumsum(axis=0)], axis=0)


def _target_days(data: TimeSeriesData, period: str, horizon: int) -> tuple[int, int]:
    lo, hi = data.periods[period]
    return max(lo, horizon - 1), hi


def _day_of_year(dates: np.ndarray) -> np.ndarray:
    """0-based day of the year of each date (0..365)."""
    return (dates.astype("datetime64[D]") - dates.astype("datetime64[Y]").astype("datetime64[D]")).astype(
        np.int64
    )
