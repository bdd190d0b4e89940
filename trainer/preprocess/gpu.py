"""The CUDA twins: one `numba.cuda` thread per item of `bodies.py`, compiled with `cache=True`.

Same names and signatures as `cpu.py`. Inputs may be NumPy or device arrays. Results come back as NumPy
arrays, except `gather`, whose batch stays on the GPU (`torch.as_tensor(x, device="cuda")` takes it without a
copy).
"""

from __future__ import annotations

import numpy as np
from numba import cuda

from mlkube.trainer.preprocess import bodies

THREADS_PER_BLOCK = 128

_site_moments = cuda.jit(device=True)(bodies.site_moments)
_scale = cuda.jit(device=True)(bodies.scale)
_fill_gaps = cuda.jit(device=True)(bodies.fill_gaps)
_window_validity = cuda.jit(device=True)(bodies.window_validity)
_gather_day = cuda.jit(device=True)(bodies.gather_day)


@cuda.jit(cache=True)
def _site_moments_kernel(values, lo, hi, count, mean, m2):
    item: int = cuda.grid(1)  # type: ignore[call-arg]  # numba's stubs count grid's typing context as an argument
    variables = values.shape[2]
    if item < values.shape[0] * variables:
        _site_moments(values, lo, hi, count, mean, m2, item // variables, item % variables)


@cuda.jit(cache=True)
def _scale_kernel(values, mean, std, log, inverse, out):
    item: int = cuda.grid(1)  # type: ignore[call-arg]  # numba's stubs count grid's typing context as an argument
    days = values.shape[1]
    if item < values.shape[0] * days:
        _scale(values, mean, std, log, inverse, out, item // days, item % days)


@cuda.jit(cache=True)
def _fill_gaps_kernel(values, max_gap, out):
    item: int = cuda.grid(1)  # type: ignore[call-arg]  # numba's stubs count grid's typing context as an argument
    variables = values.shape[2]
    if item < values.shape[0] * variables:
        _fill_gaps(values, max_gap, out, item // variables, item % variables)


@cuda.jit(cache=True)
def _window_validity_kernel(dynamic, target, first, length, shift, warmup, bad_days, finite_days, valid):
    site: int = cuda.grid(1)  # type: ignore[call-arg]  # numba's stubs count grid's typing context as an argument
    if site < dynamic.shape[0]:
        _window_validity(dynamic, target, first, length, shift, warmup, bad_days, finite_days, valid, site)


@cuda.jit(cache=True)
def _gather_kernel(dynamic, static, target, sites, starts, shift, x, y):
    item: int = cuda.grid(1)  # type: ignore[call-arg]  # numba's stubs count grid's typing context as an argument
    length = x.shape[1]
    if item < x.shape[0] * length:
        _gather_day(dynamic, static, target, sites, starts, shift, x, y, item // length, item % length)


def _launch(kernel, items: int, *args) -> None:
    blocks = max(1, -(-items // THREADS_PER_BLOCK))
    kernel[blocks, THREADS_PER_BLOCK](*args)


def _device(array):
    return cuda.to_device(np.ascontiguousarray(array)) if isinstance(array, np.ndarray) else array


def site_moments(values, lo, hi):
    """Per (site, variable) over days [lo, hi): finite count, mean and sum of squared deviations (float64)."""
    sites, _, variables = values.shape
    count = cuda.device_array((sites, variables), np.int64)
    mean = cuda.device_array((sites, variables), np.float64)
    m2 = cuda.device_array((sites, variables), np.float64)
    _launch(_site_moments_kernel, sites * variables, _device(values), lo, hi, count, mean, m2)
    return count.copy_to_host(), mean.copy_to_host(), m2.copy_to_host()


def scale(values, mean, std, log, inverse):
    """Standardise (or with `inverse` de-standardise) values with per (site, variable) mean and std."""
    out = cuda.device_array(values.shape, values.dtype)
    _launch(
        _scale_kernel,
        values.shape[0] * values.shape[1],
        _device(values),
        _device(mean),
        _device(std),
        log,
        inverse,
        out,
    )
    return out.copy_to_host()


def fill_gaps(values, max_gap):
    """A copy of values with NaN runs of at most `max_gap` days linearly interpolated."""
    out = cuda.device_array(values.shape, values.dtype)
    _launch(_fill_gaps_kernel, values.shape[0] * values.shape[2], _device(values), max_gap, out)
    return out.copy_to_host()


def window_validity(dynamic, target, first, starts, length, shift, warmup):
    """valid[site, i]: may the window with inputs [first + i, first + i + length) be drawn (see bodies.py)."""
    sites, days, _ = dynamic.shape
    bad_days = cuda.device_array((sites, days + 1), np.int32)
    finite_days = cuda.device_array((sites, days + 1), np.int32)
    valid = cuda.device_array((sites, starts), np.bool_)
    _launch(
        _window_validity_kernel,
        sites,
        _device(dynamic),
        _device(target),
        first,
        length,
        shift,
        warmup,
        bad_days,
        finite_days,
        valid,
    )
    return valid.copy_to_host()


def gather(dynamic, static, target, sites, starts, length, shift):
    """Windows into one batch on the GPU: x [windows, length, dynamic + static], y [windows, length]."""
    windows = sites.shape[0]
    x = cuda.device_array((windows, length, dynamic.shape[2] + static.shape[1]), dynamic.dtype)
    y = cuda.device_array((windows, length), target.dtype)
    _launch(
        _gather_kernel,
        windows * length,
        _device(dynamic),
        _device(static),
        _device(target),
        _device(sites),
        _device(starts),
        shift,
        x,
        y,
    )
    return x, y
