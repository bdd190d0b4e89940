"""Skill scores of simulated against observed daily series, per site, and their summaries over sites.

The metric set and definitions are neuralhydrology's (`neuralhydrology.evaluation.metrics`): NSE, MSE, RMSE,
KGE with its three parts (Pearson r, alpha = the ratio of standard deviations, which is also Alpha-NSE, and
beta = the ratio of means), Beta-NSE, the flow-duration-curve biases FHV, FLV and FMS (Yilmaz et al. 2008),
Peak-Timing and Missed-Peaks, plus the mean error (`bias`). Standard deviations are population ones (ddof 0).

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


def mse(sim: np.ndarray, obs: np.ndarray) -> float:
    """Mean squared error, in the target's units squared."""
    return float(np.mean((sim - obs) ** 2))


def pearson_r(sim: np.ndarray, obs: np.ndarray) -> float:
    """Pearson correlation of sim and obs (KGE's r); NaN for a constant series."""
    if obs.std() == 0 or sim.std() == 0:
        return math.nan
    return float(np.corrcoef(sim, obs)[0, 1])


def alpha_nse(sim: np.ndarray, obs: np.ndarray) -> float:
    """Alpha-NSE (Gupta et al. 2009): std(sim) / std(obs), KGE's alpha; 1 is the observed variability."""
    return float(sim.std() / obs.std()) if obs.std() > 0 else math.nan


def beta_nse(sim: np.ndarray, obs: np.ndarray) -> float:
    """Beta-NSE (Gupta et al. 2009): (mean(sim) - mean(obs)) / std(obs); 0 is no bias."""
    return float((sim.mean() - obs.mean()) / obs.std()) if obs.std() > 0 else math.nan


def beta_kge(sim: np.ndarray, obs: np.ndarray) -> float:
    """KGE's beta: mean(sim) / mean(obs); 1 is no bias."""
    return float(sim.mean() / obs.mean()) if obs.mean() != 0 else math.nan


def _flow_duration(values: np.ndarray) -> np.ndarray:
    """The flow duration curve: the values sorted from the highest down."""
    return np.sort(values)[::-1].astype(np.float64)


def fhv(sim: np.ndarray, obs: np.ndarray, h: float = 0.02) -> float:
    """Peak-flow bias of the flow duration curve, in percent: the top `h` of the flows, sum(sim - obs) /
    sum(obs) × 100."""
    top = int(np.round(h * len(obs)))
    o, s = _flow_duration(obs)[:top], _flow_duration(sim)[:top]
    total = np.sum(o)
    return float(np.sum(s - o) / total * 100) if top and total != 0 else math.nan


def _positive(fdc: np.ndarray, simulated: bool) -> np.ndarray:
    """neuralhydrology's guard before the logarithm: 1e-6 for zero flows, and for negative simulations."""
    fdc = fdc.copy()
    fdc[(fdc <= 0) if simulated else (fdc == 0)] = 1e-6
    return fdc


def flv(sim: np.ndarray, obs: np.ndarray, low: float = 0.3) -> float:
    """Low-flow bias of the flow duration curve, in percent: over the lowest `low` of the flows, in logs,
    -(sum(log sim - min log sim) - sum(log obs - min log obs)) / sum(log obs - min log obs) × 100."""
    count = int(np.round(low * len(obs)))
    if not count:
        return math.nan
    o = np.log(_positive(_flow_duration(obs), False)[-count:])
    s = np.log(_positive(_flow_duration(sim), True)[-count:])
    simulated, observed = np.sum(s - s.min()), np.sum(o - o.min())
    return float(-1 * (simulated - observed) / (observed + 1e-6) * 100)


def fms(sim: np.ndarray, obs: np.ndarray, lower: float = 0.2, upper: float = 0.7) -> float:
    """Bias of the flow duration curve's mid-segment slope, in percent: between the `lower` and `upper`
    exceedance fractions, in logs."""
    o, s = _positive(_flow_duration(obs), False), _positive(_flow_duration(sim), True)
    lo, hi = int(np.round(lower * len(o))), int(np.round(upper * len(o)))
    observed = np.log(o[lo]) - np.log(o[hi])
    simulated = np.log(s[lo]) - np.log(s[hi])
    return float((simulated - observed) / (observed + 1e-6) * 100)


def peak_timing(sim: np.ndarray, obs: np.ndarray, window: int = 3) -> float:
    """Mean absolute offset in days between observed peaks and the simulated peak near each. Observed peaks:
    `scipy.signal.find_peaks` with a prominence of at least std(obs), 100 days apart; the simulated peak is
    the day itself where sim peaks there, else the highest simulated day within `window` days. Peaks closer
    than `window` to either end are skipped; NaN without peaks."""
    from scipy import signal

    peaks, _ = signal.find_peaks(obs, distance=100, prominence=np.std(obs))
    offsets = []
    for day in peaks:
        if day - window < 0 or day + window >= len(obs):
            continue
        if sim[day] > sim[day - 1] and sim[day] > sim[day + 1]:
            offsets.append(0)
        else:
            offsets.append(abs(int(np.argmax(sim[day - window : day + window + 1])) - window))
    return float(np.mean(offsets)) if offsets else math.nan


def missed_peaks(sim: np.ndarray, obs: np.ndarray, window: int = 1, percentile: float = 80) -> float:
    """Fraction of observed peaks with no simulated peak within `window` days. Peaks of both series:
    `find_peaks` above the series' own `percentile`, 30 days apart; peaks within `window` of either end are
    not judged but still count in the denominator. 0 without observed peaks."""
    from scipy import signal

    observed, _ = signal.find_peaks(obs, distance=30, height=np.percentile(obs, percentile))
    simulated, _ = signal.find_peaks(sim, distance=30, height=np.percentile(sim, percentile))
    if not len(observed):
        return 0.0
    missed = sum(
        1
        for day in observed
        if window <= day < len(obs) - window and not np.any(np.abs(simulated - day) <= window)
    )
    return missed / len(observed)


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "nse": nse,
    "kge": kge,
    "pearson_r": pearson_r,
    "alpha_nse": alpha_nse,
    "beta_kge": beta_kge,
    "beta_nse": beta_nse,
    "rmse": rmse,
    "mse": mse,
    "bias": bias,
    "fhv": fhv,
    "flv": flv,
    "fms": fms,
    "peak_timing": peak_timing,
    "missed_peaks": missed_peaks,
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
