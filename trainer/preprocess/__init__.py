"""Time-series preprocessing on Numba kernels: statistics, standardisation, gap filling and batch windows.

Each kernel has a CPU twin (`cpu.py`, `@njit(parallel=True, cache=True)`) and a CUDA twin (`gpu.py`) built
from the same per-item bodies (`bodies.py`), and a plain NumPy reference (`reference.py`). `preprocess.device`
picks the twin: auto takes CUDA where Numba sees a GPU. Numba is imported on first use, never when this
package is imported.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from mlkube.trainer.errors import MlkubeError
from mlkube.trainer.preprocess.device import kernels, resolve_device
from mlkube.trainer.preprocess.sampler import Batch, BatchSampler, gather_windows, period_batch

if TYPE_CHECKING:
    from mlkube.trainer.series.contract import TimeSeriesData
    from mlkube.trainer.spec import PreprocessSpec

__all__ = [
    "Batch",
    "BatchSampler",
    "Statistics",
    "destandardize_target",
    "fill_gaps",
    "fill_series",
    "fit_statistics",
    "gather_windows",
    "kernels",
    "period_batch",
    "resolve_device",
    "standardize",
]


def fill_gaps(values: np.ndarray, max_gap: int, device: str = "cpu") -> np.ndarray:
    """A copy of `values` [sites, days, variables] with NaN runs of up to `max_gap` days filled linearly.

    Runs longer than that, and NaN at either end of a series, stay NaN (the loss masks them).
    """
    return kernels(device).fill_gaps(np.ascontiguousarray(values), int(max_gap))


def fill_series(data: TimeSeriesData, max_gap: int, device: str = "cpu") -> TimeSeriesData:
    """The same series with gaps of at most `max_gap` days filled in the dynamic inputs and the target."""
    # one kernel call over inputs and target together: one launch on CUDA
    values = fill_gaps(np.concatenate([data.dynamic, data.target[:, :, None]], axis=2), max_gap, device)
    return dataclasses.replace(
        data, dynamic=np.ascontiguousarray(values[:, :, :-1]), target=np.ascontiguousarray(values[:, :, -1])
    )


# ------------------------------------------------------------------------------------------------ statistics
@dataclass(frozen=True, eq=False)
class Statistics:
    """Standardisation statistics of the training period, in the variables' units (float64).

    Rows are sites; under `global` normalization every row holds the same values. The target statistics are
    those of log(target + 0.1) when `log_target`.
    """

    normalization: str  # global | per_site
    log_target: bool
    dynamic_mean: np.ndarray  # [sites, n_dynamic]
    dynamic_std: np.ndarray  # [sites, n_dynamic]; 1 where a variable is constant
    static_mean: np.ndarray  # [n_static], over sites
    static_std: np.ndarray  # [n_static]
    target_mean: np.ndarray  # [sites]
    target_std: np.ndarray  # [sites]
    target_site_std: np.ndarray  # [sites] std of each site's standardised target: the NSE loss weights

    def to_json(self) -> dict[str, Any]:
        """The `preprocessing` statistics of model.json: lists per variable (per site under per_site)."""
        site = 0 if self.normalization == "global" else slice(None)
        return {
            "normalization": self.normalization,
            "log_target": self.log_target,
            "dynamic_mean": self.dynamic_mean[site].tolist(),
            "dynamic_std": self.dynamic_std[site].tolist(),
            "static_mean": self.static_mean.tolist(),
            "static_std": self.static_std.tolist(),
            "target_mean": self.target_mean[site].tolist(),
            "target_std": self.target_std[site].tolist(),
        }


def fit_statistics(data: TimeSeriesData, preprocess: PreprocessSpec) -> Statistics:
    """Means and standard deviations of the training period (NaN-aware), per site or over all sites."""
    k = kernels(preprocess.device)
    lo, hi = data.periods["train"]
    per_site = preprocess.normalization == "per_site"
    dynamic_mean, dynamic_std = _mean_std(
        k.site_moments(data.dynamic, lo, hi), per_site, data, data.dynamic_inputs
    )
    target = _target_values(data.target, preprocess.log_target, k)
    target_moments = k.site_moments(target, lo, hi)
    target_mean, target_std = _mean_std(target_moments, per_site, data, [data.target_name])
    static_mean, static_std = _mean_std(
        k.site_moments(data.static[None], 0, len(data.sites)), False, data, data.static_inputs
    )
    count, _, m2 = target_moments
    return Statistics(
        normalization=preprocess.normalization,
        log_target=preprocess.log_target,
        dynamic_mean=dynamic_mean,
        dynamic_std=dynamic_std,
        static_mean=static_mean[0],
        static_std=static_std[0],
        target_mean=target_mean[:, 0],
        target_std=target_std[:, 0],
        target_site_std=np.sqrt(m2[:, 0] / count[:, 0]) / target_std[:, 0],
    )


def _target_values(target: np.ndarray, log: bool, k: ModuleType) -> np.ndarray:
    """The target as [sites, days, 1], log-transformed when `log`."""
    values = np.ascontiguousarray(target[:, :, None])
    if not log:
        return values
    identity = np.zeros((target.shape[0], 1)), np.ones((target.shape[0], 1))
    return k.scale(values, *identity, True, False)


def _mean_std(
    moments: tuple[np.ndarray, ...], per_site: bool, data: TimeSeriesData, names: tuple[str, ...] | list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std [sites, variables] from per-site moments: per site, or pooled (the same in each row)."""
    count, mean, m2 = (
        moments if per_site else (np.repeat(a, len(moments[0]), axis=0) for a in _pooled(*moments))
    )
    _check_finite(mean, data, names)
    with np.errstate(invalid="ignore", divide="ignore"):
        std = np.sqrt(m2 / count)
    return mean, np.where(std > 0, std, 1.0)  # a constant variable is only centred


def _pooled(count: np.ndarray, mean: np.ndarray, m2: np.ndarray) -> tuple[np.ndarray, ...]:
    """Moments [1, variables] of all sites together, combined exactly from the per-site ones (Chan et al.)."""
    seen = count > 0
    n = count.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        center = np.where(seen, mean * count, 0.0).sum(axis=0) / n
    spread = np.where(seen, m2 + count * (mean - center) ** 2, 0.0).sum(axis=0)
    return n[None], center[None], spread[None]


def _check_finite(mean: np.ndarray, data: TimeSeriesData, names: tuple[str, ...] | list[str]) -> None:
    missing = np.argwhere(np.isnan(mean))
    if missing.size:
        site, var = missing[0]
        raise MlkubeError(
            f"{names[var]} has no finite value in the training period at site {data.sites[site]} "
            f"(and {len(missing) - 1} more site/variable pairs), so it cannot be standardised",
            "drop it from lstm.data.dynamic_inputs or the site from lstm.data.sites, "
            "or use preprocess.normalization: global",
        )


# ------------------------------------------------------------------------------------------- standardisation
def standardize(data: TimeSeriesData, stats: Statistics, device: str = "cpu") -> TimeSeriesData:
    """The same data with dynamic inputs, static attributes and target standardised (float32, contiguous)."""
    k = kernels(device)
    dynamic = k.scale(data.dynamic, stats.dynamic_mean, stats.dynamic_std, False, False)
    static = k.scale(
        np.ascontiguousarray(data.static[None]), stats.static_mean[None], stats.static_std[None], False, False
    )[0]
    target = k.scale(
        np.ascontiguousarray(data.target[:, :, None]),
        stats.target_mean[:, None],
        stats.target_std[:, None],
        stats.log_target,
        False,
    )[:, :, 0]
    return dataclasses.replace(
        data, dynamic=dynamic, static=np.ascontiguousarray(static), target=np.ascontiguousarray(target)
    )


def destandardize_target(
    values: np.ndarray, stats: Statistics, sites: np.ndarray | None = None, device: str = "cpu"
) -> np.ndarray:
    """Standardised predictions [rows, days] back to the target's units (e.g. mm/day).

    Row i belongs to site `sites[i]` (indices into the data's sites; default: row i is site i).
    """
    sites = np.arange(len(values)) if sites is None else np.asarray(sites)
    out = kernels(device).scale(
        np.ascontiguousarray(values[:, :, None], dtype=np.float32),
        stats.target_mean[sites, None],
        stats.target_std[sites, None],
        stats.log_target,
        True,
    )
    return out[:, :, 0]
