"""The hydrological metrics (neuralhydrology's definitions) against series small enough to compute by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlkube.trainer.lstm import scores

pytestmark = pytest.mark.unit

# obs mean 2.5, sum of squares about it 5; sim mean 2.75, sum of squares about it 8.75; co-moment 6.5
OBS = np.array([1.0, 2.0, 3.0, 4.0])
SIM = np.array([1.0, 2.0, 3.0, 5.0])


def test_moment_metrics_equal_the_hand_computed_values():
    r = 6.5 / math.sqrt(5 * 8.75)
    alpha, beta = math.sqrt(8.75 / 5), 2.75 / 2.5
    expected = {
        "nse": 1 - 1 / 5,
        "mse": 1 / 4,
        "rmse": 1 / 2,
        "bias": 1 / 4,
        "pearson_r": r,
        "alpha_nse": alpha,
        "beta_kge": beta,
        "beta_nse": 0.25 / math.sqrt(5 / 4),
        "kge": 1 - math.sqrt((r - 1) ** 2 + (alpha - 1) ** 2 + (beta - 1) ** 2),
    }
    for name, value in expected.items():
        assert scores.METRICS[name](SIM, OBS) == pytest.approx(value, rel=1e-12), name


def test_a_perfect_simulation_scores_perfectly_on_every_metric():
    obs = 1 + np.abs(np.sin(np.arange(400) / 9.0)) * 10
    perfect = {"nse": 1, "kge": 1, "pearson_r": 1, "alpha_nse": 1, "beta_kge": 1, "beta_nse": 0, "rmse": 0}
    perfect |= {"mse": 0, "bias": 0, "fhv": 0, "flv": 0, "fms": 0, "peak_timing": 0, "missed_peaks": 0}
    assert set(perfect) == set(scores.METRICS)
    for name, value in perfect.items():
        assert scores.METRICS[name](obs.copy(), obs) == pytest.approx(value, abs=1e-9), name


def test_flow_duration_curve_biases_equal_the_hand_computed_values():
    obs = np.random.default_rng(0).permutation(np.arange(1.0, 51.0))  # the order does not matter to an FDC
    # FHV: the top round(0.02 × 50) = 1 flow: 55 against 50
    assert scores.fhv(obs * 1.1, obs) == pytest.approx(10.0, rel=1e-12)
    # FLV over the lowest 15 flows (1..15), in logs: sim = obs² doubles every log distance from the minimum
    q = math.log(math.factorial(15))
    assert scores.flv(obs**2, obs) == pytest.approx(-(2 * q - q) / (q + 1e-6) * 100, rel=1e-12)
    # FMS between exceedance 0.2 and 0.7: FDC[10] = 40 and FDC[35] = 15; obs² doubles the log slope
    slope = math.log(40) - math.log(15)
    assert scores.fms(obs**2, obs) == pytest.approx((2 * slope - slope) / (slope + 1e-6) * 100, rel=1e-12)
    # neuralhydrology's guard: simulated zeros and negatives count as 1e-6 before the logarithm
    negative = np.where(obs < 10, -1.0, obs)
    assert np.isfinite(scores.flv(negative, obs)) and np.isfinite(scores.fms(negative, obs))


def spikes(days: int, at: dict[int, float]) -> np.ndarray:
    series = np.zeros(days)
    for day, height in at.items():
        series[day] = height
    return series


def test_peak_timing_is_the_mean_offset_of_the_simulated_peaks_and_skips_peaks_at_the_ends():
    obs = spikes(400, {100: 10.0, 250: 10.0, 398: 12.0})  # the last is within 3 days of the end: skipped
    sim = spikes(400, {102: 9.0, 250: 8.0, 395: 5.0})  # 2 days late, on time
    assert scores.peak_timing(sim, obs) == pytest.approx(1.0)
    assert math.isnan(scores.peak_timing(sim, np.ones(400)))  # no observed peak


def test_missed_peaks_is_the_fraction_of_observed_peaks_without_a_simulated_one_a_day_away():
    obs = spikes(300, {40: 5.0, 100: 5.0, 160: 5.0, 220: 5.0})
    sim = spikes(300, {41: 4.0, 103: 4.0, 160: 4.0})  # hit, 3 days off (missed), hit, nothing (missed)
    assert scores.missed_peaks(sim, obs) == pytest.approx(2 / 4)
    assert scores.missed_peaks(sim, np.zeros(300)) == 0.0


def test_site_scores_leave_out_missing_days_and_summaries_take_medians_over_sites():
    obs = np.vstack([np.r_[OBS, np.nan], np.r_[OBS, 9.0]])
    sim = np.vstack([np.r_[SIM, 7.0], np.r_[SIM, np.nan]])
    per_site = scores.site_scores(sim, obs, ["a", "b"])
    assert per_site["a"] == per_site["b"]  # the fifth day is missing from one series at each site
    assert per_site["a"]["nse"] == pytest.approx(0.8)
    summary = scores.summarize(per_site)
    assert set(summary["median"]) == set(scores.METRICS)
    assert summary["median"]["nse"] == pytest.approx(0.8)
