"""Plain NumPy references of every kernel: whole-array operations, no Numba.

The tests check both twins against these, and the benchmark measures the kernels against them. Same names and
signatures as `cpu.py`; arrays are `[sites, days, variables]`.
"""

from __future__ import annotations

import numpy as np

from mlkube.trainer.preprocess.bodies import LOG_OFFSET


def site_moments(values, lo, hi):
    """Per (site, variable) over days [lo, hi): finite count, mean and sum of squared deviations (float64)."""
    part = values[:, lo:hi].astype(np.float64)
    finite = ~np.isnan(part)
    count = finite.sum(axis=1)
    total = np.where(finite, part, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / count, np.nan)
    m2 = np.where(finite, (part - mean[:, None]) ** 2, 0.0).sum(axis=1)
    return count, mean, m2


def scale(values, mean, std, log, inverse):
    """Standardise (or with `inverse` de-standardise) values with per (site, variable) mean and std."""
    x = values.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        if inverse:
            x = x * std[:, None] + mean[:, None]
            return (np.exp(x) - LOG_OFFSET if log else x).astype(values.dtype)
        if log:
            x = np.where(x + LOG_OFFSET > 0, np.log(np.maximum(x + LOG_OFFSET, 0)), np.nan)
        return ((x - mean[:, None]) / std[:, None]).astype(values.dtype)


def fill_gaps(values, max_gap):
    """A copy of values with NaN runs of at most `max_gap` days between finite days linearly interpolated."""
    finite = ~np.isnan(values)
    day = np.arange(values.shape[1])[None, :, None]
    before = np.maximum.accumulate(np.where(finite, day, -1), axis=1)  # last finite day at or before each day
    after = np.flip(
        np.minimum.accumulate(np.flip(np.where(finite, day, values.shape[1]), axis=1), axis=1), axis=1
    )
    fill = ~finite & (before >= 0) & (after < values.shape[1]) & (after - before - 1 <= max_gap)
    x0 = np.take_along_axis(values, np.clip(before, 0, None), axis=1).astype(np.float64)
    x1 = np.take_along_axis(values, np.clip(after, None, values.shape[1] - 1), axis=1).astype(np.float64)
    with np.errstate(invalid="ignore"):  # 0/0 where no gap is filled
        slope = (x1 - x0) / (after - before)
    return np.where(fill, slope * (day - before) + x0, values).astype(values.dtype)


def window_validity(dynamic, target, first, starts, length, shift, warmup):
    """valid[site, i]: all inputs of days [first + i, first + i + length) are finite and at least one target
    of the days moved `shift` later, after the first `warmup`, is finite."""
    zero = np.zeros((dynamic.shape[0], 1), np.int64)
    bad_days = np.concatenate([zero, np.cumsum(np.isnan(dynamic).any(axis=2), axis=1)], axis=1)
    finite_days = np.concatenate([zero, np.cumsum(~np.isnan(target), axis=1)], axis=1)
    start = first + np.arange(starts)
    inputs_finite = bad_days[:, start + length] == bad_days[:, start]
    targets = finite_days[:, start + shift + length] - finite_days[:, start + shift + warmup]
    return inputs_finite & (targets > 0)


def gather(dynamic, static, target, sites, starts, length, shift):
    """Windows into a batch: x [windows, length, dynamic + static], y [windows, length]."""
    days = starts[:, None] + np.arange(length)[None, :]
    inputs = dynamic[sites[:, None], days]
    attributes = np.broadcast_to(static[sites][:, None, :], (len(sites), length, static.shape[1]))
    return np.concatenate([inputs, attributes], axis=2), target[sites[:, None], days + shift]
