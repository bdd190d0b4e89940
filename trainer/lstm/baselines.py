"""Baselines the LSTM is compared with on the same period: a table of name → function(data, sequence_length,
horizon, seed, period) giving the target [sites, period days] in its units, NaN where a baseline has no
prediction.

- climatology: the day-of-year mean of each site's target over the training period.
- classical models of the zoo (trainer/classical/zoo.py), one model for all sites, fitted on the training
  period with lagged forcings as features: each input on the last `LAGS` days, its means over the last `MEANS`
  days (at most the LSTM's sequence length, so every model sees the same history), and the static attributes.
  Their rows are built once for all of them (`simulate_baselines`), in float32, on the training period's and
  the scored period's days only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
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
    rows: LaggedRows | None = None,
) -> np.ndarray:
    """A zoo regressor on lagged forcings, fitted on the training period's days, predicting `period`'s
    (`rows`: the lagged rows built once for every regression baseline; built here when not given)."""
    from mlkube.trainer.classical import zoo

    if rows is None:
        rows = lagged_rows(data, sequence_length, horizon, period)
    fit = np.isfinite(rows.x_train).all(axis=1) & np.isfinite(rows.y_train)
    pipeline = zoo.build_pipeline(zoo.plan(model, "regression", {}, "auto", 0, seed))
    pipeline.fit(*((rows.x_train, rows.y_train) if fit.all() else (rows.x_train[fit], rows.y_train[fit])))
    known = np.isfinite(rows.x_period).all(axis=1)
    sim = np.full(len(rows.x_period), np.nan)
    sim[known] = pipeline.predict(rows.x_period[known])
    return sim.reshape(len(data.sites), -1)


BASELINES: dict[str, Callable[..., np.ndarray]] = {
    "climatology": climatology,
    "Ridge": partial(regression, "Ridge"),
    "GBM": partial(regression, "GBM"),
}
REGRESSIONS = ("Ridge", "GBM")  # the baselines that take the lagged rows


def simulate_baselines(
    names: list[str], data: TimeSeriesData, sequence_length: int, horizon: int, seed: int, period: str
) -> dict[str, np.ndarray]:
    """{name: target [sites, period days]} of the named baselines; the lagged rows built once for all."""
    needed = any(name in REGRESSIONS for name in names)
    rows = lagged_rows(data, sequence_length, horizon, period) if needed else None
    out = {}
    for name in names:
        shared = {"rows": rows} if name in REGRESSIONS else {}
        out[name] = BASELINES[name](data, sequence_length, horizon, seed, period, **shared)
    return out


@dataclass(frozen=True)
class LaggedRows:
    """The regression baselines' rows, float32, on the days they use only: the features of each training
    day's and each `period` day's last input day ([rows, features], site by site), and the training target."""

    x_train: np.ndarray
    y_train: np.ndarray  # float64, as the regressors fit it
    x_period: np.ndarray


def lagged_rows(data: TimeSeriesData, sequence_length: int, horizon: int, period: str) -> LaggedRows:
    """The rows of the training period and of `period`, built one site at a time (each site's features in
    float64, as `site_features`), so that no array of every site's every day is ever held."""
    spans = [_target_days(data, name, horizon) for name in ("train", period)]
    windows = sorted({min(w, sequence_length) for w in MEANS})
    width = data.dynamic.shape[2] * (min(LAGS, sequence_length) + len(windows)) + data.static.shape[1]
    x = [np.empty((len(data.sites), last - first, width), np.float32) for first, last in spans]
    for site in range(len(data.sites)):
        features = site_features(data.dynamic[site], data.static[site], sequence_length)
        for rows, (first, last) in zip(x, spans, strict=True):
            rows[site] = features[first - (horizon - 1) : last - (horizon - 1)]
    y_train = observed(data, "train", horizon).reshape(-1).astype(np.float64)
    return LaggedRows(x[0].reshape(-1, width), y_train, x[1].reshape(-1, width))


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
