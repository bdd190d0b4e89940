"""Baselines the LSTM is compared with on the same period: a table of name → function(data, sequence_length,
horizon, seed, period) giving the target [sites, period days] in its units, NaN where a baseline has no
prediction.

- climatology: the day-of-year mean of each site's target over the training period.
- classical models of the zoo (trainer/classical/zoo.py), one model for all sites, fitted on the training
  period with lagged forcings as features: each input on the last `LAGS` days, its means over the last `MEANS`
  days (at most the LSTM's sequence length, so every model sees the same history), and the static attributes.
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
    model: str, data: TimeSeriesData, sequence_length: int, horizon: int, seed: int, period: str
) -> np.ndarray:
    """A zoo regressor on lagged forcings, fitted on the training period's days, predicting `period`'s."""
    from mlkube.trainer.classical import zoo

    features = lagged_features(data, sequence_length)
    x_train, y_train = _rows(features, data, "train", horizon)
    fit = np.isfinite(x_train).all(axis=1) & np.isfinite(y_train)
    pipeline = zoo.build_pipeline(zoo.plan(model, "regression", {}, "auto", 0, seed))
    pipeline.fit(x_train[fit], y_train[fit])
    x, _ = _rows(features, data, period, horizon)
    known = np.isfinite(x).all(axis=1)
    sim = np.full(len(x), np.nan)
    sim[known] = pipeline.predict(x[known])
    return sim.reshape(len(data.sites), -1)


BASELINES: dict[str, Callable[..., np.ndarray]] = {
    "climatology": climatology,
    "Ridge": partial(regression, "Ridge"),
    "GBM": partial(regression, "GBM"),
}


def lagged_features(data: TimeSeriesData, sequence_length: int) -> np.ndarray:
    """[sites, days, features] for each input day: every dynamic input on the last LAGS days and averaged over
    the last MEANS days (NaN where that history holds a gap or starts before the data), then the static
    attributes."""
    dynamic = data.dynamic.astype(np.float64)
    sites, days, _ = dynamic.shape
    columns = [_shifted(dynamic, lag) for lag in range(min(LAGS, sequence_length))]
    finite = np.isfinite(dynamic)
    total = _cumulative(np.where(finite, dynamic, 0.0))
    count = _cumulative(finite.astype(np.float64))
    for window in sorted({min(w, sequence_length) for w in MEANS}):
        n = count[:, window:] - count[:, :-window]
        mean = np.full_like(dynamic, np.nan)
        mean[:, window - 1 :] = np.where(
            n == window, (total[:, window:] - total[:, :-window]) / window, np.nan
        )
        columns.append(mean)
    columns.append(np.broadcast_to(data.static[:, None, :], (sites, days, data.static.shape[1])))
    return np.concatenate(columns, axis=2).astype(np.float32)


def _shifted(values: np.ndarray, lag: int) -> np.ndarray:
    out = np.full_like(values, np.nan)
    out[:, lag:] = values[:, : values.shape[1] - lag]
    return out


def _cumulative(values: np.ndarray) -> np.ndarray:
    """Cumulative sums over days with a leading zero day: [sites, days + 1, variables]."""
    return np.concatenate([np.zeros_like(values[:, :1]), values.cumsum(axis=1)], axis=1)


def _rows(
    features: np.ndarray, data: TimeSeriesData, period: str, horizon: int
) -> tuple[np.ndarray, np.ndarray]:
    """(features of each target day's last input day, target) for `period`, flattened site by site."""
    first, last = _target_days(data, period, horizon)
    x = features[:, first - (horizon - 1) : last - (horizon - 1)]
    return x.reshape(-1, x.shape[2]), observed(data, period, horizon).reshape(-1).astype(np.float64)


def _target_days(data: TimeSeriesData, period: str, horizon: int) -> tuple[int, int]:
    lo, hi = data.periods[period]
    return max(lo, horizon - 1), hi


def _day_of_year(dates: np.ndarray) -> np.ndarray:
    """0-based day of the year of each date (0..365)."""
    return (dates.astype("datetime64[D]") - dates.astype("datetime64[Y]").astype("datetime64[D]")).astype(
        np.int64
    )
