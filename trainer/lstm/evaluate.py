"""Run a trained network over a whole period, one pass per site, and score it against the observations.

Each site's window starts `sequence_length - 1` days before the period (its warm-up), so every scored day has
at least the input history it had in training. A day whose last `sequence_length` input days hold a missing
value is not scored (training never draws such a window); the missing inputs are set to the training mean so
that they do not spoil the rest of the series.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mlkube.trainer.lstm.scores import site_scores, summarize
from mlkube.trainer.preprocess import Statistics, destandardize_target, period_batch
from mlkube.trainer.series import TimeSeriesData

WINDOWS_PER_PASS = 128  # sites run through the network at once: 0.2 GB at 5 years (256: 0.4 GB), as fast


def simulate(
    net: Any,
    standardized: TimeSeriesData,
    stats: Statistics,
    period: str,
    sequence_length: int,
    horizon: int,
    device: Any = "cpu",
) -> np.ndarray:
    """The network's target [sites, period days] in the target's units; NaN where not scored."""
    import torch

    batch = period_batch(standardized, period, sequence_length, horizon)
    x = np.ascontiguousarray(batch.x)
    unscored = _incomplete_inputs(x, sequence_length)[:, batch.history :]
    x[np.isnan(x)] = 0.0
    was_training = net.training
    net.eval()
    days = x.shape[1] - batch.history  # the period's: the head runs on those only
    with torch.no_grad():
        out = np.concatenate(
            [
                net(torch.from_numpy(x[i : i + WINDOWS_PER_PASS]).to(device), days).float().cpu().numpy()
                for i in range(0, len(x), WINDOWS_PER_PASS)
            ]
        )
    net.train(was_training)
    sim = destandardize_target(out, stats)
    sim[unscored] = np.nan
    return sim


def _incomplete_inputs(x: np.ndarray, sequence_length: int) -> np.ndarray:
    """[windows, days]: does one of the last `sequence_length` input days (this one included) hold a NaN?"""
    bad = np.isnan(x).any(axis=2).cumsum(axis=1)
    before = np.zeros_like(bad)
    before[:, sequence_length:] = bad[:, :-sequence_length]
    return bad - before > 0


def observed(data: TimeSeriesData, period: str, horizon: int = 1) -> np.ndarray:
    """The observed target [sites, period days] that `simulate` predicts, in the target's units."""
    lo, hi = data.periods[period]
    return data.target[:, max(lo, horizon - 1) : hi]


def score(sim: np.ndarray, data: TimeSeriesData, period: str, horizon: int = 1) -> dict[str, Any]:
    """{"sites": {site: {metric: score}}, "median": {...}, "mean": {...}} of `sim` on `period`."""
    scores = site_scores(sim, observed(data, period, horizon), data.sites)
    return {"sites": scores, **summarize(scores)}
