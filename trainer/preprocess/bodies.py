"""Kernel bodies shared by the CPU and the CUDA twins: each handles one item (a series, a site, a window day).

They are written in the subset of Python that both `numba.njit` and `numba.cuda.jit(device=True)` compile
(scalar loops with explicit indices, no allocation, no calls to other Python functions). `cpu.py` runs them
under `prange`, `gpu.py` as one CUDA thread per item, so the twins cannot drift apart. Arrays are
`[sites, days, variables]`. Arithmetic is float64 through explicit `np.float64(...)`: Numba's float() keeps
float32, and the CUDA simulator's NumPy scalars would otherwise stay float32.

Numba's on-disk cache keys on the file of each kernel (cpu.py, gpu.py), not on this one: after editing this
file, delete trainer/preprocess/__pycache__/*.nbi and *.nbc.
"""

from __future__ import annotations

import math

import numpy as np

LOG_OFFSET = 0.1  # mm/day added before the log transform of the target, so that zero flow stays finite


def site_moments(values, lo, hi, count, mean, m2, site, var):
    """NaN-aware count, mean and sum of squared deviations of values[site, lo:hi, var] (float64, two passes).

    A series without a finite value gets mean NaN.
    """
    n = 0
    total = 0.0
    for day in range(lo, hi):
        x = np.float64(values[site, day, var])
        if not math.isnan(x):
            n += 1
            total += x
    center = total / n if n > 0 else math.nan
    squares = 0.0
    for day in range(lo, hi):
        x = np.float64(values[site, day, var])
        if not math.isnan(x):
            squares += (x - center) * (x - center)
    count[site, var] = n
    mean[site, var] = center
    m2[site, var] = squares


def scale(values, mean, std, log, inverse, out, site, day):
    """Standardise values[site, day, :] into out: ((log(x + LOG_OFFSET) if log else x) - mean) / std.

    With `inverse` it de-standardises: x * std + mean, then exp(.) - LOG_OFFSET if log. NaN stays NaN.
    """
    for var in range(values.shape[2]):
        x = np.float64(values[site, day, var])
        if inverse:
            x = x * std[site, var] + mean[site, var]
            if log:
                x = math.exp(x) - LOG_OFFSET
        else:
            if log:
                x = math.log(x + LOG_OFFSET) if x + LOG_OFFSET > 0 else math.nan
            x = (x - mean[site, var]) / std[site, var]
        out[site, day, var] = x


def fill_gaps(values, max_gap, out, site, var):
    """Copy values[site, :, var] into out, filling each run of at most `max_gap` NaN days that has a finite
    day on both sides by linear interpolation. Longer runs, and NaN at either end of the series, stay NaN."""
    last = -1  # the last finite day seen
    for day in range(values.shape[1]):
        x = np.float64(values[site, day, var])
        out[site, day, var] = x
        if not math.isnan(x):
            gap = day - last - 1
            if last >= 0 and 0 < gap <= max_gap:
                before = np.float64(values[site, last, var])
                slope = (x - before) / (gap + 1)
                for k in range(1, gap + 1):
                    out[site, last + k, var] = slope * k + before
            last = day


def window_validity(dynamic, target, first, length, shift, warmup, bad_days, finite_days, valid, site):
    """Mark the windows of one site that a batch may hold: valid[site, i] for the window whose inputs are the
    days [first + i, first + i + length) and whose targets are those days moved `shift` days later.

    A window is valid when every input day is finite and at least one target after the first `warmup` days is
    finite. bad_days and finite_days ([sites, days + 1]) are scratch: running counts of input days holding a
    NaN and of finite target days.
    """
    bad_days[site, 0] = 0
    finite_days[site, 0] = 0
    for day in range(dynamic.shape[1]):
        bad = 0
        for var in range(dynamic.shape[2]):
            if math.isnan(dynamic[site, day, var]):
                bad = 1
        bad_days[site, day + 1] = bad_days[site, day] + bad
        finite_days[site, day + 1] = finite_days[site, day] + (0 if math.isnan(target[site, day]) else 1)
    for i in range(valid.shape[1]):
        start = first + i
        inputs_finite = bad_days[site, start + length] == bad_days[site, start]
        targets = finite_days[site, start + shift + length] - finite_days[site, start + shift + warmup]
        valid[site, i] = inputs_finite and targets > 0


def gather_day(dynamic, static, target, sites, starts, shift, x, y, window, step):
    """Copy day `step` of one window into the batch: x[window, step] = dynamic inputs then static attributes
    of the window's site, y[window, step] = its target `shift` days later."""
    site = sites[window]
    day = starts[window] + step
    n_dynamic = dynamic.shape[2]
    for var in range(n_dynamic):
        x[window, step, var] = dynamic[site, day, var]
    for var in range(static.shape[1]):
        x[window, step, n_dynamic + var] = static[site, var]
    y[window, step] = target[site, day + shift]
