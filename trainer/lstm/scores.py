"""Skill scores of simulated against observed daily series, per site, and their summaries over sites.

Days where either series is NaN are left out. A site with fewer than two such days, or (NSE, KGE) a constant
observed series, scores NaN; summaries skip NaN sites and are None when every site is NaN.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np


def nse(sim: np.ndarray, obs: np.ndarray) -> float:
    """Nash-Sutcliffe efficiency: 1 - sum((sim - obs)^2) / sum((obs - mean(obs))^2); 1 is perfect, 0 is the
    mean."""
    spread = np.sum((obs - obs.mean()) ** 2)
    return float(1 - np.sum((sim - obs) ** 2) / spread) if spread > 0 else math.nan


def kge(sim: np.ndarray, obs: np.ndarray) -> float:
    """Kling-Gupta efficiency (Gupta et al. 2009): 1 - sqrt((r - 1)^2 + (alpha - 1)^2 + (beta - 1)^2) with r
    the correlation, alpha the ratio of standard deviations and beta the ratio of means (sim / obs)."""
    if obs.std() == 0 or sim.std() == 0 or obs.mean() == 0:
        return math.nan
    r = np.corrcoef(sim, obs)[0, 1]
    alpha, beta = sim.std() / obs.std(), sim.mean() / obs.mean()
    return float(1 - np.sqrt((r - 1) ** 2 + (alpha - 1) ** 2 + (beta - 1) ** 2))


def rmse(sim: np.ndarray, obs: np.ndarray) -> float:
    """Root mean square error, in the target's units."""
    return float(np.sqrt(np.mean((sim - obs) ** 2)))


def bias(sim: np.ndarray, obs: np.ndarray) -> float:
    """Mean error sim - obs, in the target's units (positive: the model overestimates)."""
    return float(np.mean(sim - obs))


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "nse": nse,
    "kge": kge,
    "rmse": rmse,
    "bias": bias,
}


def site_scores(
    sim: np.ndarray, obs: np.ndarray, sites: list[str] | tuple[str, ...]
) -> dict[str, dict[str, float]]:
    """{site: {metric: score}} for series [sites, days]."""
    out = {}
    for site, s, o in zip(sites, sim.astype(np.float64), obs.astype(np.float64), strict=False):
        seen = np.isfinite(s) & np.isfinite(o)
        out[site] = {
            name: f(s[seen], o[seen]) if seen.sum() >= 2 else math.nan for name, f in METRICS.items()
        }
    return out


def summarize(scores: dict[str, dict[str, float]]) -> dict[str, dict[str, float | None]]:
    """{"median": {metric: value}, "mean": {metric: value}} over the sites of `scores`, NaN sites left out."""
    out: dict[str, dict[str, float | None]] = {"median": {}, "mean": {}}
    for name in METRICS:
        values = np.array([site[name] for site in scores.values()], dtype=np.float64)
        values = values[np.isfinite(values)]
        out["median"][name] = float(np.median(values)) if values.size else None
        out["mean"][name] = float(np.mean(values)) if values.size else None
    return out


def json_safe(scores: dict[str, dict[str, float]]) -> dict[str, dict[str, float | None]]:
    """The scores with NaN as None (JSON has no NaN)."""
    return {site: {k: (None if math.isnan(v) else v) for k, v in row.items()} for site, row in scores.items()}
