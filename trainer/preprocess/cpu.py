"""The CPU twins: `@njit(parallel=True, cache=True)` loops over the items of `bodies.py`, one per iteration.

Each function takes and returns NumPy arrays; its CUDA twin in `gpu.py` has the same name and signature.
error_model="numpy": a division by zero gives inf or NaN, as on the GPU, instead of raising.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from mlkube.trainer.preprocess import bodies

kernel = njit(parallel=True, cache=True, error_model="numpy")
item = njit(cache=True, error_model="numpy", inline="always")  # no call per item in the hot loops
_site_moments = item(bodies.site_moments)
_scale = item(bodies.scale)
_fill_gaps = item(bodies.fill_gaps)
_window_validity = item(bodies.window_validity)
_gather_day = item(bodies.gather_day)


@kernel
def site_moments(values, lo, hi):
    """Per (site, variable) over days [lo, hi): finite count, mean and sum of squared deviations (float64)."""
    sites, _, variables = values.shape
    count = np.zeros((sites, variables), np.int64)
    mean = np.empty((sites, variables), np.float64)
    m2 = np.empty((sites, variables), np.float64)
    for item in prange(sites * variables):
        _site_moments(values, lo, hi, count, mean, m2, item // variables, item % variables)
    return count, mean, m2


@kernel
def scale(values, mean, std, log, inverse):
    """Standardise (or with `inverse` de-standardise) values with per (site, variable) mean and std."""
    sites, days, _ = values.shape
    out = np.empty_like(values)
    for item in prange(sites * days):
        _scale(values, mean, std, log, inverse, out, item // days, item % days)
    return out


@kernel
def fill_gaps(values, max_gap):
    """A copy of values with NaN runs of at most `max_gap` days linearly interpolated."""
    sites, _, variables = values.shape
    out = np.empty_like(values)
    for item in prange(sites * variables):
        _fill_gaps(values, max_gap, out, item // variables, item % variables)
    return out


@kernel
def window_validity(dynamic, target, first, starts, length, shift, warmup):
    """valid[site, i]: may the window with inputs [first + i, first + i + length) be drawn (see bodies.py)."""
    sites, days, _ = dynamic.shape
    bad_days = np.empty((sites, days + 1), np.int32)
    finite_days = np.empty((sites, days + 1), np.int32)
    valid = np.empty((sites, starts), np.bool_)
    for site in prange(sites):
        _window_validity(dynamic, target, first, length, shift, warmup, bad_days, finite_days, valid, site)
    return valid


@kernel
def gather(dynamic, static, target, sites, starts, length, shift):
    """Windows into a contiguous batch: x [windows, length, dynamic + static], y [windows, length]."""
    windows = sites.shape[0]
    x = np.empty((windows, length, dynamic.shape[2] + static.shape[1]), dynamic.dtype)
    y = np.empty((windows, length), target.dtype)
    for window in prange(windows):
        for step in range(length):
            _gather_day(dynamic, static, target, sites, starts, shift, x, y, window, step)
    return x, y
